import type { QueueClient } from '@azure/storage-queue';
import type { AppConfig, MailboxConfig } from '../config/index.js';
import type { Logger } from '../logger.js';
import { encodeNotificationJob, parseNotificationJob, type NotificationJob } from './job.js';
import { renderNotification } from './render.js';
import type { SendResult, SmtpSender, SmtpSenderOptions } from './smtp.js';
import { mapSmtpError } from './smtp-errors.js';

/** What sending needs from the process (a `Runtime` is one). */
export interface SendDeps {
  /** Settings: the mailboxes (a job names its mailbox by id), the notify queue (deferrals) and the blob container (named in notices). */
  readonly config: { readonly mailboxes: readonly MailboxConfig[]; readonly storage: { readonly notifyQueue: string; readonly blobContainer: string } };
  /** Default logger when the call gives none. */
  readonly logger: Logger;
  /** Opens the notify queue, to put a deferred job back. */
  readonly storage: { queue(name: string): Promise<QueueClient> };
  /** The pooled sender for `from` with the app's token (one per app and sender mailbox). */
  smtpSender(app: AppConfig, from: string, options?: SmtpSenderOptions): Promise<SmtpSender>;
}

/** How a notification job ended: sent, or put back on the queue to wait out a server back-off. */
export type NotificationOutcome =
  (SendResult & { readonly deferred: false; readonly job: NotificationJob }) | { readonly deferred: true; readonly job: NotificationJob; readonly delaySeconds: number };

/** Options of {@link handleNotificationJob}. */
export interface SendNotificationOptions {
  /** Logger of this job (e.g. the invocation's); default the deps' logger. */
  logger?: Logger;
  /** The queue's dequeue count of this job (for the log). */
  dequeueCount?: number;
  /** Abandons the send (the pooled connection stays usable). */
  signal?: AbortSignal;
  /** Applies when this runtime's sender for the mailbox is first made. */
  smtp?: SmtpSenderOptions;
  /**
   * When the server asks to back off (`432 4.3.2`), put the job back on the
   * notify queue, invisible for the back-off, and return instead of throwing:
   * the host's retries (30 s apart, 5 at most) would otherwise poison a job
   * that only had to wait. At most `MAX_DEFERRALS` times; then it throws.
   */
  requeue?: boolean;
}

export const MAX_DEFERRALS = 10;
const MAX_DEFER_SECONDS = 600;

/**
 * Sends one notification job from the notify queue over SMTP (app-only
 * XOAUTH2 as `notify.from`). Returns undefined, without sending, when the
 * mailbox or its `notify` settings are gone. Throws a coded PostroomError
 * on any failure so that the queue retries and finally poisons the job;
 * `432 4.3.2` comes back retryable with `retryAfterMs`.
 */
export async function handleNotificationJob(deps: SendDeps, raw: unknown, options: SendNotificationOptions = {}): Promise<NotificationOutcome | undefined> {
  const log = options.logger ?? deps.logger;
  const job = parseNotificationJob(raw);
  const mailbox = deps.config.mailboxes.find((m) => m.id === job.mailboxId);
  if (!mailbox?.notify) {
    log.warn('notification names a mailbox without notify settings; dropping it', { mailboxId: job.mailboxId, kind: job.kind, id: job.id });
    return undefined;
  }
  const { notify } = mailbox;
  const rendered = renderNotification(job, { subjectPrefix: notify.subjectPrefix, container: deps.config.storage.blobContainer });
  try {
    const sender = await deps.smtpSender(mailbox.app, notify.from, options.smtp);
    const result = await sender.send(
      {
        to: notify.to,
        subject: rendered.subject,
        text: rendered.text,
        html: rendered.html,
        messageId: `${job.id}@postroom.invalid`,
        // RFC 3834: automatic mail; Exchange: no out-of-office replies to it.
        headers: { 'Auto-Submitted': 'auto-generated', 'X-Auto-Response-Suppress': 'All', 'X-Postroom-Notification': job.kind },
      },
      { signal: options.signal, logger: log },
    );
    log.info(`notification sent: ${job.kind}`, { mailbox: mailbox.id, id: job.id, to: notify.to.length, tries: result.tries });
    return { ...result, deferred: false, job };
  } catch (e) {
    const err = mapSmtpError(e, `${notify.from} (notifications of ${mailbox.id})`);
    const deferrals = job.deferrals ?? 0;
    if (options.requeue && err.code === 'SmtpConcurrencyLimit' && deferrals < MAX_DEFERRALS) return defer(deps, job, err.retryAfterMs, log);
    log.error(`notification ${job.kind} could not be sent: ${err.message}`, {
      mailbox: mailbox.id,
      id: job.id,
      code: err.code,
      retryable: err.retryable,
      retryAfterMs: err.retryAfterMs,
      dequeueCount: options.dequeueCount ?? 1,
    });
    throw err;
  }
}

/** Puts the job back on the notify queue, invisible for the server's back-off. */
async function defer(deps: SendDeps, job: NotificationJob, retryAfterMs: number | undefined, log: Logger): Promise<NotificationOutcome> {
  const delaySeconds = Math.min(MAX_DEFER_SECONDS, Math.max(1, Math.ceil((retryAfterMs ?? 60_000) / 1000)));
  const deferrals = (job.deferrals ?? 0) + 1;
  const queue = await deps.storage.queue(deps.config.storage.notifyQueue);
  await queue.sendMessage(encodeNotificationJob({ ...job, deferrals }), { visibilityTimeout: delaySeconds });
  log.warn(`notification ${job.kind} deferred ${delaySeconds} s: SmtpConcurrencyLimit`, { mailboxId: job.mailboxId, id: job.id, deferrals });
  return { deferred: true, job, delaySeconds };
}
