import { PostroomError } from '../../errors.js';
import type { Pop3CommandOptions, Pop3Connection } from '../connection.js';
import { checkMsg, expectOk, fields, parseNumber } from './common.js';

/** One line of a UIDL reply: a message's session number and its stable unique id. */
export interface Pop3UidlEntry {
  /** Message number in this session. */
  readonly msg: number;
  /** The unique id, stable across sessions (RFC 1939: 1-70 characters 0x21-0x7E). */
  readonly uid: string;
}

// RFC 1939 caps unique-ids at 70 octets; allow some slack for servers that exceed it.
const UID_RE = /^[\x21-\x7e]{1,256}$/;

/** Parses one `msg uid` line (a multi-line body line, or a single reply's text). */
export function parseUidlLine(line: Buffer | string, subject?: string): Pop3UidlEntry {
  const f = fields(line);
  if (f.length !== 2 || !UID_RE.test(f[1])) {
    throw new PostroomError('ProtocolError', `UIDL: malformed line ${JSON.stringify(String(line).slice(0, 80))}`, { subject });
  }
  return { msg: parseNumber(f[0], 'UIDL', subject), uid: f[1] };
}

/** Parses UIDL's body lines. */
export function parseUidl(lines: readonly (Buffer | string)[], subject?: string): Pop3UidlEntry[] {
  return lines.map((l) => parseUidlLine(l, subject));
}

/** UIDL for every message (multi-line). */
export async function uidl(conn: Pop3Connection, opts: Pop3CommandOptions = {}): Promise<Pop3UidlEntry[]> {
  const reply = expectOk(await conn.exchange('UIDL', opts, (io) => io.send('UIDL', 'multi')), 'UIDL', conn.subject);
  return parseUidl(reply.lines ?? [], conn.subject);
}

/** UIDL of one message (single line). */
export async function uidlOne(conn: Pop3Connection, msg: number, opts: Pop3CommandOptions = {}): Promise<Pop3UidlEntry> {
  checkMsg(msg);
  const reply = expectOk(await conn.exchange('UIDL', opts, (io) => io.send(`UIDL ${msg}`, 'single')), 'UIDL', conn.subject);
  return parseUidlLine(reply.text, conn.subject);
}
