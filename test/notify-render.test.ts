import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  createRateLimiter,
  encodeNotificationJob,
  escapeHtml,
  fitDigest,
  headerSafe,
  mapSmtpError,
  MAX_NOTIFICATION_JSON_BYTES,
  NOTIFICATION_SCHEMA,
  parseNotificationJob,
  renderNotification,
  type NotificationJob,
  type NotifiedMessage,
} from '../shared/notify/index.js';
import { loadConfig } from '../shared/config/index.js';
import { PostroomError } from '../shared/errors.js';

const msg = (i: number, subject: string | null = `Subject ${i}`): NotifiedMessage => ({
  subject,
  from: `Sender ${i} <s${i}@example.com>`,
  size: 1000 + i,
  attachments: i % 2,
  idempotencyKey: `key-${i}-${'k'.repeat(40)}`,
  blobPrefix: `abc/key-${i}`,
  parseError: null,
});

const base = { schema: NOTIFICATION_SCHEMA, id: 'id-1', mailboxId: 'imap:box@x.test/INBOX', mailbox: 'box@x.test', createdAt: '2025-01-01T00:00:00.000Z' } as const;

describe('notification rendering', () => {
  it('escapes every HTML-special character', () => {
    assert.equal(escapeHtml(`<a href="x">'&'</a>`), '&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;');
  });

  it('headerSafe flattens CR/LF and other controls to one line', () => {
    const s = headerSafe('Hi\r\nBcc: evil@x.test\u2028\u0000there\t!');
    assert.doesNotMatch(s, /[\r\n\u0000\u2028\t]/);
    assert.equal(s, 'Hi Bcc: evil@x.test there !');
    assert.equal(headerSafe('x'.repeat(500)).length, 200);
  });

  it('a digest lists counts, subjects, sizes, keys and blob prefixes', () => {
    const job: NotificationJob = { ...base, kind: 'digest', data: { count: 2, totalBytes: 2003, messages: [msg(1), msg(2)], omitted: 0, outcome: 'ok', durationMs: 5 } };
    const r = renderNotification(job, { subjectPrefix: '[PR]', container: 'c1' });
    assert.equal(r.subject, '[PR] 2 new messages in box@x.test');
    for (const part of ['2 new messages (2.0 KB)', 'Subject 1', 'Subject 2', '1001 bytes', 'key-2-', 'abc/key-1/', 'container "c1"', '1 attachment']) {
      assert.ok(r.text.includes(part), part);
    }
    assert.match(r.html, /<td>Subject 1<\/td>/);
  });

  it('a hostile subject is escaped in HTML and cannot add header lines', () => {
    const hostile = '<script>alert(1)</script> & "q"\r\nBcc: evil@x.test';
    const job: NotificationJob = { ...base, kind: 'message', data: msg(1, hostile) };
    const r = renderNotification(job, { subjectPrefix: '[PR]' });
    assert.doesNotMatch(r.html, /<script>/);
    assert.ok(r.html.includes('&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;q&quot;'));
    assert.doesNotMatch(r.subject, /[\r\n]/);
    assert.doesNotMatch(r.text, /^Bcc:/m);
  });

  it('a failure alert carries the error and the admin fix', () => {
    const err = new PostroomError('AuthenticationFailed', 'NO AUTHENTICATE failed.', { subject: 'box@x.test' });
    const job: NotificationJob = { ...base, kind: 'failure', data: { code: err.code, message: err.message, fix: err.fix, consecutiveFailures: 3, lastSuccessAt: null } };
    const r = renderNotification(job, { subjectPrefix: '' });
    assert.equal(r.subject, 'ALERT: polling box@x.test failed 3 times (AuthenticationFailed)');
    assert.ok(r.text.includes('New-ServicePrincipal -AppId'));
    assert.ok(r.html.includes('Add-MailboxPermission'));
  });

  it('the subject prefix setting refuses control characters', () => {
    const env = {
      POSTROOM_STORAGE: 'UseDevelopmentStorage=true',
      POSTROOM_APPS: JSON.stringify([{ tenantId: 't.test', clientId: 'abc', secret: { vaultUrl: 'https://v.vault.azure.net', name: 's' } }]),
      POSTROOM_MAILBOXES: JSON.stringify([{ address: 'a@x.test', notify: { to: ['o@x.test'], subjectPrefix: 'x\r\nBcc: y@z.test' } }]),
    };
    assert.throws(() => loadConfig(env), /subjectPrefix/);
    const ok = loadConfig({ ...env, POSTROOM_MAILBOXES: JSON.stringify([{ address: 'a@x.test', notify: { to: ['o@x.test'] } }]) });
    assert.equal(ok.mailboxes[0].notify!.subjectPrefix, '[Postroom]');
    assert.equal(ok.mailboxes[0].notify!.from, 'a@x.test');
  });
});

describe('notification jobs', () => {
  it('a digest of 3000 messages is trimmed to fit one queue message, counting the rest', () => {
    const messages = Array.from({ length: 3000 }, (_, i) => msg(i, 'S'.repeat(250)));
    const job = fitDigest({ ...base, kind: 'digest', data: { count: 3000, totalBytes: 1, messages, omitted: 0, outcome: 'ok', durationMs: 1 } });
    const encoded = encodeNotificationJob(job);
    assert.ok(Buffer.byteLength(JSON.stringify(job)) <= MAX_NOTIFICATION_JSON_BYTES);
    assert.ok(encoded.length <= 65_536);
    assert.ok(job.data.messages.length > 50, `kept ${job.data.messages.length}`);
    assert.equal(job.data.messages.length + job.data.omitted, 3000);
    assert.deepEqual(parseNotificationJob(encoded), job);
  });

  it('parses object, JSON and base64 forms and refuses other schemas', () => {
    const job: NotificationJob = { ...base, kind: 'recovered', data: { code: 'X', alertedAt: null, delivered: 0 } };
    assert.deepEqual(parseNotificationJob(job), job);
    assert.deepEqual(parseNotificationJob(JSON.stringify(job)), job);
    assert.throws(() => parseNotificationJob({ ...job, schema: 'postroom.job.v1' }), TypeError);
    assert.throws(() => parseNotificationJob('not json'), TypeError);
  });
});

describe('SMTP error mapping (Exchange Online replies)', () => {
  const e = (code: string, response: string, responseCode: number) => Object.assign(new Error('x'), { code, response, responseCode });
  it('maps each reply to its code and admin fix', () => {
    const cases: Array<[Error, string, RegExp | null, boolean]> = [
      [e('EAUTH', '535 5.7.3 Authentication unsuccessful', 535), 'AuthenticationFailed', /New-ServicePrincipal/, false],
      [
        e('EAUTH', '535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant.', 535),
        'SmtpAuthDisabled',
        /Set-TransportConfig -SmtpClientAuthenticationDisabled \$false/,
        false,
      ],
      [e('EENVELOPE', '554 5.2.0 STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied', 554), 'SendAsDenied', /Add-RecipientPermission/, false],
      [e('EENVELOPE', '550 5.7.60 SMTP; Client does not have permissions to send as this sender', 550), 'SendAsDenied', /Add-RecipientPermission/, false],
      [e('EAUTH', '432 4.3.2 Concurrent connections limit exceeded', 432), 'SmtpConcurrencyLimit', null, true],
      [Object.assign(new Error('connect ECONNREFUSED'), { code: 'ESOCKET' }), 'ConnectionFailed', null, true],
    ];
    for (const [err, code, fix, retryable] of cases) {
      const m = mapSmtpError(err, 'box@x.test');
      assert.equal(m.code, code, String((err as { response?: string }).response));
      assert.equal(m.retryable, retryable, code);
      if (fix) assert.match(m.fix, fix);
    }
    const throttled = mapSmtpError(cases[4][0], 's');
    assert.ok(throttled.retryAfterMs! >= 30_000, String(throttled.retryAfterMs));
    assert.equal(throttled.serverResponseCode, '4.3.2');
  });
});

describe('rate limiter', () => {
  it('allows `limit` starts per window and holds after pause()', async () => {
    let t = 0;
    const rl = createRateLimiter({ limit: 2, windowMs: 1000, now: () => t });
    await rl.acquire();
    await rl.acquire();
    assert.equal(rl.waitMs(), 1000);
    t = 400;
    assert.equal(rl.waitMs(), 600);
    t = 1000;
    assert.equal(rl.waitMs(), 0);
    rl.pause(5000);
    assert.equal(rl.waitMs(), 5000);
  });

  it('makes the third caller wait out the window (real clock)', async () => {
    const rl = createRateLimiter({ limit: 2, windowMs: 150 });
    const started = Date.now();
    await Promise.all([rl.acquire(), rl.acquire(), rl.acquire()]);
    assert.ok(Date.now() - started >= 140, `${Date.now() - started} ms`);
  });

  it('an aborted waiter rejects and does not block the next one', async () => {
    let t = 0;
    const rl = createRateLimiter({ limit: 1, windowMs: 60_000, now: () => t });
    await rl.acquire();
    await assert.rejects(rl.acquire(AbortSignal.timeout(20)));
    t = 60_000;
    await rl.acquire();
  });
});
