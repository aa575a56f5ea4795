import { PostroomError } from '../../errors.js';
import type { Pop3CommandOptions, Pop3Connection } from '../connection.js';
import { errorFromReply } from '../errors.js';
import { expectOk } from './common.js';

/**
 * The SASL XOAUTH2 initial response:
 * `base64("user=" + user + "\x01auth=Bearer " + token + "\x01\x01")`.
 * It holds the token: never log it or put it in an error.
 */
export function xoauth2Blob(user: string, accessToken: string): string {
  if (typeof user !== 'string' || user === '' || /[\x00-\x1f\x7f]/.test(user)) throw new TypeError('user must be a non-empty string without control characters');
  if (typeof accessToken !== 'string' || accessToken === '' || /[\x00-\x20\x7f]/.test(accessToken)) {
    throw new TypeError('accessToken must be a non-empty string without spaces or control characters');
  }
  return Buffer.from(`user=${user}\x01auth=Bearer ${accessToken}\x01\x01`, 'utf8').toString('base64');
}

/**
 * `AUTH XOAUTH2` in two steps (RFC 5034): command, `+`, then the blob on its
 * own line. Exchange Online refuses the one-line form `AUTH XOAUTH2 <blob>`
 * (RFC 5034 initial response) with `-ERR Protocol error. Connection is
 * closed. 10`, so it is never sent. When the server answers the blob with
 * `+ <base64 JSON>` (an error challenge), SASL requires a response: an empty
 * line, after which the server sends the final `-ERR`.
 */
export async function authXoauth2(conn: Pop3Connection, user: string, accessToken: string, opts: Pop3CommandOptions = {}): Promise<void> {
  const blob = xoauth2Blob(user, accessToken);
  const subject = conn.subject ?? user;
  await conn.exchange('AUTH', opts, async (io) => {
    const first = await io.send('AUTH XOAUTH2', 'single');
    if (first.status !== '+') {
      expectOk(first, 'AUTH XOAUTH2', subject, true);
      throw new PostroomError('ProtocolError', 'AUTH XOAUTH2: +OK before the credentials were sent', { subject });
    }
    let reply = await io.send(blob, 'single', '[XOAUTH2 credentials]');
    if (reply.status === '+') {
      // The challenge is JSON like {"status":"401","schemes":"bearer","scope":"..."}; the final -ERR says enough.
      reply = await io.send('', 'single');
      if (reply.status === '+') throw new PostroomError('ProtocolError', 'AUTH XOAUTH2: a second challenge', { subject });
    }
    if (reply.status === '-ERR') throw errorFromReply(reply.text, { command: 'AUTH XOAUTH2', subject, auth: true });
  });
}
