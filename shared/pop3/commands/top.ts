import type { Pop3CommandOptions, Pop3Connection } from '../connection.js';
import { checkMsg, expectOk } from './common.js';

const CRLF = Buffer.from('\r\n');

/** TOP: the header and the first `lines` body lines, dot-unstuffed, CRLF line ends (buffered, capped). */
export async function top(conn: Pop3Connection, msg: number, lines: number, opts: Pop3CommandOptions = {}): Promise<Buffer> {
  checkMsg(msg);
  if (!Number.isSafeInteger(lines) || lines < 0) throw new TypeError('lines must be a non-negative integer');
  const reply = expectOk(await conn.exchange('TOP', opts, (io) => io.send(`TOP ${msg} ${lines}`, 'multi')), 'TOP', conn.subject);
  const parts: Buffer[] = [];
  for (const l of reply.lines ?? []) parts.push(l, CRLF);
  return Buffer.concat(parts);
}
