/**
 * Notifications: the poll enqueues jobs on the notify queue
 * (`notifyAfterPoll`), the queue-triggered `sendNotification` function
 * sends them over SMTP with app-only XOAUTH2 (`handleNotificationJob`).
 * Nothing here depends on the poll: it takes its own input types.
 */
export { notifyAfterPoll, readNotifyState, NOTIFY_STATE_KEY, PER_MESSAGE_MAX, type NotifyState, type NotifyDeps, type PollOutcome, type IngestedMessage } from './enqueue.js';
export { handleNotificationJob, type SendNotificationOptions, type SendDeps, type NotificationOutcome } from './send.js';
export {
  NOTIFICATION_SCHEMA,
  MAX_NOTIFICATION_JSON_BYTES,
  encodeNotificationJob,
  parseNotificationJob,
  fitDigest,
  type NotificationJob,
  type NotificationKind,
  type NotifiedMessage,
  type DigestData,
  type FailureData,
  type RecoveredData,
} from './job.js';
export { renderNotification, escapeHtml, headerSafe, formatBytes, type RenderedNotification } from './render.js';
export {
  createSmtpSender,
  SMTP_MAX_CONNECTIONS,
  SMTP_MESSAGES_PER_MINUTE,
  type SmtpSender,
  type SmtpSenderDeps,
  type SmtpSenderOptions,
  type OutgoingMail,
  type SendResult,
} from './smtp.js';
export { mapSmtpError } from './smtp-errors.js';
export { createRateLimiter, type RateLimiter, type RateLimiterOptions } from './rate-limit.js';
