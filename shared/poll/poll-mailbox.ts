import { setMaxListeners } from 'node:events';
import type { MailboxConfig } from '../config/index.js';
import { PostroomError, withContext } from '../errors.js';
import { fixContextOfMailbox } from '../diagnose/context.js';
import { acquireMailboxLease } from '../lease/index.js';
import type { Logger } from '../logger.js';
import type { Runtime, SourceHooks } from '../runtime.js';
import { deliverMessage, type Delivered } from '../sink/index.js';
import type { MailSession } from '../source.js';
import { pipelineBatches } from './pipeline.js';
import { recordStatus, type MailboxStatus } from './status.js';

export interface PollMailboxOptions {
  signal?: AbortSignal;
  logger?: Logger;
  hooks?: SourceHooks;
  /** Test seam: called after each batch is durably enqueued, before it is acknowledged. */
  beforeAcknowledge?: (delivered: readonly Delivered[]) => Promise<void> | void;
}

export interface PollResult {
  mailbox: string;
  /** `leased`: another instance holds the mailbox; nothing was done. */
  outcome: 'ok' | 'failed' | 'leased';
  delivered: Delivered[];
  error?: PostroomError;
  status?: MailboxStatus;
  durationMs: number;
}

const MAX_RECONNECTS = 3;
const MAX_BACKOFF_MS = 30_000;

/**
 * One incremental poll of one mailbox, under its lease: fetch -> parse ->
 * blob/queue -> acknowledge, batch by batch. A message is acknowledged
 * (checkpoint, then post-action) only after its queue write succeeded.
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
  const { storage, config } = runtime;
  const leases = await storage.container(config.storage.leaseContainer);
  const lease = await acquireMailboxLease(leases, mailbox.key, { seconds: config.poll.leaseSeconds, logger: log });
  if (!lease) {
    log.info('mailbox is being polled by another instance; skipping', { mailbox: mailbox.id });
    return { mailbox: mailbox.id, outcome: 'leased', delivered: [], durationMs: Date.now() - started };
  }
  const signal = options.signal ? AbortSignal.any([options.signal, lease.signal]) : lease.signal;
  // Every in-flight storage request listens on it: up to `concurrency` at once, by design.
  setMaxListeners(Math.max(32, config.poll.concurrency * 4), signal);
  const delivered: Delivered[] = [];
  let error: PostroomError | undefined;
  try {
    const [container, queue] = await Promise.all([storage.container(config.storage.blobContainer), storage.queue(config.storage.outputQueue)]);
    const source = await runtime.source(mailbox, log, options.hooks);
    for (let attempt = 0; ; attempt++) {
      let session: MailSession | undefined;
      try {
        session = await source.open({ signal });
        const open = session;
        await pipelineBatches(open, config.poll.concurrency, signal, (m) =>
          deliverMessage(m, { mailbox, session: open, container, queue, now: runtime.now, logger: log, signal }),
          async (batch, done) => {
            await options.beforeAcknowledge?.(done);
            signal.throwIfAborted();
            await open.acknowledge(batch, { signal });
            delivered.push(...done);
          },
        );
        await session.close();
        break;
      } catch (e) {
        session?.abort();
        const err = asPostroomError(e, mailbox);
        const reconnectable = err.code === 'SessionExpired' || err.code === 'Throttled' || (err.code === 'ConnectionFailed' && delivered.length > 0);
        if (!reconnectable || attempt >= MAX_RECONNECTS || signal.aborted) throw err;
        const wait = err.code === 'Throttled' ? Math.min(err.retryAfterMs ?? 1000, MAX_BACKOFF_MS) : 0;
        log.warn('mail session ended; reconnecting', { mailbox: mailbox.id, code: err.code, waitMs: wait, attempt: attempt + 1 });
        if (err.code === 'SessionExpired') await runtime.tokens(mailbox.app).getToken({ renew: true });
        if (wait) await new Promise((r) => setTimeout(r, wait));
      }
    }
  } catch (e) {
    error = asPostroomError(e, mailbox);
  } finally {
    await lease.release();
  }
  let status: MailboxStatus | undefined;
  try {
    status = await recordStatus(
      runtime.state,
      mailbox,
      runtime.now(),
      error
        ? { ok: false, delivered: delivered.length, durationMs: Date.now() - started, code: error.code, message: error.message }
        : { ok: true, delivered: delivered.length, durationMs: Date.now() - started },
    );
  } catch (e) {
    log.warn('poll status could not be recorded', { mailbox: mailbox.id, error: e as Error });
  }
  const durationMs = Date.now() - started;
  if (error) log.error(`poll failed: ${error.message}`, { mailbox: mailbox.id, code: error.code, delivered: delivered.length, durationMs });
  else log.info('poll done', { mailbox: mailbox.id, delivered: delivered.length, durationMs });
  return { mailbox: mailbox.id, outcome: error ? 'failed' : 'ok', delivered, error, status, durationMs };
}

// The fix is filled in with this mailbox's app, tenant and hosts (issue 12).
function asPostroomError(e: unknown, mailbox: MailboxConfig): PostroomError {
  return withContext(toPostroomError(e, mailbox), fixContextOfMailbox(mailbox)) as PostroomError;
}

function toPostroomError(e: unknown, mailbox: MailboxConfig): PostroomError {
  if (e instanceof PostroomError) return e;
  if ((e as Error)?.name === 'AbortError' || (e instanceof DOMException && e.name === 'AbortError')) {
    return new PostroomError('Aborted', 'the poll was aborted', { subject: mailbox.id, cause: e });
  }
  return new PostroomError('ProtocolError', `unexpected: ${(e as Error)?.message ?? String(e)}`, { subject: mailbox.id, cause: e });
}
