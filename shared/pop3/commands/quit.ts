import type { Pop3CommandOptions, Pop3Connection } from '../connection.js';
import { expectOk } from './common.js';

/**
 * QUIT: enters the UPDATE state, where the server commits DELEs, then
 * closes. A `-ERR` here means some deletions may not have been applied.
 */
export async function quit(conn: Pop3Connection, opts: Pop3CommandOptions = {}): Promise<void> {
  const reply = await conn.exchange('QUIT', opts, (io) => io.send('QUIT', 'single'));
  conn.end();
  expectOk(reply, 'QUIT', conn.subject);
}
