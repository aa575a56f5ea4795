import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { startStack, MAILBOXES, type Stack } from './support/stack.js';
import { startFaultProxy, EXCHANGE, type FaultProxy } from './support/fault-proxy.js';
import { pollMailbox } from '../shared/poll/poll-mailbox.js';
import { CHECKPOINT_KEY } from '../shared/imap/source.js';
import { startLocalHost } from '../sandbox/host.js';
import { SANDBOX_APP } from '../sandbox/index.js';
import * as M from '../sandbox/messages.js';

let stack: Stack;
let proxy: FaultProxy;

before(async () => {
  stack = await startStack();
  proxy = await startFaultProxy({
    targetPort: stack.sandbox.dovecot.imapPort,
    cert: stack.sandbox.certs.cert,
    key: stack.sandbox.certs.key,
    ca: stack.sandbox.certs.ca,
    protocol: 'imap',
  });
});
after(async () => {
  await proxy?.close();
  await stack?.stop();
});

const viaProxy = (address: string, extra: Record<string, unknown> = {}) => ({ address, protocol: 'imap', host: '127.0.0.1', port: proxy.port, ...extra });
const outlookTokens = () => stack.sandbox.token.tokenRequestsFor(SANDBOX_APP.clientId, 'https://outlook.office365.com');

describe("Exchange Online's reply texts and faults (scripted proxy in front of Dovecot)", () => {
  test('"NO AUTHENTICATE failed." → one retry with a fresh token, then AuthenticationFailed with the admin steps', async () => {
    await stack.sandbox.dovecot.deliver(MAILBOXES.proxy, M.plainMessage({ subject: 'p1' }));
    const rt = await stack.runtime([viaProxy(MAILBOXES.proxy)], { env: { POSTROOM_OUTPUT_QUEUE: 'out-x-auth' } });
    const rule = { commands: [{ match: /^\S+ AUTHENTICATE /i, reply: [`{tag} ${EXCHANGE.imapAuthFailed}`] }] };
    proxy.next(rule);
    proxy.next(rule);
    const tokens = outlookTokens();
    const r = await pollMailbox(rt, rt.config.mailboxes[0]);
    assert.equal(r.error?.code, 'AuthenticationFailed');
    assert.match(r.error.responseText ?? '', /AUTHENTICATE failed/);
    assert.match(r.error.message, /New-ServicePrincipal/);
    assert.match(r.error.message, /Add-MailboxPermission/);
    assert.match(r.error.message, /Set-CASMailbox/);
    assert.equal(outlookTokens() - tokens, 2, 'first token, then one fresh (skipCache) token for the retry');
    assert.equal(await rt.state.get(rt.config.mailboxes[0].id, CHECKPOINT_KEY), undefined);
  });

  test('"BAD User is authenticated but not connected." → MailboxNotConnected naming FullAccess on that mailbox', async () => {
    const rt = await stack.runtime([viaProxy(MAILBOXES.proxy)], { env: { POSTROOM_OUTPUT_QUEUE: 'out-x-nc' } });
    proxy.next({ commands: [{ match: /^\S+ (SELECT|EXAMINE) /i, reply: [`{tag} ${EXCHANGE.imapNotConnected}`] }] });
    const r = await pollMailbox(rt, rt.config.mailboxes[0]);
    assert.equal(r.error?.code, 'MailboxNotConnected');
    // The poll fills the fix in with the mailbox and the app (issue 12).
    assert.ok(
      r.error.message.includes(
        `FullAccess on exactly ${MAILBOXES.proxy} (Add-MailboxPermission -Identity ${MAILBOXES.proxy} -User (az ad sp show --id ${rt.config.mailboxes[0].app.clientId} --query id -o tsv)`,
      ),
      r.error.message,
    );
    assert.equal((await stack.queueMessages('out-x-nc')).length, 0);
  });

  test('"* BYE Session invalidated - AccessTokenExpired" mid-poll → reconnect with a new token; nothing lost or doubled', async () => {
    const box = MAILBOXES.proxy;
    for (let i = 0; i < 5; i++) await stack.sandbox.dovecot.deliver(box, M.plainMessage({ subject: `bye ${i}` }));
    const rt = await stack.runtime([viaProxy(box)], { env: { POSTROOM_OUTPUT_QUEUE: 'out-x-bye', POSTROOM_BATCH_SIZE: '2' } });
    // The session dies at the second UID FETCH of message sources (after one batch was acknowledged).
    proxy.next({ commands: [{ match: /^\S+ UID FETCH .*BODY\.PEEK\[\]/i, nth: 2, reply: [EXCHANGE.imapTokenExpired], close: true }] });
    const tokens = outlookTokens();
    const r = await pollMailbox(rt, rt.config.mailboxes[0]);
    assert.equal(r.outcome, 'ok', r.error?.message);
    assert.equal(r.delivered.length, 6, 'p1 from the first test and the 5 new ones');
    assert.ok(outlookTokens() - tokens >= 2, 'a fresh token after AccessTokenExpired');
    assert.ok(rt.log.lines.some((l) => /reconnecting/.test(l) && /SessionExpired/.test(l)));
    const keys = (await stack.queueMessages('out-x-bye')).map((m) => m.idempotencyKey);
    assert.equal(new Set(keys).size, 6);
  });

  test("the session dies in the middle of a large message's partial fetches → reconnect; the message arrives whole, once", async () => {
    const box = MAILBOXES.proxyDrop;
    const BIG = 3 * 1024 * 1024;
    await stack.sandbox.dovecot.deliver(box, M.plainMessage({ subject: 'small before' }));
    await stack.sandbox.dovecot.deliver(box, M.largeAttachmentStream(BIG, { subject: 'big one' }));
    const rt = await stack.runtime([viaProxy(box)], { env: { POSTROOM_OUTPUT_QUEUE: 'out-x-drop' } });
    // The second partial FETCH of the large message (offset > 0) gets Exchange's BYE and the connection closes.
    proxy.next({ commands: [{ match: /^\S+ UID FETCH .*BODY\.PEEK\[\]<[1-9]\d*\./i, nth: 1, reply: [EXCHANGE.imapTokenExpired], close: true }] });
    const r = await pollMailbox(rt, rt.config.mailboxes[0]);
    assert.equal(r.outcome, 'ok', r.error?.message);
    assert.ok(
      rt.log.lines.some((l) => /reconnecting/.test(l) && /SessionExpired/.test(l)),
      'the drop was seen as the session ending, not a sink failure',
    );
    const msgs = await stack.queueMessages('out-x-drop');
    assert.equal(new Set(msgs.map((m) => m.idempotencyKey)).size, 2);
    const big = msgs.find((m) => m.headers.subject === 'big one')!;
    assert.equal(big.attachments.length, 1);
    assert.equal(big.attachments[0].size, BIG);
    const bytes = await stack.blobBytes(big.container, big.attachments[0].blob);
    assert.equal(createHash('sha256').update(bytes).digest('hex'), M.largeAttachmentSha256(BIG));
  });

  test('"Request is throttled. Suggested Backoff Time: N milliseconds" → waits N ms once (imapflow waits it; Postroom adds nothing) and carries on', async () => {
    await stack.sandbox.dovecot.deliver(MAILBOXES.proxy, M.plainMessage({ subject: 'throttle' }));
    const rt = await stack.runtime([viaProxy(MAILBOXES.proxy)], { env: { POSTROOM_OUTPUT_QUEUE: 'out-x-thr' } });
    await rt.state.delete(rt.config.mailboxes[0].id, CHECKPOINT_KEY);
    proxy.next({ commands: [{ match: /^\S+ (SELECT|EXAMINE) /i, reply: [`{tag} ${EXCHANGE.throttled(300)}`] }] });
    const t0 = Date.now();
    const r = await pollMailbox(rt, rt.config.mailboxes[0]);
    assert.equal(r.outcome, 'ok', r.error?.message);
    assert.ok(Date.now() - t0 >= 300, 'the back-off was waited');
    assert.ok(
      rt.log.lines.some((l) => /"code":"Throttled"/.test(l) && /back off 300 ms/.test(l) && /"waitMs":0/.test(l)),
      rt.log.lines.join('\n'),
    );
    assert.equal(r.delivered.length, 7);
  });

  test('a message mailparser cannot parse is delivered with its raw kept and parseError set', async () => {
    const box = MAILBOXES.poison;
    const broken = Buffer.from(`Subject: ${'x'.repeat(2_200_000)}\r\nFrom: a@b.test\r\n\r\nbody\r\n`);
    await stack.sandbox.dovecot.deliver(box, broken);
    await stack.sandbox.dovecot.deliver(box, M.plainMessage({ subject: 'fine' }));
    const rt = await stack.runtime([{ address: box, protocol: 'imap' }], { env: { POSTROOM_OUTPUT_QUEUE: 'out-x-parse' } });
    const r = await pollMailbox(rt, rt.config.mailboxes[0]);
    assert.equal(r.outcome, 'ok', r.error?.message);
    const msgs = await stack.queueMessages('out-x-parse');
    assert.equal(msgs.length, 2);
    const bad = msgs.find((m) => m.parseError);
    assert.ok(bad, 'flagged');
    assert.match(bad.parseError, /header/i);
    assert.equal(bad.size, broken.length);
    assert.deepEqual(await stack.blobBytes(bad.container, bad.raw.blob), broken);
    assert.equal((await rt.state.get<any>(rt.config.mailboxes[0].id, CHECKPOINT_KEY))!.value.lastUid, 2);
  });
});

describe('the functions through the local host (queue trigger semantics)', () => {
  test('pollSchedule fans out one job per mailbox; pollMailbox runs them', async () => {
    await stack.sandbox.dovecot.deliver(MAILBOXES.pop, M.plainMessage({ subject: 'via host' }));
    await stack.sandbox.dovecot.deliver(MAILBOXES.happy, M.plainMessage({ subject: 'via host imap' }));
    const rt = await stack.runtime(
      [
        { address: MAILBOXES.happy, protocol: 'imap' },
        { address: MAILBOXES.pop, protocol: 'pop3' },
      ],
      { env: { POSTROOM_OUTPUT_QUEUE: 'out-host', POSTROOM_JOBS_QUEUE: 'jobs-host' } },
    );
    const handled: boolean[] = [];
    const host = await startLocalHost({ runtime: rt, logger: rt.log, schedule: '0 0 0 1 1 *', onHandled: (e) => handled.push(e.ok) });
    try {
      await host.tick();
      await host.drain();
    } finally {
      await host.stop();
    }
    assert.deepEqual(handled, [true, true]);
    const msgs = await stack.queueMessages('out-host');
    assert.ok(msgs.some((m) => m.source.protocol === 'pop3' && m.headers.subject === 'via host'));
    assert.ok(msgs.some((m) => m.source.protocol === 'imap' && m.headers.subject === 'via host imap'));

    // the ops view: the HTTP status function reports each mailbox's last poll
    const { status } = await import('../functions/status.js');
    const res = await status({} as never, {} as never);
    assert.equal(res.status, 200);
    const report = res.jsonBody as { mailboxes: Array<{ id: string; status: { lastResult: string; lastDelivered: number; lastPollAt: string } | null }> };
    assert.equal(report.mailboxes.length, 2);
    for (const m of report.mailboxes) {
      assert.equal(m.status?.lastResult, 'ok', m.id);
      assert.ok(m.status.lastDelivered >= 1);
      assert.ok(Date.parse(m.status.lastPollAt) > Date.now() - 60_000);
    }
  });

  test('a job that keeps failing lands in <jobs>-poison with its reason logged; a malformed job too', async () => {
    const { freePort } = await import('../sandbox/ports.js');
    const port = await freePort();
    const rt = await stack.runtime([{ address: MAILBOXES.neg, protocol: 'imap', host: '127.0.0.1', port }], {
      env: { POSTROOM_OUTPUT_QUEUE: 'out-poison', POSTROOM_JOBS_QUEUE: 'jobs-poison' },
    });
    const events: Array<{ ok: boolean; poisoned: boolean }> = [];
    const host = await startLocalHost({ runtime: rt, logger: rt.log, schedule: '0 0 0 1 1 *', retryVisibilitySeconds: 0, onHandled: (e) => events.push(e) });
    try {
      await host.tick();
      const jobs = await rt.storage.queue('jobs-poison');
      await jobs.sendMessage(Buffer.from('{"not":"a job"}').toString('base64'));
      for (let i = 0; i < 40 && events.filter((e) => e.poisoned).length < 2; i++) {
        await host.drain();
        await new Promise((r) => setTimeout(r, 50));
      }
    } finally {
      await host.stop();
    }
    assert.equal(events.filter((e) => e.poisoned).length, 2);
    assert.equal(events.filter((e) => !e.ok).length, 10, '5 tries each');
    const poison = await rt.storage.queue('jobs-poison-poison');
    const { peekedMessageItems } = await poison.peekMessages({ numberOfMessages: 10 });
    assert.equal(peekedMessageItems.length, 2);
    assert.ok(rt.log.lines.some((l) => /moved to jobs-poison-poison/.test(l) && /mail server could not be reached/.test(l)));
    assert.ok(rt.log.lines.some((l) => /moved to jobs-poison-poison/.test(l) && /not a postroom\.job\.v1/.test(l)));
  });
});
