import type { Pop3CommandOptions, Pop3Connection } from '../connection.js';
import { expectOk, fields, parseNumber } from './common.js';

/** The STAT reply: how much the maildrop holds. */
export interface Pop3Stat {
  /** Messages in the maildrop (not counting those marked deleted). */
  readonly count: number;
  /** Their total size in octets. */
  readonly size: number;
}

export async function stat(conn: Pop3Connection, opts: Pop3CommandOptions = {}): Promise<Pop3Stat> {
  const reply = expectOk(await conn.exchange('STAT', opts, (io) => io.send('STAT', 'single')), 'STAT', conn.subject);
  const [count, size] = fields(reply.text);
  return { count: parseNumber(count, 'STAT', conn.subject), size: parseNumber(size, 'STAT', conn.subject) };
}
