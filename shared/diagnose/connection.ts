/**
 * A connection that breaks after the session was open is not "could not be
 * reached": DNS, routing and the firewall evidently work. The IMAP/POP3/SMTP
 * error mappers know whether they were past login; they call this to say so.
 */
import { PostroomError } from '../errors.js';

/**
 * `err` re-coded as `ConnectionLost` when it is a `ConnectionFailed` that
 * happened after the session was established (`established`), else `err`
 * unchanged. Subject, server reply, context and cause are kept.
 *
 * @example
 * ```ts
 * // in imap/errors.ts, once the client has logged in:
 * return droppedAfterLogin(mapped, { established: client.authenticated === true, during: 'FETCH' });
 * ```
 */
export function droppedAfterLogin(err: PostroomError, o: { established: boolean; during?: string }): PostroomError {
  if (!o.established || err.code !== 'ConnectionFailed') return err;
  const during = o.during ? ` during ${o.during}` : '';
  return new PostroomError('ConnectionLost', `the session was open, then the connection dropped${during}: ${err.detail}`, {
    subject: err.subject,
    responseText: err.responseText,
    serverResponseCode: err.serverResponseCode,
    cause: err.cause ?? err,
    context: err.context,
  });
}
