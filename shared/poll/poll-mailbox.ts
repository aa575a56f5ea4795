import type { MailboxConfig } from '../config/index.js';
import { PostroomError } from '../errors.js';
import { acquireMailboxLease, type MailboxLease } from '../lease/index.js';
import type { Logger } from '../logger.js';
import type { Runtime, SourceHooks } from '../runtime.js';
import type { Delivered } from '../sink/index.js';
import { recordStatus, type MailboxStatus } from '../status/index.js';
import { getMetrics, lagTracker } from '../telemetry/index.js';
import { startPollClock, type PollClock } from './deadline.js';
import { asPostroomError } from './poll-errors.js';
import { runSessions } from './sessions.js';
import { diagnoseRefusal } from './diagnose-refusal.js';
import type { Diagnosis } from '../diagnose/narrow.js';

/** Options of {@link pollMailbox}. */
export interface PollMailboxOptions {
  /** Aborts the poll (host shutdown). */
  signal?: AbortSignal;
  /** Logger of this poll (e.g. the invocation's); default the runtime's. */
  logger?: Logger;
  /** Observation hooks passed to the mail source (benchmarks count protocol commands). */
  hooks?: SourceHooks;
  /** Test seam: called after each batch is durably enqueued, before it is acknowledged. */
  beforeAcknowledge?: (delivered: readonly Delivered[]) => Promise<void> | void;
}

/** How one poll ended. */
export interface PollResult {
  /** The mailbox id. */
  mailbox: string;
  /** `leased`: another instance holds the mailbox; nothing was done. */
  outcome: 'ok' | 'failed' | 'leased';
  /** What was durably delivered and acknowledged, in order. */
  delivered: Delivered[];
  /** Why the poll failed (`outcome` `failed`), with its fix; absent otherwise. */
  error?: PostroomError;
  /**
   * Set when the poll ended early without failing: its deadline, or a server
   * back-off longer than the time left (`retryAfterMs`). The next poll goes on.
   */
  stopped?: PostroomError;
  /** The status row as recorded after this poll; absent when leased, or when recording it failed (logged). */
  /** A refused login narrowed down (then `error` is the diagnosis' error, the refusal its `cause`). */
  diagnosis?: Diagnosis;
  /**
   *
   */
  status?: MailboxStatus;
  /** Wall time of the poll in milliseconds, lease to status. */
  durationMs: number;
}

/** Lease renewal stops after this long without progress. */
const STALL_MS = 120_000;
/** After the deadline, this long for what is in flight to finish. */
const GRACE_MS = 30_000;

/**
 * One incremental poll of one mailbox, under its lease: fetch -> parse ->
 * blob/queue -> acknowledge, batch by batch. A message is acknowledged
 * (checkpoint, then post-action) only after its queue write succeeded. The
 * poll ends by its deadline (`POSTROOM_POLL_DEADLINE_SECONDS` + 30 s grace)
 * whatever the servers do, acknowledging what is durable.
 *
 * @example
 * ```ts
 * const result = await pollMailbox(runtime, runtime.config.mailboxes[0]);
 * console.log(result.outcome, result.delivered.length);
 * ```
 */
export async function pollMailbox(runtime: Runtime, mailbox: MailboxConfig, options: PollMailboxOptions = {}): Promise<PollResult> {
  const started = Date.now();
  const log = options.logger ?? runtime.logger;
  const clock = startPollClock({
    deadlineMs: runtime.config.poll.deadlineSeconds * 1000,
    graceMs: GRACE_MS,
    stallMs: STALL_MS,
    signals: options.signal ? [options.signal] : [],
    subject: mailbox.id,
    listeners: runtime.config.poll.concurrency * 4,
  });
  const delivered: Delivered[] = [];
  const lag = lagTracker();
  let error: PostroomError | undefined;
  let stopped: PostroomError | undefined;
  try {
    const lease = await takeLease(runtime, mailbox, clock, log);
    if (!lease) {
      getMetrics().pollFinished(mailbox.id, { durationMs: Date.now() - started, outcome: 'leased', lagMs: 0 });
      return { mailbox: mailbox.id, outcome: 'leased', delivered, durationMs: Date.now() - started };
    }
    try {
      const ctx = { clock, lease, log, delivered, lag, hooks: options.hooks, beforeAcknowledge: options.beforeAcknowledge };
      stopped = await runSessions(runtime, mailbox, ctx);
    } finally {
      await lease.release();
    }
  } catch (e) {
    error = asPostroomError(e, mailbox);
  } finally {
    clock.dispose();
  }
  // Exchange's bare "AUTHENTICATE failed": the other protocols tell which admin step is missing.
  const diagnosis = error ? await diagnoseRefusal(runtime, mailbox, error, { logger: log }) : undefined;
  if (diagnosis) error = diagnosis.error;
  const status = await saveStatus(runtime, mailbox, { delivered: delivered.length, durationMs: Date.now() - started, error, stopped, diagnosis }, log);
  const durationMs = Date.now() - started;
  getMetrics().pollFinished(mailbox.id, { durationMs, outcome: error ? 'failed' : 'ok', code: error?.code, lagMs: lag.lagMs(runtime.now()) });
  if (error) log.error(`poll failed: ${error.message}`, { mailbox: mailbox.id, code: error.code, delivered: delivered.length, durationMs });
  else if (stopped) log.warn(`poll ended early: ${stopped.message}`, { mailbox: mailbox.id, code: stopped.code, delivered: delivered.length, durationMs });
  else log.info('poll done', { mailbox: mailbox.id, delivered: delivered.length, durationMs });
  return { mailbox: mailbox.id, outcome: error ? 'failed' : 'ok', delivered, error, stopped, diagnosis, status, durationMs };
}

/** The mailbox's lease, or undefined when another instance holds it. Storage not answering is a coded error. */
async function takeLease(runtime: Runtime, mailbox: MailboxConfig, clock: PollClock, log: Logger): Promise<(MailboxLease & { signal: AbortSignal }) | undefined> {
  const { storage, config } = runtime;
  let lease: MailboxLease | undefined;
  try {
    const leases = await storage.container(config.storage.leaseContainer);
    lease = await acquireMailboxLease(leases, mailbox.key, { seconds: config.poll.leaseSeconds, logger: log, shouldRenew: clock.alive, signal: clock.signal });
  } catch (e) {
    if (e instanceof PostroomError) throw e;
    throw new PostroomError('StorageUnavailable', `the lease container could not be reached (${(e as Error)?.message?.split('\n')[0] ?? String(e)})`, {
      subject: mailbox.id,
      cause: e,
    });
  }
  if (!lease) log.info('mailbox is being polled by another instance; skipping', { mailbox: mailbox.id });
  return lease;
}

async function saveStatus(
  runtime: Runtime,
  mailbox: MailboxConfig,
  o: { delivered: number; durationMs: number; error?: PostroomError; stopped?: PostroomError; diagnosis?: Diagnosis },
  log: Logger,
): Promise<MailboxStatus | undefined> {
  try {
    const outcome = o.error
      ? { ok: false as const, delivered: o.delivered, durationMs: o.durationMs, code: o.error.code, message: o.error.message, diagnosis: diagnosisOf(o.diagnosis) }
      : { ok: true as const, delivered: o.delivered, durationMs: o.durationMs, stoppedCode: o.stopped?.code, stoppedMessage: o.stopped?.message };
    return await recordStatus(runtime.state, mailbox, runtime.now(), outcome);
  } catch (e) {
    log.warn('poll status could not be recorded', { mailbox: mailbox.id, error: e as Error });
    return undefined;
  }
}

function diagnosisOf(d: Diagnosis | undefined) {
  return d ? { code: d.code, cause: d.cause, fix: d.fix, confidence: d.confidence } : undefined;
}
