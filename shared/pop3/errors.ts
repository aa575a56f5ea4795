import { PostroomError, redact } from '../errors.js';
import { exchangeBackoffMs, isTlsError } from '../net-errors.js';

export { isTlsError } from '../net-errors.js';

/** RFC 2449 §8 response codes (and RFC 3206's SYS/TEMP, SYS/PERM, AUTH) lead the text in brackets. */
const RESP_CODE_RE = /^\[([A-Za-z0-9][A-Za-z0-9/-]*)\]\s*/;
const EXPIRED_RE = /AccessTokenExpired/i;
// Exchange: authenticated, but the app has no FullAccess on the mailbox named in user=.
const NOT_CONNECTED_RE = /authenticated but not connected/i;

/** The RFC 2449 response code at the start of a `-ERR` text, upper-cased (`IN-USE`, `SYS/TEMP`, ...). */
export function responseCodeOf(text: string): string | undefined {
  return RESP_CODE_RE.exec(text)?.[1]?.toUpperCase();
}

/** What `errorFromReply` needs to know about the command a `-ERR` answered. */
export interface ReplyErrorContext {
  /** The command, for the message (never its arguments when they are secret). */
  readonly command: string;
  /** The mailbox address, as the error's `subject`; absent: the error names no mailbox. */
  readonly subject?: string;
  /** Whether the reply answers an authentication exchange. */
  readonly auth?: boolean;
}

/** Maps a `-ERR` reply (or an unexpected `+` where it does not belong) to a coded error. */
export function errorFromReply(text: string, ctx: ReplyErrorContext): PostroomError {
  const responseText = redact(text);
  const serverResponseCode = responseCodeOf(text);
  const base = { subject: ctx.subject, responseText, serverResponseCode };
  const backoff = exchangeBackoffMs(text);
  if (backoff !== undefined) {
    return new PostroomError('Throttled', `${ctx.command}: ${responseText}`, { ...base, retryAfterMs: backoff });
  }
  if (EXPIRED_RE.test(text)) return new PostroomError('SessionExpired', `${ctx.command}: ${responseText}`, base);
  if (NOT_CONNECTED_RE.test(text)) return new PostroomError('MailboxNotConnected', `${ctx.command}: ${responseText}`, base);
  if (ctx.auth) {
    // IN-USE (maildrop locked), LOGIN-DELAY and SYS/* are not verdicts on the credentials.
    const notAboutCredentials = serverResponseCode !== undefined && serverResponseCode !== 'AUTH' && serverResponseCode !== 'SYS/PERM';
    if (!notAboutCredentials) return new PostroomError('AuthenticationFailed', `${ctx.command}: ${responseText}`, base);
  }
  const retryable = serverResponseCode === 'SYS/PERM' ? false : undefined;
  return new PostroomError('CommandFailed', `${ctx.command}: ${responseText}`, { ...base, retryable });
}

/** Maps a socket-level error to `TlsFailed` or `ConnectionFailed`, keeping it as the cause. */
export function errorFromSocket(e: unknown, subject: string | undefined, where: string): PostroomError {
  if (e instanceof PostroomError) return e;
  const err = (e ?? {}) as { code?: unknown; message?: unknown };
  const code = typeof err.code === 'string' ? err.code : undefined;
  const msg = redact(String(err.message ?? e));
  if (isTlsError(err)) return new PostroomError('TlsFailed', `${where}: ${msg}`, { subject, cause: e });
  return new PostroomError('ConnectionFailed', `${where}: ${code ?? msg}${code ? ` (${msg})` : ''}`, { subject, cause: e });
}
