import { randomUUID } from 'node:crypto';
import type { QueueClient } from '@azure/storage-queue';
import type { MailboxConfig } from '../config/index.js';
import { isPostroomError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { StateStore, StateValue } from '../state.js';
import { readStatus } from '../status/index.js';
import { encodeNotificationJob } from './job.js';
import { clip, fitDigest, NOTIFICATION_SCHEMA, type NotificationJob, type NotifiedMessage } from './job.js';

/** StateStore key (partition = mailbox id) of the alert de-duplication state. */
export const NOTIFY_STATE_KEY = 'notify-state';
/** Per-message notices per poll at most; the digest covers the rest (Exchange sends 30 a minute). */
export const PER_MESSAGE_MAX = 25;

/** Which failure kind (error code) has been alerted and not yet recovered. */
export interface NotifyState extends StateValue {
  /** Error code of the failure alerted and not yet recovered; null when no alert is outstanding. */
  alertedCode: string | null;
  /** ISO 8601 time the outstanding alert was enqueued; null when none. */
  alertedAt: string | null;
  /** Consecutive failures counted when it was alerted; 0 when none. */
  alertedFailures: number;
}

/** What notifications need from the process (a `Runtime` is one). */
export interface NotifyDeps {
  /** Holds the alert de-duplication state (`notify-state`) and, as fallback, the mailbox status. */
  readonly state: StateStore;
  /** Clock for the jobs' `createdAt` and `alertedAt`. */
  readonly now: () => Date;
  /** Default logger when the call gives none. */
  readonly logger: Logger;
  /** Opens queues by name; the notify queue is created if missing. */
  readonly storage: { queue(name: string): Promise<QueueClient> };
  /** Settings: only the notify queue's name is read. */
  readonly config: { readonly storage: { readonly notifyQueue: string } };
}

/** One ingested message, as notifications list it (the sink's `Delivered` is one). */
export interface IngestedMessage {
  /** Decoded Subject, or null when absent (cut and escaped downstream). */
  readonly subject: string | null;
  /** From addresses; only the first is shown. Empty when the message has none. */
  readonly from: ReadonlyArray<{ readonly name?: string | null; readonly address?: string | null }>;
  /** Raw size in bytes. */
  readonly size: number;
  /** Number of attachments written. */
  readonly attachments: number;
  /** The message's idempotency key. */
  readonly idempotencyKey: string;
  /** Blob prefix `<mailboxKey>/<idempotencyKey>` of its blobs. */
  readonly blobPrefix: string;
  /** Why parsing failed (delivered raw-only), or null. */
  readonly parseError: string | null;
}

/** What a finished poll tells notifications (the poll's `PollResult` is one). */
export interface PollOutcome {
  /** `ok` (also when stopped early), `failed`, or `leased` (another instance polled: nothing is sent). */
  readonly outcome: 'ok' | 'failed' | 'leased';
  /** Messages ingested by the poll, in order (also those before a failure). */
  readonly delivered: readonly IngestedMessage[];
  /** Wall time of the poll in milliseconds. */
  readonly durationMs: number;
  /** The failure, with its admin fix. */
  readonly error?: { readonly code: string; readonly message: string; readonly fix: string };
  /** The mailbox's status as recorded after this poll, when it could be. */
  readonly status?: { readonly consecutiveFailures: number; readonly lastSuccessAt: string | null };
}

/** The alert de-duplication state of `mailbox`, if any. */
export async function readNotifyState(deps: Pick<NotifyDeps, 'state'>, mailbox: MailboxConfig): Promise<NotifyState | undefined> {
  const v = (await deps.state.get<NotifyState>(mailbox.id, NOTIFY_STATE_KEY))?.value;
  // Table storage drops null properties: read them back as null.
  return v && { alertedCode: v.alertedCode ?? null, alertedAt: v.alertedAt ?? null, alertedFailures: v.alertedFailures ?? 0 };
}

function notified(d: IngestedMessage): NotifiedMessage {
  const f = d.from[0];
  const from = f ? (f.name ? `${f.name} <${f.address ?? ''}>` : (f.address ?? null)) : null;
  return {
    subject: clip(d.subject),
    from: clip(from),
    size: d.size,
    attachments: d.attachments,
    idempotencyKey: d.idempotencyKey,
    blobPrefix: d.blobPrefix,
    parseError: clip(d.parseError, 200),
  };
}

/**
 * After a poll, enqueues the notifications the mailbox's `notify` settings
 * ask for onto the notify queue (base64 JSON `postroom.notification.v1`):
 * a digest of what was ingested, per-message notices, a failure alert once
 * `failureThreshold` polls in a row failed, and a "recovered" notice when
 * an alerted mailbox polls fine again. An alert is sent once per failure
 * kind (error code) until recovery; that is recorded ETag-guarded in the
 * StateStore (partition = mailbox id, key `notify-state`) before the alert
 * is enqueued, so two writers cannot both alert.
 *
 * Returns the jobs enqueued. Throws if the queue or the state store fails;
 * callers on the poll path catch and log (a notification never fails a poll).
 *
 * @example
 * ```ts
 * const result = await pollMailbox(runtime, mailbox);
 * await notifyAfterPoll(runtime, mailbox, result, { logger });
 * ```
 */
export async function notifyAfterPoll(deps: NotifyDeps, mailbox: MailboxConfig, result: PollOutcome, options: { logger?: Logger } = {}): Promise<NotificationJob[]> {
  const notify = mailbox.notify;
  if (!notify || result.outcome === 'leased') return [];
  const log = options.logger ?? deps.logger;
  const base = jobBase(mailbox, deps.now().toISOString());
  const jobs = ingestJobs(notify, result, base, log, mailbox);
  const rec = await deps.state.get<NotifyState>(mailbox.id, NOTIFY_STATE_KEY);
  const change = await alertChange(deps, mailbox, result, rec?.value, base, log);
  let claimed: string | undefined;
  if (change) {
    try {
      claimed = await deps.state.put(mailbox.id, NOTIFY_STATE_KEY, change.next, rec?.etag ?? null);
      jobs.push(change.alert);
    } catch (e) {
      if (!isPostroomError(e, 'CheckpointConflict')) throw e;
      log.info('another writer recorded this alert first; not sending it twice', { mailbox: mailbox.id, kind: change.alert.kind });
    }
  }
  if (!jobs.length) return jobs;
  try {
    const queue = await deps.storage.queue(deps.config.storage.notifyQueue);
    await Promise.all(jobs.map((j) => queue.sendMessage(encodeNotificationJob(j))));
  } catch (e) {
    // The alert was recorded but not enqueued: undo it, so that the next failing poll alerts again.
    if (claimed !== undefined) {
      const previous = rec?.value ?? { alertedCode: null, alertedAt: null, alertedFailures: 0 };
      await deps.state
        .put(mailbox.id, NOTIFY_STATE_KEY, previous, claimed)
        .catch((e2: unknown) => log.warn('alert state could not be reverted', { mailbox: mailbox.id, error: e2 as Error }));
    }
    throw e;
  }
  log.info(`enqueued ${jobs.length} notification(s)`, { mailbox: mailbox.id, kinds: jobs.map((j) => j.kind).join(',') });
  return jobs;
}

type JobBase = () => Pick<NotificationJob, 'schema' | 'id' | 'mailboxId' | 'mailbox' | 'createdAt'>;

function jobBase(mailbox: MailboxConfig, now: string): JobBase {
  return () => ({ schema: NOTIFICATION_SCHEMA, id: randomUUID(), mailboxId: mailbox.id, mailbox: mailbox.address, createdAt: now });
}

/** The digest and per-message notices for what the poll ingested. */
function ingestJobs(notify: NonNullable<MailboxConfig['notify']>, result: PollOutcome, base: JobBase, log: Logger, mailbox: MailboxConfig): NotificationJob[] {
  const jobs: NotificationJob[] = [];
  const { delivered } = result;
  if (notify.digest && delivered.length) {
    const data = {
      count: delivered.length,
      totalBytes: delivered.reduce((a, d) => a + d.size, 0),
      messages: delivered.map(notified),
      omitted: 0,
      outcome: result.outcome,
      durationMs: result.durationMs,
    };
    jobs.push(fitDigest({ ...base(), kind: 'digest', data }));
  }
  if (notify.perMessage) {
    for (const d of delivered.slice(0, PER_MESSAGE_MAX)) jobs.push({ ...base(), kind: 'message', data: notified(d) });
    if (delivered.length > PER_MESSAGE_MAX) {
      log.warn(`per-message notices capped at ${PER_MESSAGE_MAX} for this poll`, { mailbox: mailbox.id, delivered: delivered.length });
    }
  }
  return jobs;
}

/**
 * A failure alert once `failureThreshold` polls in a row failed (once per
 * failure kind until recovery), or a "recovered" notice: with the state to record first.
 */
async function alertChange(
  deps: NotifyDeps,
  mailbox: MailboxConfig,
  result: PollOutcome,
  prev: NotifyState | undefined,
  base: JobBase,
  log: Logger,
): Promise<{ next: NotifyState; alert: NotificationJob } | undefined> {
  const threshold = mailbox.notify!.failureThreshold;
  if (result.outcome === 'ok' && prev?.alertedCode) {
    const data = { code: prev.alertedCode, alertedAt: prev.alertedAt, delivered: result.delivered.length };
    return { next: { alertedCode: null, alertedAt: null, alertedFailures: 0 }, alert: { ...base(), kind: 'recovered', data } };
  }
  if (result.outcome !== 'failed' || !result.error) return undefined;
  const { code } = result.error;
  const failures = result.status?.consecutiveFailures ?? (await readStatus(deps.state, mailbox))?.consecutiveFailures ?? 0;
  if (failures < threshold) return undefined;
  if (prev?.alertedCode === code) {
    log.debug('failure already alerted; not alerting again until recovery', { mailbox: mailbox.id, code });
    return undefined;
  }
  const job = base();
  const data = { code, message: clip(result.error.message, 2000)!, fix: result.error.fix, consecutiveFailures: failures, lastSuccessAt: result.status?.lastSuccessAt ?? null };
  return { next: { alertedCode: code, alertedAt: job.createdAt, alertedFailures: failures }, alert: { ...job, kind: 'failure', data } };
}
