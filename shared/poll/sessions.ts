import type { ContainerClient } from '@azure/storage-blob';
import type { QueueClient } from '@azure/storage-queue';
import type { MailboxConfig } from '../config/index.js';
import { isPostroomError, PostroomError } from '../errors.js';
import type { MailboxLease } from '../lease/index.js';
import type { Logger } from '../logger.js';
import type { Runtime, SourceHooks } from '../runtime.js';
import { deliverMessage, type Delivered } from '../sink/index.js';
import type { MailSource, SourceMessage } from '../source.js';
import { getMetrics, type LagTracker } from '../telemetry/index.js';
import type { PollClock } from './deadline.js';
import { asPostroomError } from './poll-errors.js';
import { pipelineBatches } from './pipeline.js';

/** What the sessions of one poll share. */
export interface SessionContext {
  /** The poll's deadline and abort signal; told of each step of progress, which keeps the lease renewed. */
  readonly clock: PollClock;
  /** The mailbox lease held for the poll; once it is lost (its signal aborted) no session is started again. */
  readonly lease: MailboxLease;
  /** Logger of the poll. */
  readonly log: Logger;
  /** Filled in order as batches are acknowledged (or salvaged). */
  readonly delivered: Delivered[];
  /** Observation hooks passed to each source (benchmarks). */
  readonly hooks?: SourceHooks;
  /** Test seam: called after each batch is durably enqueued, before it is acknowledged. */
  readonly beforeAcknowledge?: (delivered: readonly Delivered[]) => Promise<void> | void;
  /** Ages of messages read and not yet acknowledged (the lag metric). */
  readonly lag: LagTracker;
}

/** Reconnects in a row without any message delivered in between. */
const MAX_IDLE_RECONNECTS = 3;
/** Pause before reconnecting after a dropped connection (not a throttle). */
const RECONNECT_PAUSE_MS = 250;

/**
 * Runs mail sessions until the folder is drained, reconnecting after a
 * session the server ended (token expiry, throttling, a dropped connection)
 * as long as each session moves the poll forward. Returns why the poll
 * stopped early (deadline, a back-off longer than the time left), or
 * undefined when it finished; throws what it cannot get past.
 */
export async function runSessions(runtime: Runtime, mailbox: MailboxConfig, ctx: SessionContext): Promise<PostroomError | undefined> {
  const targets = await storageTargets(runtime, mailbox, ctx.clock.signal);
  const source = await runtime.source(mailbox, ctx.log, ctx.hooks);
  for (let idle = 0; ;) {
    const before = ctx.delivered.length;
    try {
      await oneSession(runtime, mailbox, source, targets, ctx);
      return ctx.clock.stop.aborted ? abortReason(ctx.clock.stop, mailbox) : undefined;
    } catch (e) {
      const err = ctx.clock.signal.aborted ? abortReason(ctx.clock.signal, mailbox) : asPostroomError(e, mailbox);
      if (err.code === 'DeadlineReached') return err;
      idle = ctx.delivered.length > before ? 0 : idle + 1;
      const wait = await nextAttempt(runtime, mailbox, err, idle, ctx);
      if (wait === 'stop') return err;
      await sleep(wait, ctx.clock.signal);
    }
  }
}

/** How long to wait before the next session, 'stop' to end the poll early with `err`, or a throw. */
async function nextAttempt(runtime: Runtime, mailbox: MailboxConfig, err: PostroomError, idle: number, ctx: SessionContext): Promise<number | 'stop'> {
  // A session that was open and dropped (ConnectionLost) proves the server reachable: worth another session.
  const lostConnection = err.code === 'ConnectionFailed' || err.code === 'Timeout';
  const reconnectable = err.code === 'SessionExpired' || err.code === 'Throttled' || err.code === 'ConnectionLost' || (lostConnection && ctx.delivered.length > 0);
  if (!reconnectable || idle > MAX_IDLE_RECONNECTS || ctx.lease.signal.aborted) throw err;
  // imapflow has already waited part of the back-off (retryAfterMs is what is left): wait the rest once.
  const wait = err.code === 'Throttled' ? (err.retryAfterMs ?? 1000) : RECONNECT_PAUSE_MS;
  if (wait >= ctx.clock.remainingMs()) return 'stop';
  ctx.log.warn('mail session ended; reconnecting', { mailbox: mailbox.id, code: err.code, why: err.message.split('. Fix:')[0], waitMs: wait, reconnectsWithoutProgress: idle });
  if (err.code === 'SessionExpired') await runtime.tokens(mailbox.app).getToken({ renew: true, signal: ctx.clock.signal });
  return wait;
}

/** One session: open, deliver every batch, acknowledge in order, close. */
async function oneSession(runtime: Runtime, mailbox: MailboxConfig, source: MailSource, targets: StorageTargets, ctx: SessionContext): Promise<void> {
  const { clock, log } = ctx;
  const signal = clock.signal;
  // Nothing is in flight before the session is open: a server (or the vault, the login host) that has
  // not answered by the deadline ends the poll then, not at the deadline + grace.
  const session = await source.open({ signal, openBy: clock.stop, backoffBudgetMs: () => clock.remainingMs() });
  clock.progress();
  // The test seam stands for a process that dies there: nothing may run after it, salvage included.
  let crashed = false;
  const crashSeam = async (done: readonly Delivered[]) => {
    try {
      await ctx.beforeAcknowledge?.(done);
    } catch (e) {
      crashed = true;
      throw e;
    }
  };
  try {
    await pipelineBatches(session, {
      limit: runtime.config.poll.concurrency,
      signal,
      stop: clock.stop,
      deliver: async (m) => {
        const d = await deliverMessage(ctx.lag.seen(m), { mailbox, session, ...targets, now: runtime.now, logger: log, signal });
        clock.progress();
        return d;
      },
      acknowledge: async (batch, done) => {
        await crashSeam(done);
        signal.throwIfAborted();
        await session.acknowledge(batch, { signal });
        recordDelivered(ctx, mailbox, batch, done);
        clock.progress();
      },
      // The session may be gone: record what is durable so a reconnect does not write it again.
      salvage: async (messages, done) => {
        if (crashed) return;
        await session.checkpoint(messages);
        recordDelivered(ctx, mailbox, messages, done);
        log.info('durable messages checkpointed after the session failed; their post-action waits for the next session', { mailbox: mailbox.id, count: messages.length });
      },
    });
    await session.close();
  } catch (e) {
    session.abort();
    throw e;
  }
}

/** Counts messages acknowledged or checkpointed: the poll's result, the ingest metric, the lag. */
function recordDelivered(ctx: SessionContext, mailbox: MailboxConfig, messages: readonly SourceMessage[], done: readonly Delivered[]): void {
  ctx.delivered.push(...done);
  for (const d of done) getMetrics().messageIngested(mailbox.id, d.size);
  ctx.lag.acknowledged(messages);
}

/** The output container and queue. */
interface StorageTargets {
  container: ContainerClient;
  queue: QueueClient;
}

async function storageTargets(runtime: Runtime, mailbox: MailboxConfig, signal: AbortSignal): Promise<StorageTargets> {
  const { storage, config } = runtime;
  try {
    signal.throwIfAborted();
    const [container, queue] = await Promise.all([storage.container(config.storage.blobContainer), storage.queue(config.storage.outputQueue)]);
    return { container, queue };
  } catch (e) {
    if (isPostroomError(e)) throw e;
    throw new PostroomError('StorageUnavailable', `the output container or queue could not be reached (${(e as Error)?.message?.split('\n')[0] ?? String(e)})`, {
      subject: mailbox.id,
      cause: e,
    });
  }
}

function abortReason(signal: AbortSignal, mailbox: MailboxConfig): PostroomError {
  const reason: unknown = signal.reason;
  if (reason instanceof PostroomError) return reason;
  return new PostroomError('Aborted', 'the poll was aborted', { subject: mailbox.id, cause: reason });
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason as Error);
    const t = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal.reason as Error);
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
