import type { QueueClient } from '@azure/storage-queue';
import { z } from 'zod';
import { isPostroomError, PostroomError } from '../errors.js';
import { decodeQueueJson, encodeQueueJson } from '../queue-json.js';
import type { Logger } from '../logger.js';
import type { Runtime } from '../runtime.js';
import type { StateValue } from '../state.js';
import { pollMailbox, type PollMailboxOptions, type PollResult } from './poll-mailbox.js';
import { notifyAfterPoll } from '../notify/enqueue.js';

export const JOB_SCHEMA = 'postroom.job.v1';

/** One poll job on the jobs queue: which mailbox, and when it was scheduled. */
const PollJobSchema = z
  .object({
    schema: z.literal(JOB_SCHEMA),
    /** The mailbox's `id` (`protocol:address/folder`). */
    mailboxId: z.string().min(1),
    /** When the timer enqueued it (ISO 8601). */
    scheduledAt: z.string(),
  })
  .loose();

/** One poll job on the jobs queue: which mailbox, and when it was scheduled. */
export type PollJob = z.infer<typeof PollJobSchema>;

/** StateStore key (partition = mailbox id) marking a poll job that is queued or running. */
export const PENDING_JOB_KEY = 'poll-pending';

/**
 * A pending mark older than this is stale (its job was lost, or poisoned):
 * the timer enqueues again. Longer than a job's whole life on the queue
 * (5 tries x 30 s visibility + polls of at most ~5 min each).
 */
const PENDING_STALE_MS = 30 * 60_000;

/** The pending mark's row. */
interface PendingJob extends StateValue {
  enqueuedAt: string;
}

/**
 * Fan-out: one poll job per configured mailbox onto the jobs queue, so the
 * Functions host spreads mailboxes over instances. A mailbox whose last job
 * is still queued or running gets none: while a mailbox keeps failing, one
 * job retries through the queue instead of one more every tick.
 */
export async function enqueuePollJobs(runtime: Runtime, options: { logger?: Logger } = {}): Promise<PollJob[]> {
  const log = options.logger ?? runtime.logger;
  const queue = await runtime.storage.queue(runtime.config.storage.jobsQueue);
  const at = runtime.now();
  // Mailboxes are independent: claim and send for all of them at once, as the fan-out always did.
  const sent = await Promise.all(runtime.config.mailboxes.map((m) => enqueueOne(runtime, queue, m.id, at)));
  const jobs = sent.filter((j): j is PollJob => j !== undefined);
  const skipped = runtime.config.mailboxes.length - jobs.length;
  log.info(`enqueued ${jobs.length} poll job(s)${skipped ? `; ${skipped} mailbox(es) still have one pending` : ''}`, { queue: runtime.config.storage.jobsQueue });
  return jobs;
}

/** One mailbox's job, unless one is still pending; the pending mark is taken back when the send fails. */
async function enqueueOne(runtime: Runtime, queue: QueueClient, mailboxId: string, at: Date): Promise<PollJob | undefined> {
  if (!(await claimPending(runtime, mailboxId, at))) return undefined;
  const job: PollJob = { schema: JOB_SCHEMA, mailboxId, scheduledAt: at.toISOString() };
  try {
    await queue.sendMessage(encodeQueueJson(job));
  } catch (e) {
    await runtime.state.delete(mailboxId, PENDING_JOB_KEY).catch(() => undefined);
    throw e;
  }
  return job;
}

/** Marks a job of `mailboxId` pending, unless a fresh mark exists (ETag-guarded: two timers cannot both claim). */
async function claimPending(runtime: Runtime, mailboxId: string, at: Date): Promise<boolean> {
  const rec = await runtime.state.get<PendingJob>(mailboxId, PENDING_JOB_KEY);
  if (rec && at.getTime() - Date.parse(rec.value.enqueuedAt) < PENDING_STALE_MS) return false;
  try {
    await runtime.state.put<PendingJob>(mailboxId, PENDING_JOB_KEY, { enqueuedAt: at.toISOString() }, rec?.etag ?? null);
    return true;
  } catch (e) {
    if (isPostroomError(e, 'CheckpointConflict')) return false;
    throw e;
  }
}

/** Reads a job as the queue trigger hands it over (already decoded object, JSON text, or base64 JSON). */
export function parsePollJob(raw: unknown): PollJob {
  return decodeQueueJson(raw, PollJobSchema, JOB_SCHEMA);
}

/**
 * Handles one job from the jobs queue. Returns quietly when another
 * instance holds the mailbox, or when the failure is one only an admin can
 * fix (retrying would only hammer the server; the status records it). A
 * server back-off longer than the poll's time left puts the job back on the
 * queue, invisible for the back-off, instead of spending the queue's tries.
 * Throws on a transient failure so that the queue retries the job and, after
 * maxDequeueCount tries, moves it to `<queue>-poison`.
 */
export async function handlePollJob(runtime: Runtime, raw: unknown, options: PollMailboxOptions & { dequeueCount?: number } = {}): Promise<PollResult | undefined> {
  const log = options.logger ?? runtime.logger;
  const job = parsePollJob(raw);
  const mailbox = runtime.config.mailboxes.find((m) => m.id === job.mailboxId);
  if (!mailbox) {
    log.warn('poll job names a mailbox that is no longer configured; dropping it', { mailboxId: job.mailboxId });
    return undefined;
  }
  const result = await pollMailbox(runtime, mailbox, options);
  try {
    await notifyAfterPoll(runtime, mailbox, result, { logger: log });
  } catch (e) {
    // A notification must never fail (and so repeat) a poll.
    log.warn('notifications could not be enqueued', { mailbox: mailbox.id, error: e as Error });
  }
  if (result.stopped?.code === 'Throttled') return requeueAfterBackoff(runtime, job, result, log);
  const retry = result.outcome === 'failed' && result.error?.retryable;
  // The job is done (or given up) unless the queue is about to retry it.
  if (result.outcome !== 'leased' && !retry) await runtime.state.delete(mailbox.id, PENDING_JOB_KEY).catch(() => undefined);
  if (retry) {
    throw new PostroomError(
      result.error!.code,
      `poll of ${mailbox.id} failed (try ${options.dequeueCount ?? 1}); the queue retries it, and after its last try moves it to ${runtime.config.storage.jobsQueue}-poison`,
      {
        subject: mailbox.id,
        cause: result.error,
        retryAfterMs: result.error!.retryAfterMs,
      },
    );
  }
  return result;
}

/** Azure queues hide a message for at most 7 days; a back-off is never near that, but bound it anyway. */
const MAX_REQUEUE_SECONDS = 3600;

async function requeueAfterBackoff(runtime: Runtime, job: PollJob, result: PollResult, log: Logger): Promise<PollResult> {
  const seconds = Math.min(MAX_REQUEUE_SECONDS, Math.max(1, Math.ceil((result.stopped!.retryAfterMs ?? 60_000) / 1000)));
  const queue = await runtime.storage.queue(runtime.config.storage.jobsQueue);
  await queue.sendMessage(encodeQueueJson(job), { visibilityTimeout: seconds });
  log.warn(`the server asked to back off longer than the poll had left: the job is back on the queue in ${seconds} s`, { mailbox: job.mailboxId });
  return result;
}
