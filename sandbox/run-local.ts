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
import { sandboxPorts, startSandbox, stopSandboxOrphans, SANDBOX_MAILBOXES, type Sandbox } from './index.js';
import { assertPortsFree } from './ports.js';
import { sampleMailbox, plainMessage, multipartWithAttachments } from './messages.js';

const root = resolve(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..', '..');
const argv = process.argv.slice(2);
const option = (name: string) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
/** `--state-dir <dir>` or POSTROOM_SANDBOX_DIR: where the sandbox keeps its state (default .sandbox/). */
const stateDir = resolve(option('--state-dir') ?? process.env.POSTROOM_SANDBOX_DIR ?? join(root, '.sandbox'));
/** `--port-base <n>` or POSTROOM_SANDBOX_PORT_BASE: the sandbox's ports are n, n+1, n+2 (storage), n+443, n+587, n+993, n+995. */
const portBase = Number(option('--port-base') ?? process.env.POSTROOM_SANDBOX_PORT_BASE ?? 10_000);
const log = consoleLogger({ prefix: 'postroom' });
// After a hang-up the terminal is gone and writes fail (EIO); that must not cut the shutdown short.
process.stdout.on('error', () => undefined);
process.stderr.on('error', () => undefined);
const say = (line: string) => {
  if (process.stdout.writable) process.stdout.write(`${line}\n`);
};

/** What is running, stopped in reverse order on the first signal (later signals only wait for it). */
const running: Array<{ name: string; stop(): Promise<unknown> }> = [];
let stopping: Promise<void> | undefined;
/** A poll that does not end must not keep the stack (and its ports) alive: then the exit hooks SIGKILL Dovecot and Azurite. */
const STOP_DEADLINE_MS = 15_000;

function shutdown(reason: string, code: number): Promise<void> {
  stopping ??= (async () => {
    say(`\n[start] ${reason}: stopping…`);
    setTimeout(() => {
      say(`[start] not stopped within ${STOP_DEADLINE_MS / 1000} s: killing the sandbox processes`);
      process.exit(code || 1);
    }, STOP_DEADLINE_MS);
    for (const r of running.reverse()) {
      await r.stop().catch((e: unknown) => log.warn(`stopping ${r.name} failed: ${(e as Error).message}`));
    }
    say('[start] stopped.');
    process.exit(code);
  })();
  return stopping;
}

// Installed before anything starts: a terminal's Ctrl-C reaches every process of the group, and
// npm and scripts/start.mjs forward it again, so the same signal may come 2-3 times.
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, () => {
    if (stopping) say(`[start] ${sig} again: still stopping…`);
    else void shutdown(`${sig} received`, 0);
  });
}
// Started by scripts/start.mjs: if it dies without forwarding a signal (SIGKILL), stop too.
const parent = Number(process.env.POSTROOM_STARTED_BY);
if (parent) {
  setInterval(() => {
    if (process.ppid !== parent) void shutdown('npm start went away', 1);
  }, 1_000).unref();
}

/** Ports of the sandbox under `npm start` (fixed, so that local.settings.json and tools can name them). */
function startPorts(base: number) {
  if (!Number.isInteger(base) || base < 1024 || base > 64_000) {
    throw new Error(`POSTROOM_SANDBOX_PORT_BASE / --port-base must be an integer from 1024 to 64000, got ${JSON.stringify(String(base))}`);
  }
  return { blob: base, queue: base + 1, table: base + 2, token: base + 443, smtp: base + 587, imap: base + 993, pop3: base + 995 };
}

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
    say(`[start] no tenant configured (POSTROOM_APPS is empty): starting the local sandbox in ${stateDir}…`);
    const ports = startPorts(portBase);
    const orphans = await stopSandboxOrphans(stateDir, log);
    if (orphans.length) say(`[start] stopped what an earlier run left running: ${orphans.join(', ')}`);
    await assertPortsFree(sandboxPorts(ports), `The sandbox needs these ports free; or run it on others: POSTROOM_SANDBOX_PORT_BASE=20000 npm start`);
    const starting = startSandbox({ dir: stateDir, ports, logger: log, detached: true });
    // A signal during start-up stops whatever of it comes up.
    running.push({
      name: 'sandbox',
      stop: () =>
        starting.then(
          (s) => s.stop(),
          () => undefined,
        ),
    });
    sandbox = await starting;
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
      return;
    }
  } else if (/UseDevelopmentStorage=true/i.test(env.POSTROOM_STORAGE ?? '')) {
    say('[start] POSTROOM_STORAGE is the development storage: starting Azurite…');
    const ports = startPorts(portBase);
    const starting = startAzurite({
      dir: join(stateDir, 'azurite'),
      blobPort: ports.blob,
      queuePort: ports.queue,
      tablePort: ports.table,
      detached: true,
      onOrphanStopped: (pid) => say(`[start] stopped an Azurite an earlier run left running (pid ${pid})`),
    });
    running.push({
      name: 'Azurite',
      stop: () =>
        starting.then(
          (a) => a.stop(),
          () => undefined,
        ),
    });
    azurite = await starting;
    // The same Azurite as UseDevelopmentStorage=true names, also on another port base.
    env.POSTROOM_STORAGE = azurite.connectionString;
  }

  let config;
  try {
    config = loadConfig(env);
  } catch (e) {
    if (isPostroomError(e, 'ConfigInvalid')) {
      process.stderr.write(`${e.message}\n`);
      return shutdown('settings invalid', 2);
    }
    throw e;
  }
  const runtime = createRuntime({ config, logger: log });
  let total = 0;
  // After each handled poll job: one line on what the poll did, from the mailbox's status record.
  const reportPoll = async (ev: { queue: string; ok: boolean; body: unknown }) => {
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
  };
  if (stopping) return;
  const host = await startLocalHost({
    runtime,
    logger: log,
    hostJson: join(root, 'host.json'),
    // Ctrl-C should be quick; an abandoned poll is what a crash is (its lease expires, its job comes back).
    stopGraceMs: 5_000,
    // The host does not wait for this: the report runs beside the next jobs.
    onHandled: (ev) => void reportPoll(ev),
  });
  say(`[start] polling ${config.mailboxes.length} mailbox(es) on "${config.schedule}"; output queue "${config.storage.outputQueue}", blobs in "${config.storage.blobContainer}".`);
  if (sandbox) {
    say(`[start] storage: ${sandbox.azurite.connectionString.replace(/AccountKey=[^;]+/, 'AccountKey=…')}`);
    say(`[start] notifications (digests, alerts) are sent over SMTP XOAUTH2 to 127.0.0.1:${sandbox.smtp.port} and captured as .eml in ${sandbox.smtp.dir}`);
  }
  running.push({ name: 'the local Functions host', stop: () => host.stop() });
  say('[start] Ctrl-C to stop.');
  await host.tick();

  // In the sandbox, new mail keeps arriving so that incremental polls have work.
  let n = 0;
  const arrivals = sandbox
    ? setInterval(() => {
        n++;
        const raw = n % 3 === 0 ? multipartWithAttachments({ subject: `Arrival ${n}` }) : plainMessage({ subject: `Arrival ${n}` });
        const box = n % 2 ? SANDBOX_MAILBOXES.shared : SANDBOX_MAILBOXES.pop;
        sandbox.dovecot.deliver(box, raw).catch((e) => log.warn(`sandbox arrival failed: ${(e as Error).message}`));
      }, 15_000)
    : undefined;

  if (arrivals) running.push({ name: 'sample arrivals', stop: async () => clearInterval(arrivals) });
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
  if (!stopping) process.stderr.write(`[start] failed: ${e instanceof Error ? e.message : String(e)}\n`);
  return shutdown('start-up failed', 1);
});
