import type { Pop3CommandOptions, Pop3Connection } from '../connection.js';
import { checkMsg, expectOk } from './common.js';

/** Marks a message deleted; the server removes it only at QUIT (RFC 1939 UPDATE state). */
export async function dele(conn: Pop3Connection, msg: number, opts: Pop3CommandOptions = {}): Promise<void> {
  checkMsg(msg);
  expectOk(await conn.exchange('DELE', opts, (io) => io.send(`DELE ${msg}`, 'single')), 'DELE', conn.subject);
}
