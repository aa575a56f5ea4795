import { z } from 'zod';
import { decodeQueueJson, encodeQueueJson, MAX_QUEUE_JSON_BYTES } from '../queue-json.js';

export const NOTIFICATION_SCHEMA = 'postroom.notification.v1';

/** A notification job is one queue message: the queue codec's limit. */
export const MAX_NOTIFICATION_JSON_BYTES = MAX_QUEUE_JSON_BYTES;
/** Untrusted text (subjects, names) is cut to this many characters in a job. */
const MAX_TEXT = 300;

/** One ingested message as a digest or per-message notice lists it. */
export interface NotifiedMessage {
  subject: string | null;
  from: string | null;
  size: number;
  attachments: number;
  idempotencyKey: string;
  /** Blob prefix of the raw message, attachments and bodies (`<container>/<blobPrefix>/message.eml`). */
  blobPrefix: string;
  parseError: string | null;
}

export interface DigestData {
  count: number;
  totalBytes: number;
  /** The first messages; `omitted` more did not fit in one queue message. */
  messages: NotifiedMessage[];
  omitted: number;
  outcome: 'ok' | 'failed' | 'leased';
  durationMs: number;
}

export interface FailureData {
  code: string;
  message: string;
  fix: string;
  consecutiveFailures: number;
  lastSuccessAt: string | null;
}

export interface RecoveredData {
  /** The failure kind that had been alerted. */
  code: string;
  alertedAt: string | null;
  delivered: number;
}

export type NotificationJob =
  | (JobBase & { kind: 'digest'; data: DigestData })
  | (JobBase & { kind: 'message'; data: NotifiedMessage })
  | (JobBase & { kind: 'failure'; data: FailureData })
  | (JobBase & { kind: 'recovered'; data: RecoveredData });

interface JobBase {
  schema: typeof NOTIFICATION_SCHEMA;
  /** Unique per notification; also the Message-ID's local part, so a queue retry after a lost reply is recognisable. */
  id: string;
  mailboxId: string;
  mailbox: string;
  createdAt: string;
  /** How often the job was put back on the queue to wait out a server back-off. */
  deferrals?: number;
}

export type NotificationKind = NotificationJob['kind'];

/** Cuts untrusted text to a bounded length (it is escaped when rendered, not here). */
export function clip(text: string | null | undefined, max = MAX_TEXT): string | null {
  if (text === null || text === undefined) return null;
  return text.length > max ? text.slice(0, max - 1) + '…' : text;
}

/** Base64 JSON for the queue. Throws a TypeError if the job would not fit (callers trim first). */
export function encodeNotificationJob(job: NotificationJob): string {
  return encodeQueueJson(job, `notification job ${job.id}`);
}

/**
 * Drops messages from the end of a digest until its job fits in one queue
 * message, counting them in `omitted`.
 */
export function fitDigest(job: NotificationJob & { kind: 'digest' }): NotificationJob & { kind: 'digest' } {
  const size = (j: NotificationJob) => Buffer.byteLength(JSON.stringify(j), 'utf8');
  if (size(job) <= MAX_NOTIFICATION_JSON_BYTES) return job;
  const messages = [...job.data.messages];
  // Halve first (cheap), then trim one by one.
  let out = job;
  while (messages.length) {
    const drop = size(out) > MAX_NOTIFICATION_JSON_BYTES * 2 ? Math.ceil(messages.length / 2) : 1;
    messages.splice(messages.length - drop, drop);
    out = { ...job, data: { ...job.data, messages: [...messages], omitted: job.data.omitted + (job.data.messages.length - messages.length) } };
    if (size(out) <= MAX_NOTIFICATION_JSON_BYTES) return out;
  }
  return out;
}

/** The envelope every notification job must have; `data` is the kind's own (written by `notifyAfterPoll`). */
const NotificationJobSchema = z
  .object({
    schema: z.literal(NOTIFICATION_SCHEMA),
    id: z.string().min(1),
    mailboxId: z.string().min(1),
    mailbox: z.string(),
    createdAt: z.string(),
    kind: z.enum(['digest', 'message', 'failure', 'recovered']),
    data: z.record(z.string(), z.unknown()),
    deferrals: z.number().int().min(0).optional(),
  })
  .loose();

/** Reads a job as the queue trigger hands it over (decoded object, JSON text, or base64 JSON); `TypeError` if it is none. */
export function parseNotificationJob(raw: unknown): NotificationJob {
  return decodeQueueJson(raw, NotificationJobSchema, NOTIFICATION_SCHEMA) as unknown as NotificationJob;
}
