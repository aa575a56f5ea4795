import { PostroomError } from '../errors.js';

/** Exchange gives no back-off with 432 4.3.2; its limits are per minute, so wait about one. */
export const CONCURRENCY_BACKOFF_MS = 60_000;

/** What nodemailer puts on its errors. */
interface NodemailerError extends Error {
  code?: string;
  response?: string;
  responseCode?: number;
  command?: string;
}

const TLS_CODES = /^(ETLS|CERT_|UNABLE_TO_|DEPTH_ZERO|SELF_SIGNED|ERR_TLS|ERR_SSL|HOSTNAME_MISMATCH|ERR_TLS_CERT_ALTNAME_INVALID)/;
const NET_CODES = new Set(['ECONNECTION', 'ETIMEDOUT', 'ESOCKET', 'EDNS', 'ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ENOTFOUND', 'EPIPE']);

/**
 * Maps a nodemailer error (with Exchange Online's reply) to a coded
 * PostroomError whose `fix` names the admin step.
 */
export function mapSmtpError(e: unknown, subject: string): PostroomError {
  if (e instanceof PostroomError) return e;
  const err = (e ?? {}) as NodemailerError;
  if (err.name === 'AbortError' || err.name === 'TimeoutError') return new PostroomError('Aborted', err.message, { subject, cause: e });
  const text = String(err.response ?? '')
    .split(/\r?\n/)[0]
    .slice(0, 400);
  const rc = err.responseCode;
  const enhanced = /\b([245]\.\d{1,3}\.\d{1,3})\b/.exec(text)?.[1];
  const common = { subject, responseText: text || undefined, serverResponseCode: enhanced ?? (rc ? String(rc) : err.code), cause: e };
  const detail = text || `${err.code ?? 'error'}: ${err.message ?? String(e)}`;
  if (enhanced === '5.7.139' || /SmtpClientAuthentication is disabled/i.test(text)) return new PostroomError('SmtpAuthDisabled', detail, common);
  if (rc === 432 || enhanced === '4.3.2') {
    // Jitter so that instances refused together do not come back together.
    const retryAfterMs = Math.round(CONCURRENCY_BACKOFF_MS * (0.75 + Math.random() * 0.5));
    return new PostroomError('SmtpConcurrencyLimit', detail, { ...common, retryAfterMs });
  }
  if (/SendAsDenied/i.test(text) || enhanced === '5.7.60') return new PostroomError('SendAsDenied', detail, common);
  if (err.code === 'EAUTH' || rc === 535) return new PostroomError('AuthenticationFailed', detail, common);
  if (TLS_CODES.test(String(err.code ?? '')) || /certificate|STARTTLS|TLS/i.test(err.message ?? '')) {
    if (!(rc && rc >= 400)) return new PostroomError('TlsFailed', detail, common);
  }
  if (NET_CODES.has(String(err.code ?? ''))) return new PostroomError('ConnectionFailed', detail, common);
  if (rc && rc >= 500) return new PostroomError('SendFailed', detail, { ...common, retryable: false });
  return new PostroomError('SendFailed', detail, common);
}
