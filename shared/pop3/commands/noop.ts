import type { Pop3CommandOptions, Pop3Connection } from '../connection.js';
import { expectOk } from './common.js';

export async function noop(conn: Pop3Connection, opts: Pop3CommandOptions = {}): Promise<void> {
  expectOk(await conn.exchange('NOOP', opts, (io) => io.send('NOOP', 'single')), 'NOOP', conn.subject);
}
