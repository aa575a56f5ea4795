import { PostroomError } from '../errors.js';
import { exchangeBackoffMs, isConnectError, isTlsError } from '../net-errors.js';

/**
 * Maps an imapflow (or socket) error to a coded PostroomError whose message
 * names the admin step that fixes it. Server texts are Exchange's where
 * known: see docs/troubleshooting.md.
 */
export function mapImapError(e: unknown, subject: string): PostroomError {
  if (e instanceof PostroomError) return e;
  const err = (e ?? {}) as {
    code?: string;
    message?: string;
    response?: unknown;
    responseText?: string;
    serverResponseCode?: string;
    authenticationFailed?: boolean;
    reason?: string;
    /** imapflow: the server's back-off hint, and how much of it imapflow already waited before rejecting. */
    throttleReset?: number;
    throttleWaited?: number;
  };
  const text = [typeof err.response === 'string' ? err.response : '', err.responseText ?? '', err.reason ?? '', err.message ?? ''].filter(Boolean).join(' | ');
  const opts = { subject, responseText: text.slice(0, 500), serverResponseCode: err.serverResponseCode ?? err.code, cause: e };
  const delay = err.throttleReset ?? exchangeBackoffMs(text);
  if (delay !== undefined) {
    // imapflow parks the connection for (part of) the hint before it rejects: only the rest is left to wait.
    const left = Math.max(0, delay - (err.throttleWaited ?? 0));
    return new PostroomError('Throttled', `the server asked to back off ${delay} ms`, { ...opts, retryAfterMs: left });
  }
  if (/AccessTokenExpired/i.test(text)) return new PostroomError('SessionExpired', 'the server said AccessTokenExpired', opts);
  if (/not connected/i.test(text)) return new PostroomError('MailboxNotConnected', `the server said "${text.slice(0, 200)}"`, opts);
  if (err.authenticationFailed || /AUTHENTICATE failed|AUTHENTICATIONFAILED|Authentication fail/i.test(text)) {
    return new PostroomError('AuthenticationFailed', `the server said "${text.slice(0, 200)}"`, opts);
  }
  if (/NONEXISTENT|Mailbox doesn't exist|not exist|no such (mailbox|folder)/i.test(text)) return new PostroomError('FolderNotFound', text.slice(0, 200), opts);
  const code = err.code ?? '';
  if (isConnectError(err) || /ECONNREFUSED|ENOTFOUND|getaddrinfo/.test(text))
    return new PostroomError('ConnectionFailed', `${code || 'network error'}: ${(err.message ?? '').slice(0, 200)}`, opts);
  if (isTlsError(err)) return new PostroomError('TlsFailed', `${code}: ${(err.message ?? '').slice(0, 200)}`, opts);
  if (/timeout/i.test(`${code} ${text}`)) return new PostroomError('Timeout', text.slice(0, 200), opts);
  if (code === 'NoConnection' || /Connection not available|closed/i.test(text)) return new PostroomError('ConnectionFailed', `the connection closed: ${text.slice(0, 200)}`, opts);
  if (/Command failed/.test(text)) return new PostroomError('CommandFailed', text.slice(0, 200), opts);
  return new PostroomError('ProtocolError', text.slice(0, 200) || 'unknown IMAP error', opts);
}
