import { z } from 'zod';
import { decodeQueueJson, encodeQueueJson, MAX_QUEUE_JSON_BYTES } from '../queue-json.js';

export const NOTIFICATION_SCHEMA = 'postroom.notification.v1';

/** A notification job is one queue message: the queue codec's limit. */
export const MAX_NOTIFICATION_JSON_BYTES = MAX_QUEUE_JSON_BYTES;
/** Untrusted text (subjects, names) is cut to this many characters in a job. */
const MAX_TEXT = 300;

/** One ingested message as a digest or per-message notice lists it. */
export interface NotifiedMessage {
  /** Decoded Subject, cut to 300 characters (untrusted: escaped when rendered); null when the message has none. */
  subject: string | null;
  /** The first From address as `Name <address>` (or the bare address), cut to 300 characters; null when there is none. */
  from: string | null;
  /** Raw message size in bytes. */
  size: number;
  /** Number of attachments written to blobs. */
  attachments: number;
  /** The message's idempotency key, to find its queue message and blobs. */
  idempotencyKey: string;
  /** Blob prefix of the raw message, attachments and bodies (`<container>/<blobPrefix>/message.eml`). */
  blobPrefix: string;
  /** Why the message could not be parsed (it was delivered raw-only), cut to 200 characters; null when it parsed. */
  parseError: string | null;
}

/** Payload of a `digest` job: what one poll ingested. */
export interface DigestData {
  /** Messages ingested by the poll (all of them, including those `omitted` from the list). */
  count: number;
  /** Sum of their raw sizes in bytes. */
  totalBytes: number;
  /** The first messages; `omitted` more did not fit in one queue message. */
  messages: NotifiedMessage[];
  /** How many messages were left out of `messages` to keep the job within one queue message; 0 when none. */
  omitted: number;
  /** How the poll ended: `failed` still lists what was ingested before the failure. */
  outcome: 'ok' | 'failed' | 'leased';
  /** Wall time of the poll in milliseconds. */
  durationMs: number;
}

/** Payload of a `failure` alert: sent once per error code when `failureThreshold` polls in a row failed. */
export interface FailureData {
  /** The PostroomError code of the failure (e.g. `MissingRole`, `MailboxNotConnected`). */
  code: string;
  /** What failed, for whom and why (no secrets), cut to 2000 characters. */
  message: string;
  /** The admin step that fixes it, from the error catalog. */
  fix: string;
  /** Polls in a row that have failed, this one included. */
  consecutiveFailures: number;
  /** ISO 8601 time of the mailbox's last successful poll; null when it never had one. */
  lastSuccessAt: string | null;
}

/** Payload of a `recovered` notice: the first good poll after a failure alert. */
export interface RecoveredData {
  /** The failure kind that had been alerted. */
  code: string;
  /** ISO 8601 time the failure alert was enqueued; null if it was not recorded. */
  alertedAt: string | null;
  /** Messages ingested by the recovering poll. */
  delivered: number;
}

/** One notification job on the notify queue (`postroom.notification.v1`), by `kind`: the payload is in `data`. */
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

/** The kinds of notification: `digest`, `message`, `failure`, `recovered`. */
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
