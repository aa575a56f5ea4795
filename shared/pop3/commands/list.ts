import { PostroomError } from '../../errors.js';
import type { Pop3CommandOptions, Pop3Connection } from '../connection.js';
import { checkMsg, expectOk, fields, parseNumber } from './common.js';

/** One line of a LIST reply: a message's number and size. */
export interface Pop3ListEntry {
  /** Message number in this session (1-based; numbers change between sessions). */
  readonly msg: number;
  /** Size in octets, as the server counts them (CRLF line ends). */
  readonly size: number;
}

/** Parses one `msg size` line; RFC 1939 allows more fields after the size. */
export function parseListLine(line: Buffer | string, subject?: string): Pop3ListEntry {
  const f = fields(line);
  if (f.length < 2) throw new PostroomError('ProtocolError', `LIST: malformed line ${JSON.stringify(String(line).slice(0, 80))}`, { subject });
  return { msg: parseNumber(f[0], 'LIST', subject), size: parseNumber(f[1], 'LIST', subject) };
}

/** LIST for every message (multi-line). */
export async function list(conn: Pop3Connection, opts: Pop3CommandOptions = {}): Promise<Pop3ListEntry[]> {
  const reply = expectOk(await conn.exchange('LIST', opts, (io) => io.send('LIST', 'multi')), 'LIST', conn.subject);
  return (reply.lines ?? []).map((l) => parseListLine(l, conn.subject));
}

/** LIST of one message (single line). */
export async function listOne(conn: Pop3Connection, msg: number, opts: Pop3CommandOptions = {}): Promise<Pop3ListEntry> {
  checkMsg(msg);
  const reply = expectOk(await conn.exchange('LIST', opts, (io) => io.send(`LIST ${msg}`, 'single')), 'LIST', conn.subject);
  return parseListLine(reply.text, conn.subject);
}
