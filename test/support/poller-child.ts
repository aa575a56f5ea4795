/**
 * A poller in its own process, for the fault matrix's SIGKILL row: builds a
 * runtime from the environment (as the Functions host would, settings as
 * `POSTROOM_*` variables), polls the first configured mailbox and reports
 * what it does as JSON lines on stdout, so the parent can kill it at a
 * random moment and later tell what had happened:
 *
 * - `{"e":"leased"}`: another holder has the lease; the child tries again
 *   every `POSTROOM_CHILD_LEASE_RETRY_MS` (default 500) until it gets it
 *   or `POSTROOM_CHILD_LEASE_WAIT_MS` (default 60000) has passed;
 * - `{"e":"session"}`: the lease is held and the mail session is being opened;
 * - `{"e":"ack","n":N}`: N messages durable, about to be acknowledged;
 * - `{"e":"done",...}`: the poll's result (outcome, delivered, codes, ms).
 *
 * Run as `node dist/test/support/poller-child.js`; see poller-process.ts.
 */
import { loadConfig } from '../../shared/config/index.js';
import { createLogger } from '../../shared/logger.js';
import { createRuntime, type Runtime } from '../../shared/runtime.js';
import { pollMailbox } from '../../shared/poll/poll-mailbox.js';

const emit = (event: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(event)}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function main(): Promise<void> {
  const config = loadConfig(process.env);
  // Log lines go to stderr: the parent keeps them for a failure message.
  const logger = createLogger((level, line) => process.stderr.write(`${level} ${line}\n`), { level: 'info', prefix: 'child' });
  const base = createRuntime({ config, logger });
  // runSessions asks for the source once the lease is held: that is the moment worth reporting.
  const runtime: Runtime = Object.assign(Object.create(base) as Runtime, {
    source: (...args: Parameters<Runtime['source']>) => {
      emit({ e: 'session' });
      return base.source(...args);
    },
  });
  const mailbox = config.mailboxes[0];
  const retryMs = Number(process.env.POSTROOM_CHILD_LEASE_RETRY_MS ?? 500);
  const until = Date.now() + Number(process.env.POSTROOM_CHILD_LEASE_WAIT_MS ?? 60_000);
  for (;;) {
    let acked = 0;
    const r = await pollMailbox(runtime, mailbox, {
      beforeAcknowledge: (done) => {
        acked += done.length;
        emit({ e: 'ack', n: acked });
      },
    });
    if (r.outcome === 'leased' && Date.now() < until) {
      emit({ e: 'leased' });
      await sleep(retryMs);
      continue;
    }
    emit({ e: 'done', outcome: r.outcome, delivered: r.delivered.length, code: r.error?.code, message: r.error?.message, stopped: r.stopped?.code, durationMs: r.durationMs });
    break;
  }
  base.close();
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    emit({ e: 'crash', message: String((e as Error)?.stack ?? e) });
    process.exit(3);
  },
);
