import type { PostroomError } from '../shared/errors.js';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import tls from 'node:tls';
import { startStack, MAILBOXES, NO_POP_APP, type Stack } from './support/stack.js';
import { startFaultProxy, EXCHANGE, type FaultProxy } from './support/fault-proxy.js';
import { pollMailbox } from '../shared/poll/poll-mailbox.js';
import { xoauth2Blob } from '../shared/pop3/index.js';
import * as M from '../sandbox/messages.js';

const BIG = 20 * 1024 * 1024;
let stack: Stack;
let proxy: FaultProxy;

before(async () => {
  stack = await startStack();
  proxy = await startFaultProxy({
    targetPort: stack.sandbox.dovecot.pop3Port,
    cert: stack.sandbox.certs.cert,
    key: stack.sandbox.certs.key,
    ca: stack.sandbox.certs.ca,
    protocol: 'pop3',
  });
});
after(async () => {
  await proxy?.close();
  await stack?.stop();
});

const pop = (address: string, extra: Record<string, unknown> = {}) => ({ address, protocol: 'pop3', ...extra });

describe('POP3 pipeline against Dovecot POP3 with app-token checks', () => {
  test('happy path, then an incremental second poll delivering only new UIDLs', async () => {
    const box = MAILBOXES.pop;
    const raws = [M.plainMessage({ subject: 'pop plain' }), M.multipartWithAttachments({ subject: 'pop multi' }), M.nonUtf8Message(), M.noMessageIdMessage()];
    // a body line that starts with "." must survive dot-stuffing both ways
    raws.push(Buffer.from('Subject: dots\r\nFrom: a@b.test\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nnot the end\r\n'));
    for (const r of raws) await stack.sandbox.dovecot.deliver(box, r);
    await stack.sandbox.dovecot.deliver(box, M.largeAttachmentStream(BIG, { subject: 'pop big' }));
    const rt = await stack.runtime([pop(box)], { env: { POSTROOM_OUTPUT_QUEUE: 'out-pop' } });
    const mb = rt.config.mailboxes[0];
    const r1 = await pollMailbox(rt, mb);
    assert.equal(r1.outcome, 'ok', r1.error?.message);
    assert.equal(r1.delivered.length, 6);
    const msgs = await stack.queueMessages('out-pop');
    assert.equal(msgs.length, 6);
    assert.ok(msgs.every((m) => m.source.protocol === 'pop3' && m.source.validity === 'pop3' && m.source.folder === 'INBOX'));
    const dots = msgs.find((m) => m.headers.subject === 'dots');
    assert.deepEqual(await stack.blobBytes(dots.container, dots.raw.blob), raws[4], 'dot-unstuffed byte-exact');
    const big = msgs.find((m) => m.headers.subject === 'pop big');
    const att = big.attachments.find((a: any) => a.filename === M.LARGE_ATTACHMENT_FILENAME);
    assert.equal(
      createHash('sha256')
        .update(await stack.blobBytes(big.container, att.blob))
        .digest('hex'),
      M.largeAttachmentSha256(BIG),
    );

    await stack.sandbox.dovecot.deliver(box, M.plainMessage({ subject: 'pop new' }));
    const r2 = await pollMailbox(rt, mb);
    assert.deepEqual(
      r2.delivered.map((d) => d.subject),
      ['pop new'],
    );
    assert.equal((await pollMailbox(rt, mb)).delivered.length, 0);
    assert.equal((await stack.sandbox.dovecot.listMessages(box)).length, 7, 'post-action none leaves mail on the server');
  });

  test('post-action delete: DELE only after the queue write, committed by QUIT', async () => {
    const box = MAILBOXES.popdel;
    for (let i = 0; i < 3; i++) await stack.sandbox.dovecot.deliver(box, M.plainMessage({ subject: `del ${i}` }));
    const rt = await stack.runtime([pop(box, { postAction: 'delete' })], { env: { POSTROOM_OUTPUT_QUEUE: 'out-popdel' } });
    const r = await pollMailbox(rt, rt.config.mailboxes[0]);
    assert.equal(r.outcome, 'ok', r.error?.message);
    assert.equal((await stack.queueMessages('out-popdel')).length, 3);
    assert.equal((await stack.sandbox.dovecot.listMessages(box)).length, 0);
  });

  test('a connection lost before QUIT deletes nothing; the next poll deletes what was queued instead of delivering it again', async () => {
    const box = MAILBOXES.popcrash;
    for (let i = 0; i < 4; i++) await stack.sandbox.dovecot.deliver(box, M.plainMessage({ subject: `crash ${i}` }));
    const rt = await stack.runtime([pop(box, { postAction: 'delete' })], { env: { POSTROOM_OUTPUT_QUEUE: 'out-popcrash', POSTROOM_BATCH_SIZE: '2' } });
    const mb = rt.config.mailboxes[0];
    let n = 0;
    const r1 = await pollMailbox(rt, mb, {
      beforeAcknowledge: () => {
        if (++n === 2) throw new Error('simulated crash: the first batch was DELEd, QUIT never sent');
      },
    });
    assert.equal(r1.outcome, 'failed');
    assert.equal((await stack.sandbox.dovecot.listMessages(box)).length, 4, 'nothing deleted without QUIT');
    const r2 = await pollMailbox(rt, mb);
    assert.equal(r2.outcome, 'ok', r2.error?.message);
    assert.equal(r2.delivered.length, 2, 'only the batch never acknowledged is delivered again; the acknowledged one is deleted, not re-delivered');
    assert.equal((await stack.sandbox.dovecot.listMessages(box)).length, 0, 'the next session deleted what the first had queued');
    const keys = (await stack.queueMessages('out-popcrash')).map((m) => m.idempotencyKey);
    assert.equal(keys.length, 6, '4 from the crashed poll (2 batches written) + the 2 never acknowledged');
    assert.equal(new Set(keys).size, 4, 'same keys on re-delivery');
  });

  test('token without POP.AccessAsApp → MissingRole; Dovecot refuses it too', async () => {
    const rt = await stack.runtime([pop(MAILBOXES.pop)], { env: { POSTROOM_OUTPUT_QUEUE: 'out-pop-role' }, app: NO_POP_APP });
    const r = await pollMailbox(rt, rt.config.mailboxes[0]);
    assert.equal(r.error?.code, 'MissingRole');
    assert.match(r.error.message, /POP\.AccessAsApp/);
    // the server's own check: the same token, sent anyway, is refused
    const token = await stack.sandbox.token.signToken({ appid: NO_POP_APP.clientId, roles: ['IMAP.AccessAsApp'] });
    assert.match(await rawPopAuth(stack.sandbox.dovecot.pop3Port, MAILBOXES.pop, token, 'two-step'), /^-ERR \[AUTH\] Authentication failed/);
    // and the same exchange with the POP role is accepted, so the refusal is the role's
    const good = await stack.sandbox.token.signToken({ appid: NO_POP_APP.clientId, roles: ['POP.AccessAsApp'] });
    assert.match(await rawPopAuth(stack.sandbox.dovecot.pop3Port, MAILBOXES.pop, good, 'two-step'), /^\+OK/);
  });

  test('mailbox not granted to the app → AuthenticationFailed with the admin steps; nothing delivered', async () => {
    const rt = await stack.runtime([pop(MAILBOXES.ungranted)], { env: { POSTROOM_OUTPUT_QUEUE: 'out-pop-grant' } });
    const r = await pollMailbox(rt, rt.config.mailboxes[0]);
    // The refusal, narrowed down by the poll: the sandbox refuses an ungranted mailbox over every protocol.
    assert.equal((r.error?.cause as PostroomError | undefined)?.code, 'AuthenticationFailed');
    assert.equal(r.error?.code, 'ServicePrincipalNotRegistered');
    assert.match(r.error.message, /Add-MailboxPermission/);
    assert.equal((await stack.queueMessages('out-pop-grant')).length, 0);
  });

  test("Exchange's POP3 auth failure text maps to AuthenticationFailed", async () => {
    const rt = await stack.runtime([pop(MAILBOXES.pop, { host: '127.0.0.1', port: proxy.port })], { env: { POSTROOM_OUTPUT_QUEUE: 'out-pop-x' } });
    proxy.setDefault({ replies: [{ match: /^\+OK Logged in\.?$/, replace: EXCHANGE.pop3AuthFailed }] });
    const before = proxy.connections;
    const r = await pollMailbox(rt, rt.config.mailboxes[0]).finally(() => proxy.setDefault({}));
    assert.equal(proxy.connections - before, 3, "one retry with a fresh token, then the diagnosis' POP probe");
    // IMAP (not behind the proxy) opens the mailbox with the same token: the poll's diagnosis says POP is off.
    assert.equal((r.error?.cause as PostroomError | undefined)?.code, 'AuthenticationFailed');
    assert.equal(r.error?.code, 'ProtocolDisabled');
    assert.match(r.error.responseText ?? '', /unknown user name or bad password/);
  });

  test('one-line AUTH XOAUTH2 <blob> is what Exchange rejects; Postroom always uses the two-step exchange', async () => {
    // Exchange answers the one-line form with "-ERR Protocol error. Connection is closed. 10" (reported):
    // the proxy plays that part, and Postroom's client must never trigger it.
    const exchangeRule = { commands: [{ match: /^AUTH XOAUTH2 \S+/i, reply: ['-ERR Protocol error. Connection is closed. 10'], close: true }] };
    proxy.setDefault(exchangeRule);
    try {
      const token = (await (await stack.runtime([pop(MAILBOXES.pop)])).tokens((await stack.runtime([pop(MAILBOXES.pop)])).config.apps[0]).getToken()).token;
      assert.match(await rawPopAuth(proxy.port, MAILBOXES.pop, token, 'one-line'), /^-ERR Protocol error\. Connection is closed\. 10/);
      assert.match(await rawPopAuth(proxy.port, MAILBOXES.pop, token, 'two-step'), /^\+OK/);
      await stack.sandbox.dovecot.deliver(MAILBOXES.pop, M.plainMessage({ subject: 'two-step' }));
      const rt = await stack.runtime([pop(MAILBOXES.pop, { host: '127.0.0.1', port: proxy.port })], { env: { POSTROOM_OUTPUT_QUEUE: 'out-pop-1l' } });
      const r = await pollMailbox(rt, rt.config.mailboxes[0]);
      assert.equal(r.outcome, 'ok', r.error?.message);
    } finally {
      proxy.setDefault({});
    }
  });
});

/** A bare POP3 AUTH XOAUTH2 over TLS, returning the server's final reply line. */
async function rawPopAuth(port: number, user: string, token: string, form: 'one-line' | 'two-step'): Promise<string> {
  const blob = xoauth2Blob(user, token);
  const socket = tls.connect({ host: '127.0.0.1', port, ca: stack.sandbox.certs.ca, servername: 'localhost' });
  const lines: string[] = [];
  let buf = '';
  let closed = false;
  let wake: (() => void) | undefined;
  // One listener for the socket's life: bytes that arrive between two reads are kept.
  socket.on('data', (d: Buffer) => {
    buf += d.toString('latin1');
    wake?.();
  });
  socket.on('close', () => {
    closed = true;
    wake?.();
  });
  socket.on('error', () => undefined);
  const next = async (): Promise<string> => {
    for (;;) {
      const i = buf.indexOf('\r\n');
      if (i >= 0) {
        const l = buf.slice(0, i);
        buf = buf.slice(i + 2);
        lines.push(l);
        return l;
      }
      if (closed) throw new Error(`closed after ${JSON.stringify(lines)}`);
      await new Promise<void>((r) => (wake = r));
    }
  };
  try {
    await next(); // greeting
    if (form === 'one-line') {
      socket.write(`AUTH XOAUTH2 ${blob}\r\n`);
      return await next();
    }
    socket.write('AUTH XOAUTH2\r\n');
    const plus = await next();
    if (!/^\+( |$)/.test(plus)) return plus;
    socket.write(`${blob}\r\n`);
    let reply = await next();
    if (/^\+( |$)/.test(reply)) {
      socket.write('\r\n'); // answer the error challenge with an empty line
      reply = await next();
    }
    return reply;
  } finally {
    socket.destroy();
  }
}
