import { randomUUID } from 'node:crypto';
import type { MailboxConfig } from '../config/index.js';
import { isPostroomError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Runtime } from '../runtime.js';
import type { PollResult } from '../poll/poll-mailbox.js';
import type { StateValue } from '../state.js';
import { readStatus } from '../poll/status.js';
import { clip, encodeNotificationJob, fitDigest, NOTIFICATION_SCHEMA, type NotificationJob, type NotifiedMessage } from './job.js';

/** StateStore key (partition = mailbox id) of the alert de-duplication state. */
export const NOTIFY_STATE_KEY = 'notify-state';
/** Per-message notices per poll at most; the digest covers the rest (Exchange sends 30 a minute). */
export const PER_MESSAGE_MAX = 25;

/** Which failure kind (error code) has been alerted and not yet recovered. */
export interface NotifyState extends StateValue {
  alertedCode: string | null;
  alertedAt: string | null;
  alertedFailures: number;
}

export async function readNotifyState(runtime: Runtime, mailbox: MailboxConfig): Promise<NotifyState | undefined> {
  const v = (await runtime.state.get<NotifyState>(mailbox.id, NOTIFY_STATE_KEY))?.value;
  // Table storage drops null properties: read them back as null.
  return v && { alertedCode: v.alertedCode ?? null, alertedAt: v.alertedAt ?? null, alertedFailures: v.alertedFailures ?? 0 };
}

function notified(d: PollResult['delivered'][number]): NotifiedMessage {
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
export async function notifyAfterPoll(runtime: Runtime, mailbox: MailboxConfig, result: PollResult, options: { logger?: Logger } = {}): Promise<NotificationJob[]> {
  const notify = mailbox.notify;
  if (!notify || result.outcome === 'leased') return [];
  const log = options.logger ?? runtime.logger;
  const now = runtime.now().toISOString();
  const base = () => ({ schema: NOTIFICATION_SCHEMA, id: randomUUID(), mailboxId: mailbox.id, mailbox: mailbox.address, createdAt: now }) as const;
  const jobs: NotificationJob[] = [];

  if (notify.digest && result.delivered.length) {
    jobs.push(
      fitDigest({
        ...base(),
        kind: 'digest',
        data: {
          count: result.delivered.length,
          totalBytes: result.delivered.reduce((a, d) => a + d.size, 0),
          messages: result.delivered.map(notified),
          omitted: 0,
          outcome: result.outcome,
          durationMs: result.durationMs,
        },
      }),
    );
  }
  if (notify.perMessage) {
    for (const d of result.delivered.slice(0, PER_MESSAGE_MAX)) jobs.push({ ...base(), kind: 'message', data: notified(d) });
    if (result.delivered.length > PER_MESSAGE_MAX) {
      log.warn(`per-message notices capped at ${PER_MESSAGE_MAX} for this poll`, { mailbox: mailbox.id, delivered: result.delivered.length });
    }
  }

  const rec = await runtime.state.get<NotifyState>(mailbox.id, NOTIFY_STATE_KEY);
  let next: NotifyState | undefined;
  let alert: NotificationJob | undefined;
  if (result.outcome === 'failed' && result.error) {
    const code = result.error.code;
    const failures = result.status?.consecutiveFailures ?? (await readStatus(runtime.state, mailbox))?.consecutiveFailures ?? 0;
    if (failures >= notify.failureThreshold && rec?.value.alertedCode !== code) {
      next = { alertedCode: code, alertedAt: now, alertedFailures: failures };
      alert = {
        ...base(),
        kind: 'failure',
        data: {
          code,
          message: clip(result.error.message, 2000)!,
          fix: result.error.fix,
          consecutiveFailures: failures,
          lastSuccessAt: result.status?.lastSuccessAt ?? null,
        },
      };
    } else if (failures >= notify.failureThreshold) {
      log.debug('failure already alerted; not alerting again until recovery', { mailbox: mailbox.id, code });
    }
  } else if (result.outcome === 'ok' && rec?.value.alertedCode) {
    next = { alertedCode: null, alertedAt: null, alertedFailures: 0 };
    alert = { ...base(), kind: 'recovered', data: { code: rec.value.alertedCode, alertedAt: rec.value.alertedAt, delivered: result.delivered.length } };
  }

  let claimed: string | undefined;
  if (next && alert) {
    try {
      claimed = await runtime.state.put(mailbox.id, NOTIFY_STATE_KEY, next, rec?.etag ?? null);
      jobs.push(alert);
    } catch (e) {
      if (!isPostroomError(e, 'CheckpointConflict')) throw e;
      log.info('another writer recorded this alert first; not sending it twice', { mailbox: mailbox.id, kind: alert.kind });
    }
  }
  if (!jobs.length) return jobs;

  const queue = await runtime.storage.queue(runtime.config.storage.notifyQueue);
  try {
    await Promise.all(jobs.map((j) => queue.sendMessage(encodeNotificationJob(j))));
  } catch (e) {
    // The alert was recorded but not enqueued: undo it, so that the next failing poll alerts again.
    if (claimed !== undefined) {
      await runtime.state
        .put(mailbox.id, NOTIFY_STATE_KEY, rec?.value ?? { alertedCode: null, alertedAt: null, alertedFailures: 0 }, claimed)
        .catch((e2: unknown) => log.warn('alert state could not be reverted', { mailbox: mailbox.id, error: e2 as Error }));
    }
    throw e;
  }
  log.info(`enqueued ${jobs.length} notification(s)`, { mailbox: mailbox.id, kinds: jobs.map((j) => j.kind).join(',') });
  return jobs;
}
