import { test } from 'node:test';
import assert from 'node:assert/strict';
import { idempotencyKey, safeBlobSegment } from '../shared/sink/names.js';
import { redact, PostroomError } from '../shared/errors.js';
import { memoryLogger } from '../shared/logger.js';

test('idempotency key is deterministic, case-insensitive on the mailbox, sensitive to every other part', () => {
  const p = { tenantId: 'T', mailbox: 'Box@Contoso.com', folder: 'INBOX', validity: '7', id: '42' };
  const k = idempotencyKey(p);
  assert.match(k, /^[0-9a-f]{64}$/);
  assert.equal(idempotencyKey({ ...p, mailbox: 'box@contoso.com' }), k);
  for (const change of [{ folder: 'Archive' }, { validity: '8' }, { id: '43' }, { tenantId: 'U' }]) {
    assert.notEqual(idempotencyKey({ ...p, ...change }), k, JSON.stringify(change));
  }
});

test('untrusted attachment names become safe blob segments', () => {
  assert.equal(safeBlobSegment('../../etc/passwd\u0007.txt'), 'passwd.txt');
  assert.equal(safeBlobSegment('..\\..\\windows\\system32\\evil.dll'), 'evil.dll');
  assert.equal(safeBlobSegment('..'), 'attachment');
  assert.equal(safeBlobSegment(null), 'attachment');
  assert.equal(safeBlobSegment('Übersicht Q3 (final).pdf'), 'Übersicht Q3 (final).pdf');
  assert.equal(safeBlobSegment('a\u202Egnp.exe'), 'agnp.exe', 'bidi override removed');
  assert.equal(safeBlobSegment('x?y#z%.txt'), 'x_y_z_.txt');
  const long = safeBlobSegment('a'.repeat(300) + '.pdf');
  assert.equal([...long].length, 100);
  assert.ok(long.endsWith('.pdf'));
});

test('redact removes JWTs, bearer tokens, SASL blobs and secret fields', () => {
  const jwt = 'eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL291dGxvb2sifQ.c2lnbmF0dXJlc2lnbmF0dXJl';
  const text = `Authorization: Bearer abc.def ${jwt} A01 AUTHENTICATE XOAUTH2 dXNlcj10ZXN0QGNvbnRvc28ub25taWNyb3NvZnQuY29t client_secret=hunter2&x=1`;
  const out = redact(text);
  assert.doesNotMatch(out, /abc\.def|eyJhbGci|dXNlcj10|hunter2/);
  const e = new PostroomError('AuthenticationFailed', `server said ${jwt}`, { subject: 'box@contoso.com', responseText: `Bearer ${jwt}` });
  assert.doesNotMatch(e.message + e.responseText, /eyJhbGci/);
  assert.match(e.message, /Add-MailboxPermission/);
});

test('the logger drops credential and body fields and redacts values', () => {
  const log = memoryLogger();
  log.info('x', { accessToken: 'SECRET1', clientSecret: 'SECRET2', text: 'body', html: '<p>', note: 'Bearer SECRET3' });
  assert.equal(log.lines.length, 1);
  assert.doesNotMatch(log.lines[0], /SECRET1|SECRET2|SECRET3|body|<p>/);
});
