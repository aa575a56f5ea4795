import type { MailboxConfig } from '../config/index.js';
import { fixContextOfMailbox } from '../diagnose/context.js';
import { PostroomError, withContext } from '../errors.js';

/**
 * A library's or the platform's error, as the poll reports it. A
 * `TypeError` (or any other programming error) is a bug: it is rethrown as
 * it is, never dressed up as a retryable failure of the mailbox (jose's rule).
 */
export function asPostroomError(e: unknown, mailbox: MailboxConfig): PostroomError {
  // The fix is filled in with this mailbox's app, tenant and hosts.
  return withContext<PostroomError>(toPostroomError(e, mailbox), fixContextOfMailbox(mailbox));
}

function toPostroomError(e: unknown, mailbox: MailboxConfig): PostroomError {
  if (e instanceof PostroomError) return e;
  // fetch() reports a network failure as TypeError('fetch failed', { cause }): not a bug.
  const fetchFailed = e instanceof TypeError && e.message === 'fetch failed';
  if (!fetchFailed && (e instanceof TypeError || e instanceof RangeError || e instanceof ReferenceError || e instanceof SyntaxError)) throw e;
  if ((e as Error)?.name === 'AbortError' || (e instanceof DOMException && e.name === 'AbortError')) {
    return new PostroomError('Aborted', 'the poll was aborted', { subject: mailbox.id, cause: e });
  }
  const what = fetchFailed ? 'ConnectionFailed' : 'ProtocolError';
  return new PostroomError(what, `unexpected: ${(e as Error)?.message ?? String(e)}`, { subject: mailbox.id, cause: e });
}
