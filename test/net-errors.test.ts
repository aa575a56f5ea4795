import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mapImapError } from '../shared/imap/errors.js';
import { errorFromReply, errorFromSocket } from '../shared/pop3/errors.js';

const throttled = 'Request is throttled. Suggested Backoff Time: 1500 milliseconds';

test("IMAP and POP3 read Exchange's throttling reply the same way", () => {
  const imap = mapImapError({ responseText: throttled, message: 'Command failed' }, 'box@contoso.test');
  const pop3 = errorFromReply(`-ERR ${throttled}`.slice(5), { command: 'RETR', subject: 'box@contoso.test' });
  for (const e of [imap, pop3]) {
    assert.equal(e.code, 'Throttled');
    assert.equal(e.retryAfterMs, 1500);
  }
});

test('IMAP and POP3 tell network failures from TLS failures the same way', () => {
  const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:993'), { code: 'ECONNREFUSED' });
  const untrusted = Object.assign(new Error('unable to verify the first certificate'), { code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' });
  const reset = Object.assign(new Error('Client network socket disconnected before secure TLS connection was established'), { code: 'ECONNRESET' });
  assert.equal(mapImapError(refused, 's').code, 'ConnectionFailed');
  assert.equal(errorFromSocket(refused, 's', 'connect').code, 'ConnectionFailed');
  assert.equal(mapImapError(untrusted, 's').code, 'TlsFailed');
  assert.equal(errorFromSocket(untrusted, 's', 'connect').code, 'TlsFailed');
  // a reset during the handshake is the network, not the certificate
  assert.equal(mapImapError(reset, 's').code, 'ConnectionFailed');
  assert.equal(errorFromSocket(reset, 's', 'connect').code, 'ConnectionFailed');
});
