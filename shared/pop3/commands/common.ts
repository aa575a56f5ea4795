import { PostroomError } from '../../errors.js';
import { errorFromReply } from '../errors.js';
import type { Pop3Reply } from '../parser.js';

/** Returns the reply when it is `+OK`; maps `-ERR` (and a stray `+`) to coded errors. */
export function expectOk(reply: Pop3Reply, command: string, subject: string | undefined, auth = false): Pop3Reply {
  if (reply.status === '+OK') return reply;
  if (reply.status === '-ERR') throw errorFromReply(reply.text, { command, subject, auth });
  throw new PostroomError('ProtocolError', `${command}: unexpected continuation`, { subject });
}

/** Validates a message number argument (RFC 1939: 1-based, decimal). */
export function checkMsg(n: number, what = 'message number'): number {
  if (!Number.isSafeInteger(n) || n < 1) throw new TypeError(`${what} must be a positive integer`);
  return n;
}

const DECIMAL_RE = /^[0-9]{1,15}$/;

/** Parses a non-negative decimal (RFC 1939 numbers); throws `ProtocolError` otherwise. */
export function parseNumber(s: string | undefined, what: string, subject: string | undefined): number {
  if (s === undefined || !DECIMAL_RE.test(s)) {
    throw new PostroomError('ProtocolError', `${what}: expected a number, got ${JSON.stringify(String(s).slice(0, 40))}`, { subject });
  }
  return Number(s);
}

/** Splits a reply line into fields on runs of spaces. */
export function fields(line: Buffer | string): string[] {
  const s = typeof line === 'string' ? line : line.toString('latin1');
  return s.trim().split(/ +/);
}
