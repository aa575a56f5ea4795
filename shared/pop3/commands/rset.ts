import type { Pop3CommandOptions, Pop3Connection } from '../connection.js';
import { expectOk } from './common.js';

/** Unmarks every message marked deleted in this session. */
export async function rset(conn: Pop3Connection, opts: Pop3CommandOptions = {}): Promise<void> {
  expectOk(await conn.exchange('RSET', opts, (io) => io.send('RSET', 'single')), 'RSET', conn.subject);
}
