/**
 * What IMAP and POP3 both need to read from a failure: Exchange's throttling
 * reply and whether a socket error is the network or TLS.
 */

// Exchange Online (reported): "Request is throttled. Suggested Backoff Time: 12000 milliseconds".
const THROTTLED_RE = /Request is throttled\.?\s*Suggested Backoff Time:\s*(\d+)\s*milli/i;

/** The back-off Exchange asked for in a throttling reply, in milliseconds. */
export function exchangeBackoffMs(text: string): number | undefined {
  const m = THROTTLED_RE.exec(text);
  return m ? Number(m[1]) : undefined;
}

const CONNECT_CODES = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'ECONNABORTED',
  'EHOSTDOWN',
  'ENETDOWN',
  'EADDRNOTAVAIL',
]);

/** Whether a socket error code means the server could not be reached or the connection broke. */
export function isConnectError(e: { code?: unknown }): boolean {
  return typeof e.code === 'string' && CONNECT_CODES.has(e.code);
}

/** Whether a socket error comes from TLS (handshake, certificate, protocol version). */
export function isTlsError(e: { code?: unknown; message?: unknown }): boolean {
  const code = typeof e.code === 'string' ? e.code : '';
  if (CONNECT_CODES.has(code)) return false;
  return (
    /^ERR_(SSL|TLS)_/.test(code) ||
    /CERT|^UNABLE_TO_|^SELF_SIGNED|^HOSTNAME_MISMATCH|^DEPTH_ZERO/.test(code) ||
    /SSL routines|certificate|TLS/i.test(typeof e.message === 'string' ? e.message : '')
  );
}
