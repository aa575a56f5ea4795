/**
 * The local run behind `npm start`: reads local.settings.json like `func
 * start` does, starts the sandbox when no tenant is configured, and runs the
 * scheduled polling into the queue until Ctrl-C.
 */
import { readFileSync, existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { loadConfig } from '../shared/config/index.js';
import { isPostroomError } from '../shared/errors.js';
import { consoleLogger } from '../shared/logger.js';
import { createRuntime } from '../shared/runtime.js';
import { readStatus } from '../shared/status/index.js';
import { parsePollJob } from '../shared/poll/jobs.js';
import { startLocalHost } from './host.js';
import { startAzurite, type Azurite } from './azurite.js';
import { startSandbox, SANDBOX_MAILBOXES, type Sandbox } from './index.js';
import { sampleMailbox, plainMessage, multipartWithAttachments } from './messages.js';

const root = resolve(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..', '..');
const stateDir = join(root, '.sandbox');
const log = consoleLogger({ prefix: 'postroom' });
const say = (line: string) => process.stdout.write(`${line}\n`);

function localSettings(): Record<string, string> {
  const file = join(root, 'local.settings.json');
  if (!existsSync(file)) return {};
  const json = JSON.parse(readFileSync(file, 'utf8')) as { Values?: Record<string, string> };
  return json.Values ?? {};
}

async function main(): Promise<void> {
  // App settings as `func start` would set them; the real environment wins.
  const env: Record<string, string | undefined> = { ...localSettings(), ...process.env };
  let sandbox: Sandbox | undefined;
  let azurite: Azurite | undefined;
  const useSandbox = !env.POSTROOM_APPS?.trim();
  if (useSandbox) {
    say('[start] no tenant configured (POSTROOM_APPS is empty): starting the local sandbox…');
    sandbox = await startSandbox({
      dir: stateDir,
      ports: { token: 10443, imap: 10993, pop3: 10995, smtp: 10587, blob: 10000, queue: 10001, table: 10002 },
      logger: log,
    });
    const fresh = (await countMaildir(join(stateDir, 'dovecot'))) === 0;
    if (fresh) {
      for (const raw of sampleMailbox(24)) await sandbox.dovecot.deliver(SANDBOX_MAILBOXES.shared, raw);
      for (const raw of sampleMailbox(6)) await sandbox.dovecot.deliver(SANDBOX_MAILBOXES.archive, raw);
      for (const raw of sampleMailbox(10)) await sandbox.dovecot.deliver(SANDBOX_MAILBOXES.pop, raw);
      say('[start] seeded 24 + 6 + 10 sample messages');
    }
    Object.assign(env, sandbox.env(), { POSTROOM_STORAGE: sandbox.azurite.connectionString });
    if (process.argv.includes('--sandbox-only')) {
      // For `func start`: the stack runs here; these values go into local.settings.json.
      say('[sandbox] running. Put these into local.settings.json "Values" and run `func start` in another terminal:');
      say(JSON.stringify(sandbox.env(), null, 2));
      say(`[sandbox] Node must trust the sandbox CA for msal's discovery too: POSTROOM_CA_FILE is set above. Ctrl-C to stop.`);
      const stopOnly = async () => {
        await sandbox!.stop();
        process.exit(0);
      };
      process.once('SIGINT', stopOnly);
      process.once('SIGTERM', stopOnly);
      return;
    }
  } else if (/UseDevelopmentStorage=true/i.test(env.POSTROOM_STORAGE ?? '')) {
    say('[start] POSTROOM_STORAGE is the development storage: starting Azurite…');
    azurite = await startAzurite({ dir: join(stateDir, 'azurite'), blobPort: 10000, queuePort: 10001, tablePort: 10002 });
  }

  let config;
  try {
    config = loadConfig(env);
  } catch (e) {
    if (isPostroomError(e, 'ConfigInvalid')) {
      process.stderr.write(`${e.message}\n`);
      await sandbox?.stop();
      await azurite?.stop();
      process.exit(2);
    }
    throw e;
  }
  const runtime = createRuntime({ config, logger: log });
  let total = 0;
  const host = await startLocalHost({
    runtime,
    logger: log,
    onHandled: async (ev) => {
      if (ev.queue !== config.storage.jobsQueue || !ev.ok) return;
      const job = parsePollJob(ev.body);
      const mailbox = config.mailboxes.find((m) => m.id === job.mailboxId);
      const status = mailbox && (await readStatus(runtime.state, mailbox).catch(() => undefined));
      if (!mailbox || !status) return;
      total += status.lastDelivered;
      const rate = status.lastDelivered && status.lastDurationMs ? ` (${((status.lastDelivered * 1000) / status.lastDurationMs).toFixed(0)} msg/s)` : '';
      say(
        `[poll] ${mailbox.id}: ${status.lastResult}, +${status.lastDelivered} message(s) in ${status.lastDurationMs} ms${rate} → queue "${config.storage.outputQueue}" ` +
          `(mailbox total ${status.totalDelivered}, this run ${total})${status.lastResult === 'failed' ? ` — ${status.lastError}` : ''}`,
      );
    },
  });
  say(`[start] polling ${config.mailboxes.length} mailbox(es) on "${config.schedule}"; output queue "${config.storage.outputQueue}", blobs in "${config.storage.blobContainer}".`);
  if (sandbox) {
    say(`[start] storage: ${sandbox.azurite.connectionString.replace(/AccountKey=[^;]+/, 'AccountKey=…')}`);
    say(`[start] notifications (digests, alerts) are sent over SMTP XOAUTH2 to 127.0.0.1:${sandbox.smtp.port} and captured as .eml in ${sandbox.smtp.dir}`);
  }
  say('[start] Ctrl-C to stop.');
  await host.tick();

  // In the sandbox, new mail keeps arriving so that incremental polls have work.
  let n = 0;
  const arrivals = sandbox
    ? setInterval(() => {
        n++;
        const raw = n % 3 === 0 ? multipartWithAttachments({ subject: `Arrival ${n}` }) : plainMessage({ subject: `Arrival ${n}` });
        const box = n % 2 ? SANDBOX_MAILBOXES.shared : SANDBOX_MAILBOXES.pop;
        sandbox!.dovecot.deliver(box, raw).catch((e) => log.warn(`sandbox arrival failed: ${(e as Error).message}`));
      }, 15_000)
    : undefined;

  const stop = async () => {
    say('\n[start] stopping…');
    if (arrivals) clearInterval(arrivals);
    await host.stop();
    await sandbox?.stop();
    await azurite?.stop();
    process.exit(0);
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

async function countMaildir(dir: string): Promise<number> {
  let count = 0;
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) {
      if (e.isDirectory()) await walk(join(d, e.name));
      else if (/(^|\/)(cur|new)$/.test(d)) count++;
    }
  };
  await walk(dir);
  return count;
}

main().catch((e) => {
  process.stderr.write(`[start] failed: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
