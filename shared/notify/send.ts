import type { Logger } from '../logger.js';
import type { Runtime } from '../runtime.js';
import { encodeNotificationJob, parseNotificationJob, type NotificationJob } from './job.js';
import { renderNotification } from './render.js';
import { getSmtpSender, mapSmtpError, type SendResult, type SmtpSenderOptions } from './smtp.js';

export interface SendNotificationOptions {
  logger?: Logger;
  dequeueCount?: number;
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
export async function handleNotificationJob(
  runtime: Runtime,
  raw: unknown,
  options: SendNotificationOptions = {},
): Promise<(SendResult & { job: NotificationJob }) | undefined> {
  const log = options.logger ?? runtime.logger;
  const job = parseNotificationJob(raw);
  const mailbox = runtime.config.mailboxes.find((m) => m.id === job.mailboxId);
  if (!mailbox?.notify) {
    log.warn('notification names a mailbox without notify settings; dropping it', { mailboxId: job.mailboxId, kind: job.kind, id: job.id });
    return undefined;
  }
  const { notify } = mailbox;
  const rendered = renderNotification(job, { subjectPrefix: notify.subjectPrefix, container: runtime.config.storage.blobContainer });
  try {
    const sender = await getSmtpSender(runtime, mailbox.app, notify.from, options.smtp);
    const result = await sender.send(
      {
        to: notify.to,
        subject: rendered.subject,
        text: rendered.text,
        html: rendered.html,
        messageId: `${job.id}@postroom.invalid`,
        headers: {
          // RFC 3834: automatic mail; Exchange: no out-of-office replies to it.
          'Auto-Submitted': 'auto-generated',
          'X-Auto-Response-Suppress': 'All',
          'X-Postroom-Notification': job.kind,
        },
      },
      { signal: options.signal, logger: log },
    );
    log.info(`notification sent: ${job.kind}`, { mailbox: mailbox.id, id: job.id, to: notify.to.length, tries: result.tries });
    return { ...result, job };
  } catch (e) {
    const err = mapSmtpError(e, `${notify.from} (notifications of ${mailbox.id})`);
    const deferrals = job.deferrals ?? 0;
    if (options.requeue && err.code === 'SmtpConcurrencyLimit' && deferrals < MAX_DEFERRALS) {
      const seconds = Math.min(MAX_DEFER_SECONDS, Math.max(1, Math.ceil((err.retryAfterMs ?? 60_000) / 1000)));
      const queue = await runtime.storage.queue(runtime.config.storage.notifyQueue);
      await queue.sendMessage(encodeNotificationJob({ ...job, deferrals: deferrals + 1 }), { visibilityTimeout: seconds });
      log.warn(`notification ${job.kind} deferred ${seconds} s: ${err.code}`, { mailbox: mailbox.id, id: job.id, deferrals: deferrals + 1 });
      return { deferred: true, job } as unknown as SendResult & { job: NotificationJob };
    }
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
