import { PostroomError, redact } from '../errors.js';

/** RFC 2449 §8 response codes (and RFC 3206's SYS/TEMP, SYS/PERM, AUTH) lead the text in brackets. */
const RESP_CODE_RE = /^\[([A-Za-z0-9][A-Za-z0-9/-]*)\]\s*/;
// Exchange Online (reported): "Request is throttled. Suggested Backoff Time: 12000 milliseconds".
const THROTTLED_RE = /Request is throttled\.?\s*Suggested Backoff Time:\s*(\d+)\s*milli/i;
const EXPIRED_RE = /AccessTokenExpired/i;
// Exchange: authenticated, but the app has no FullAccess on the mailbox named in user=.
const NOT_CONNECTED_RE = /authenticated but not connected/i;

/** The RFC 2449 response code at the start of a `-ERR` text, upper-cased (`IN-USE`, `SYS/TEMP`, ...). */
export function responseCodeOf(text: string): string | undefined {
  return RESP_CODE_RE.exec(text)?.[1]?.toUpperCase();
}

export interface ReplyErrorContext {
  /** The command, for the message (never its arguments when they are secret). */
  readonly command: string;
  readonly subject?: string;
  /** Whether the reply answers an authentication exchange. */
  readonly auth?: boolean;
}

/** Maps a `-ERR` reply (or an unexpected `+` where it does not belong) to a coded error. */
export function errorFromReply(text: string, ctx: ReplyErrorContext): PostroomError {
  const responseText = redact(text);
  const serverResponseCode = responseCodeOf(text);
  const base = { subject: ctx.subject, responseText, serverResponseCode };
  const throttled = THROTTLED_RE.exec(text);
  if (throttled) {
    return new PostroomError('Throttled', `${ctx.command}: ${responseText}`, { ...base, retryAfterMs: Number(throttled[1]) });
  }
  if (EXPIRED_RE.test(text)) return new PostroomError('SessionExpired', `${ctx.command}: ${responseText}`, base);
  if (NOT_CONNECTED_RE.test(text)) return new PostroomError('MailboxNotConnected', `${ctx.command}: ${responseText}`, base);
  if (ctx.auth) {
    // IN-USE (maildrop locked), LOGIN-DELAY and SYS/* are not verdicts on the credentials.
    const notAboutCredentials =
      serverResponseCode !== undefined && serverResponseCode !== 'AUTH' && serverResponseCode !== 'SYS/PERM';
    if (!notAboutCredentials) return new PostroomError('AuthenticationFailed', `${ctx.command}: ${responseText}`, base);
  }
  const retryable = serverResponseCode === 'SYS/PERM' ? false : undefined;
  return new PostroomError('CommandFailed', `${ctx.command}: ${responseText}`, { ...base, retryable });
}

const CONNECT_CODES = new Set([
  'ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'ECONNRESET',
  'EPIPE', 'ETIMEDOUT', 'ECONNABORTED', 'EHOSTDOWN', 'ENETDOWN', 'EADDRNOTAVAIL',
]);

/** Whether a socket error comes from TLS (handshake, certificate, protocol version). */
export function isTlsError(e: { code?: unknown; message?: unknown }): boolean {
  const code = typeof e.code === 'string' ? e.code : '';
  if (CONNECT_CODES.has(code)) return false;
  return (
    /^ERR_(SSL|TLS)_/.test(code) ||
    /CERT|^UNABLE_TO_|^SELF_SIGNED|^HOSTNAME_MISMATCH|^DEPTH_ZERO/.test(code) ||
    /SSL routines|certificate|TLS/i.test(String(e.message ?? ''))
  );
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
