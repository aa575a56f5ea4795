import { z } from 'zod';
import { PostroomError } from '../errors.js';
import { decodeQueueJson, encodeQueueJson } from '../queue-json.js';
import type { Logger } from '../logger.js';
import type { Runtime } from '../runtime.js';
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

/**
 * Fan-out: one poll job per configured mailbox onto the jobs queue, so the
 * Functions host spreads mailboxes over instances. Base64 JSON, as queue
 * triggers expect by default.
 */
export async function enqueuePollJobs(runtime: Runtime, options: { logger?: Logger } = {}): Promise<PollJob[]> {
  const log = options.logger ?? runtime.logger;
  const queue = await runtime.storage.queue(runtime.config.storage.jobsQueue);
  const at = runtime.now().toISOString();
  const jobs = runtime.config.mailboxes.map((m): PollJob => ({ schema: JOB_SCHEMA, mailboxId: m.id, scheduledAt: at }));
  await Promise.all(jobs.map((j) => queue.sendMessage(encodeQueueJson(j))));
  log.info(`enqueued ${jobs.length} poll job(s)`, { queue: runtime.config.storage.jobsQueue });
  return jobs;
}

/** Reads a job as the queue trigger hands it over (already decoded object, JSON text, or base64 JSON). */
export function parsePollJob(raw: unknown): PollJob {
  return decodeQueueJson(raw, PollJobSchema, JOB_SCHEMA);
}

/**
 * Handles one job from the jobs queue. Returns quietly when another
 * instance holds the mailbox, or when the failure is one only an admin can
 * fix (retrying would only hammer the server; the status records it).
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
  if (result.outcome === 'failed' && result.error?.retryable) {
    throw new PostroomError(result.error.code, `poll of ${mailbox.id} failed (try ${options.dequeueCount ?? 1}); the queue will retry`, {
      subject: mailbox.id,
      cause: result.error,
      retryAfterMs: result.error.retryAfterMs,
    });
  }
  return result;
}
