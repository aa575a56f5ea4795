import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { readFile } from 'node:fs/promises';
import { simpleParser } from 'mailparser';
import { EXCHANGE_SMTP_REPLIES } from '../sandbox/smtp.js';
import { PostroomError } from '../shared/errors.js';
import { recordStatus } from '../shared/status/index.js';
import { handlePollJob, JOB_SCHEMA } from '../shared/poll/jobs.js';
import type { PollResult } from '../shared/poll/poll-mailbox.js';
import type { Delivered } from '../shared/sink/index.js';
import type { Runtime } from '../shared/runtime.js';
import { resetTokenProviders } from '../shared/auth/token-provider.js';
import { handleNotificationJob, notifyAfterPoll, NOTIFICATION_SCHEMA, parseNotificationJob, readNotifyState, type NotificationJob } from '../shared/notify/index.js';
import { APP_NOGRANT, APP_NOROLE, drainQueue, MAILBOX, OPS, startNotifyStack, type NotifyStack } from './support/notify-stack.js';

const delivered = (i: number, subject: string | null = `Invoice ${i}`): Delivered => ({
  idempotencyKey: `k${i}-${'0'.repeat(40)}`,
  size: 2048 * i,
  subject,
  from: [{ name: `Vendor ${i}`, address: `vendor${i}@example.com` }],
  attachments: i,
  parseError: null,
  blobPrefix: `mbkey/k${i}`,
});

async function okPoll(runtime: Runtime, items: Delivered[]): Promise<PollResult> {
  const mailbox = runtime.config.mailboxes[0];
  const status = await recordStatus(runtime.state, mailbox, runtime.now(), { ok: true, delivered: items.length, durationMs: 12 });
  return { mailbox: mailbox.id, outcome: 'ok', delivered: items, status, durationMs: 12 };
}

async function failedPoll(runtime: Runtime, error: PostroomError): Promise<PollResult> {
  const mailbox = runtime.config.mailboxes[0];
  const status = await recordStatus(runtime.state, mailbox, runtime.now(), { ok: false, delivered: 0, durationMs: 3, code: error.code, message: error.message });
  return { mailbox: mailbox.id, outcome: 'failed', delivered: [], error, status, durationMs: 3 };
}

/** Enqueues through notifyAfterPoll, then sends every queued job the way the queue trigger would. */
async function sendQueued(runtime: Runtime): Promise<NotificationJob[]> {
  const jobs: NotificationJob[] = [];
  for (const m of await drainQueue(runtime, runtime.config.storage.notifyQueue)) {
    assert.ok(m.bytes <= 65_536);
    const job = parseNotificationJob(m.text);
    assert.equal(job.schema, NOTIFICATION_SCHEMA);
    await handleNotificationJob(runtime, m.text);
    jobs.push(job);
  }
  return jobs;
}

function lines(socket: Socket): { next(): Promise<string> } {
  let buf = '';
  const waiting: Array<(l: string) => void> = [];
  const ready: string[] = [];
  socket.on('data', (d: Buffer) => {
    buf += d.toString('latin1');
    let i;
    while ((i = buf.indexOf('\r\n')) >= 0) {
      const l = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const w = waiting.shift();
      if (w) w(l);
      else ready.push(l);
    }
  });
  return { next: () => (ready.length ? Promise.resolve(ready.shift()!) : new Promise((r) => waiting.push(r))) };
}

/** Reads one (possibly multi-line) reply. */
async function reply(r: { next(): Promise<string> }): Promise<string[]> {
  const out: string[] = [];
  for (;;) {
    const l = await r.next();
    out.push(l);
    if (/^\d{3} /.test(l) || /^\d{3}$/.test(l)) return out;
  }
}

describe('notifications over SMTP XOAUTH2 (real token endpoint, Azurite, SMTP sandbox)', () => {
  let stack: NotifyStack;
  before(async () => {
    stack = await startNotifyStack();
  });
  after(async () => {
    await stack?.stop();
  });

  it('sends a digest after a poll that ingested messages: counts, subjects, sizes, keys', async () => {
    const { runtime } = await stack.runtime();
    const before = stack.smtp.messages().length;
    const jobs = await notifyAfterPoll(runtime, runtime.config.mailboxes[0], await okPoll(runtime, [delivered(1), delivered(2), delivered(3)]));
    assert.deepEqual(
      jobs.map((j) => j.kind),
      ['digest'],
    );
    const sent = await sendQueued(runtime);
    assert.equal(sent.length, 1);
    const got = stack.smtp.messages().slice(before);
    assert.equal(got.length, 1);
    const m = got[0];
    assert.equal(m.user, MAILBOX);
    assert.equal(m.mailFrom, MAILBOX);
    assert.deepEqual(m.rcptTo, [OPS]);
    const parsed = await simpleParser(m.raw);
    assert.equal(parsed.subject, `[Postroom] 3 new messages in ${MAILBOX}`);
    assert.equal(parsed.headers.get('auto-submitted'), 'auto-generated');
    for (const part of ['3 new messages (12 KB)', 'Invoice 1', 'Invoice 3', '6144 bytes', `k2-${'0'.repeat(40)}`, 'mbkey/k3/', 'Vendor 1 <vendor1@example.com>']) {
      assert.ok(parsed.text!.includes(part), part);
    }
    assert.match(String(parsed.html), /<td>Invoice 2<\/td>/);
    // The sandbox keeps each captured message as an .eml file too.
    assert.deepEqual(await readFile(m.file), m.raw);
    assert.ok(m.file.startsWith(stack.smtp.dir));
    // Nothing is sent for a poll that ingested nothing.
    assert.deepEqual(await notifyAfterPoll(runtime, runtime.config.mailboxes[0], await okPoll(runtime, [])), []);
  });

  it('alerts once after N failed polls with the admin fix, de-duplicates, alerts a new kind, then sends one recovery notice', async () => {
    const { runtime } = await stack.runtime({ notify: { failureThreshold: 2, digest: false } });
    const mbx = runtime.config.mailboxes[0];
    const before = stack.smtp.messages().length;
    const authFail = new PostroomError('AuthenticationFailed', 'NO AUTHENTICATE failed.', { subject: MAILBOX });

    assert.deepEqual(await notifyAfterPoll(runtime, mbx, await failedPoll(runtime, authFail)), []);
    const second = await notifyAfterPoll(runtime, mbx, await failedPoll(runtime, authFail));
    assert.deepEqual(
      second.map((j) => j.kind),
      ['failure'],
    );
    assert.equal((await readNotifyState(runtime, mbx))?.alertedCode, 'AuthenticationFailed');
    // Same kind again: no storm.
    assert.deepEqual(await notifyAfterPoll(runtime, mbx, await failedPoll(runtime, authFail)), []);
    assert.deepEqual(await notifyAfterPoll(runtime, mbx, await failedPoll(runtime, authFail)), []);
    // A different failure kind is news.
    const other = await notifyAfterPoll(runtime, mbx, await failedPoll(runtime, new PostroomError('FolderNotFound', 'Archive', { subject: MAILBOX })));
    assert.deepEqual(
      other.map((j) => j.kind),
      ['failure'],
    );
    // Recovery: one notice, then quiet.
    const rec = await notifyAfterPoll(runtime, mbx, await okPoll(runtime, [delivered(1)]));
    assert.deepEqual(
      rec.map((j) => j.kind),
      ['recovered'],
    );
    assert.deepEqual(await notifyAfterPoll(runtime, mbx, await okPoll(runtime, [])), []);
    assert.equal((await readNotifyState(runtime, mbx))?.alertedCode, null);

    const sent = await sendQueued(runtime);
    assert.deepEqual(sent.map((j) => j.kind).sort(), ['failure', 'failure', 'recovered']);
    const mails = await Promise.all(
      stack.smtp
        .messages()
        .slice(before)
        .map((m) => simpleParser(m.raw)),
    );
    const alert = mails.find((p) => p.subject?.includes('(AuthenticationFailed)'))!;
    assert.equal(alert.subject, `[Postroom] ALERT: polling ${MAILBOX} failed 2 times (AuthenticationFailed)`);
    // A bare error (no context): the fix still names each step, with plain descriptions for what it does not know.
    assert.match(alert.text!, /New-ServicePrincipal -AppId <application \(client\) id> -ObjectId \(az ad sp show --id/);
    assert.match(alert.text!, /Add-MailboxPermission -Identity <mailbox> -User \(az ad sp show/);
    assert.ok(mails.some((p) => p.subject === `[Postroom] ALERT: polling ${MAILBOX} failed 5 times (FolderNotFound)`));
    const recovered = mails.find((p) => p.subject?.startsWith('[Postroom] Recovered'))!;
    assert.match(recovered.text!, /had failed with FolderNotFound/);
  });

  it('a real failing poll (handlePollJob) enqueues the alert and the poll still reports its own error', async () => {
    const { runtime } = await stack.runtime({ notify: { failureThreshold: 1 } });
    const job = { schema: JOB_SCHEMA, mailboxId: runtime.config.mailboxes[0].id, scheduledAt: new Date().toISOString() };
    // IMAP points at a closed port: ConnectionFailed (retryable), so the poll job throws for the queue to retry.
    await assert.rejects(handlePollJob(runtime, job), (e: PostroomError) => e.code === 'ConnectionFailed');
    const queued = (await drainQueue(runtime, runtime.config.storage.notifyQueue)).map((m) => parseNotificationJob(m.text));
    assert.deepEqual(
      queued.map((j) => j.kind),
      ['failure'],
    );
    assert.equal((queued[0] as NotificationJob & { kind: 'failure' }).data.code, 'ConnectionFailed');
    assert.match((queued[0] as NotificationJob & { kind: 'failure' }).data.fix, /IMAP 993/);
  });

  it('escapes a hostile subject in HTML and keeps CR/LF out of the notification headers', async () => {
    const { runtime } = await stack.runtime({ notify: { digest: true, perMessage: true } });
    const before = stack.smtp.messages().length;
    const hostile = '<script>alert(1)</script> & co\r\nBcc: evil@attacker.test\r\n\r\nbody';
    await notifyAfterPoll(runtime, runtime.config.mailboxes[0], await okPoll(runtime, [delivered(7, hostile)]));
    const sent = await sendQueued(runtime);
    assert.deepEqual(sent.map((j) => j.kind).sort(), ['digest', 'message']);
    for (const m of stack.smtp.messages().slice(before)) {
      assert.deepEqual(m.rcptTo, [OPS]);
      const head = m.raw.subarray(0, m.raw.indexOf('\r\n\r\n')).toString('utf8');
      assert.doesNotMatch(head, /^bcc:/im);
      const p = await simpleParser(m.raw);
      assert.equal(p.bcc, undefined);
      assert.doesNotMatch(String(p.html), /<script>/);
      assert.ok(String(p.html).includes('&lt;script&gt;alert(1)&lt;/script&gt; &amp; co'));
      if (p.headers.get('x-postroom-notification') === 'message') {
        assert.equal(p.subject, `[Postroom] New message in ${MAILBOX}: <script>alert(1)</script> & co Bcc: evil@attacker.test body`);
      }
    }
  });

  it('requires STARTTLS before AUTH and offers only XOAUTH2', async () => {
    const socket = netConnect({ host: '127.0.0.1', port: stack.smtp.port });
    const r = lines(socket);
    assert.match((await reply(r))[0], /^220 /);
    socket.write('EHLO client.test\r\n');
    const ehlo = await reply(r);
    assert.ok(ehlo.some((l) => /STARTTLS/.test(l)));
    const token = await stack.te.signToken({});
    const blob = Buffer.from(`user=${MAILBOX}\x01auth=Bearer ${token}\x01\x01`).toString('base64');
    socket.write(`AUTH XOAUTH2 ${blob}\r\n`);
    const refused = (await reply(r))[0];
    assert.match(refused, /^5\d\d /);
    assert.match(refused, /STARTTLS/);
    socket.write('MAIL FROM:<inbox@contoso.test>\r\n');
    assert.match((await reply(r))[0], /^530 /);
    socket.write('STARTTLS\r\n');
    assert.match((await reply(r))[0], /^220 /);
    socket.removeAllListeners('data');
    const tls = tlsConnect({ socket, ca: stack.certs.ca, servername: 'localhost', minVersion: 'TLSv1.2' });
    await new Promise<void>((res, rej) => tls.once('secureConnect', res).once('error', rej));
    const t = lines(tls);
    tls.write('EHLO client.test\r\n');
    const ehlo2 = await reply(t);
    assert.ok(
      ehlo2.some((l) => /^250[ -]AUTH XOAUTH2$/.test(l)),
      ehlo2.join('|'),
    );
    tls.write(`AUTH XOAUTH2 ${blob}\r\n`);
    assert.match((await reply(t))[0], /^235 /);
    tls.end('QUIT\r\n');
    tls.destroy();
    socket.destroy();
  });

  it('maps 535 5.7.3 (no grant) to AuthenticationFailed with the admin fix, after exactly one fresh-token retry', async () => {
    resetTokenProviders();
    const { runtime } = await stack.runtime({ app: APP_NOGRANT });
    const [job] = await notifyAfterPoll(runtime, runtime.config.mailboxes[0], await okPoll(runtime, [delivered(1)]));
    const tokensBefore = stack.te.tokenRequestsFor(APP_NOGRANT.clientId);
    const authBefore = stack.smtp.authAttempts(MAILBOX);
    await assert.rejects(handleNotificationJob(runtime, job), (e: PostroomError) => {
      assert.equal(e.code, 'AuthenticationFailed');
      assert.equal(e.serverResponseCode, '5.7.3');
      assert.equal(e.retryable, false);
      assert.match(e.fix, /New-ServicePrincipal -AppId/);
      assert.match(e.fix, /Add-MailboxPermission/);
      return true;
    });
    assert.equal(stack.smtp.authAttempts(MAILBOX) - authBefore, 2);
    // The first token, then the renewed one: one renew, not more.
    assert.equal(stack.te.tokenRequestsFor(APP_NOGRANT.clientId) - tokensBefore, 2);
  });

  it('refuses to connect with a token lacking SMTP.SendAsApp (MissingRole)', async () => {
    const { runtime } = await stack.runtime({ app: APP_NOROLE });
    const [job] = await notifyAfterPoll(runtime, runtime.config.mailboxes[0], await okPoll(runtime, [delivered(1)]));
    const authBefore = stack.smtp.authAttempts();
    await assert.rejects(handleNotificationJob(runtime, job), (e: PostroomError) => e.code === 'MissingRole' && /SMTP\.SendAsApp/.test(e.message));
    assert.equal(stack.smtp.authAttempts(), authBefore);
  });

  it('maps 535 5.7.139 to SmtpAuthDisabled (no retry) and 554 SendAsDenied to SendAsDenied', async () => {
    const { runtime } = await stack.runtime();
    const [job] = await notifyAfterPoll(runtime, runtime.config.mailboxes[0], await okPoll(runtime, [delivered(1)]));
    stack.smtp.fail({ ...EXCHANGE_SMTP_REPLIES.authDisabled });
    const authBefore = stack.smtp.authAttempts(MAILBOX);
    await assert.rejects(handleNotificationJob(runtime, job), (e: PostroomError) => {
      assert.equal(e.code, 'SmtpAuthDisabled');
      assert.match(e.fix, /Set-TransportConfig -SmtpClientAuthenticationDisabled \$false/);
      return true;
    });
    assert.equal(stack.smtp.authAttempts(MAILBOX) - authBefore, 1);

    stack.smtp.fail({ stage: 'data', ...EXCHANGE_SMTP_REPLIES.sendAsDenied });
    // From is the authenticated mailbox itself: the fix says so instead of claiming they differ (issue 12).
    await assert.rejects(
      handleNotificationJob(runtime, job),
      (e: PostroomError) => e.code === 'SendAsDenied' && e.fix.includes(`From ${MAILBOX}, the same mailbox the app authenticated as`) && !/Add-RecipientPermission/.test(e.fix),
    );
    // The scripted faults are used up: the same job now goes through.
    const before = stack.smtp.messages().length;
    await handleNotificationJob(runtime, job);
    assert.equal(stack.smtp.messages().length, before + 1);
  });

  it('turns 432 4.3.2 into a retryable error with a back-off, and holds further sends from that sender', async () => {
    const { runtime } = await stack.runtime();
    const [job] = await notifyAfterPoll(runtime, runtime.config.mailboxes[0], await okPoll(runtime, [delivered(1)]));
    stack.smtp.fail({ ...EXCHANGE_SMTP_REPLIES.concurrency });
    await assert.rejects(handleNotificationJob(runtime, job), (e: PostroomError) => {
      assert.equal(e.code, 'SmtpConcurrencyLimit');
      assert.equal(e.retryable, true);
      assert.ok(e.retryAfterMs! >= 30_000, String(e.retryAfterMs));
      return true;
    });
    const before = stack.smtp.messages().length;
    await assert.rejects(handleNotificationJob(runtime, job, { signal: AbortSignal.timeout(300) }), (e: Error) => /abort|timeout/i.test(`${e.name} ${e.message}`));
    assert.equal(stack.smtp.messages().length, before);
  });

  it('from the queue trigger, 432 4.3.2 puts the job back on the queue for the back-off instead of failing it', async () => {
    const { runtime, logger } = await stack.runtime();
    const [job] = await notifyAfterPoll(runtime, runtime.config.mailboxes[0], await okPoll(runtime, [delivered(1)]));
    const q = await runtime.storage.queue(runtime.config.storage.notifyQueue);
    await q.clearMessages();
    stack.smtp.fail({ ...EXCHANGE_SMTP_REPLIES.concurrency });
    const r = await handleNotificationJob(runtime, job, { requeue: true });
    assert.equal(r?.deferred, true);
    assert.equal((await q.peekMessages()).peekedMessageItems.length, 0, 'invisible during the back-off');
    assert.equal((await q.getProperties()).approximateMessagesCount, 1, 'but on the queue');
    assert.ok(
      logger.lines.some((l) => /deferred \d+ s: SmtpConcurrencyLimit/.test(l)),
      logger.lines.join('\n'),
    );
    const [back] = (await q.receiveMessages({ numberOfMessages: 1, visibilityTimeout: 1 })).receivedMessageItems;
    assert.equal(back, undefined, 'not offered again before the back-off');
  });

  it('shares one pool per sender: 8 notices at once use at most 3 connections', async () => {
    const { runtime } = await stack.runtime({ notify: { digest: false, perMessage: true } });
    const mbx = runtime.config.mailboxes[0];
    const jobs = await notifyAfterPoll(
      runtime,
      mbx,
      await okPoll(
        runtime,
        Array.from({ length: 8 }, (_, i) => delivered(i + 1)),
      ),
    );
    assert.equal(jobs.length, 8);
    const before = stack.smtp.messages().length;
    const results = await Promise.all(jobs.map((j) => handleNotificationJob(runtime, j)));
    assert.equal(stack.smtp.messages().length, before + 8);
    assert.ok(results.every((r) => r?.deferred === false && r.tries === 1));
    assert.ok(stack.smtp.peakConnections(MAILBOX) <= 3, String(stack.smtp.peakConnections(MAILBOX)));
    const a = await runtime.smtpSender(mbx.app, mbx.notify!.from);
    const b = await runtime.smtpSender(mbx.app, mbx.notify!.from.toUpperCase());
    assert.equal(a, b);
  });

  it('drops a job whose mailbox no longer has notify settings', async () => {
    const { runtime } = await stack.runtime();
    const job: NotificationJob = {
      schema: NOTIFICATION_SCHEMA,
      id: 'gone',
      mailboxId: 'imap:gone@contoso.test/INBOX',
      mailbox: 'gone@contoso.test',
      createdAt: new Date().toISOString(),
      kind: 'recovered',
      data: { code: 'X', alertedAt: null, delivered: 0 },
    };
    assert.equal(await handleNotificationJob(runtime, job), undefined);
  });
});
