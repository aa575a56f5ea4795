import type { Readable } from 'node:stream';
import type { Pop3CommandOptions, Pop3Connection } from '../connection.js';
import { checkMsg, expectOk } from './common.js';

/**
 * RETR as a byte stream: the message, dot-unstuffed, without the final
 * `.CRLF`, with backpressure on the socket. Consume or destroy it before the
 * next command; destroying it early closes the connection. The `signal`
 * stays armed until the stream ends.
 */
export async function retr(conn: Pop3Connection, msg: number, opts: Pop3CommandOptions = {}): Promise<Readable> {
  checkMsg(msg);
  const { status, body } = await conn.stream(`RETR ${msg}`, opts);
  expectOk(status, 'RETR', conn.subject);
  return body!;
}
