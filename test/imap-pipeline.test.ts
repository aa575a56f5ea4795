import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { BlobServiceClient } from '@azure/storage-blob';
import { startStack, MAILBOXES, NO_IMAP_APP, type Stack } from './support/stack.js';
import { pollMailbox } from '../shared/poll/poll-mailbox.js';
import { CHECKPOINT_KEY } from '../shared/imap/source.js';
import { PostroomError } from '../shared/errors.js';
import { SANDBOX_APP } from '../sandbox/index.js';
import * as M from '../sandbox/messages.js';

const BIG = 20 * 1024 * 1024;
let stack: Stack;

before(async () => {
  stack = await startStack();
});
after(async () => {
  await stack?.stop();
});

const imap = (address: string, extra: Record<string, unknown> = {}) => ({ address, protocol: 'imap', ...extra });
const q = (name: string) => ({ POSTROOM_OUTPUT_QUEUE: `out-${name}` });

describe('IMAP pipeline against Dovecot + Azurite + the local token endpoint', () => {
  test('happy path: a shared mailbox with varied messages and a 20 MB attachment', async () => {
    const box = MAILBOXES.happy;
    const raws = [M.plainMessage({ subject: 'Plain one' }), M.multipartWithAttachments(), M.nonUtf8Message(), M.eightBitHeadersMessage(), M.noMessageIdMessage()];
    for (const r of raws) await stack.sandbox.dovecot.deliver(box, r);
    await stack.sandbox.dovecot.deliver(box, M.largeAttachmentStream(BIG, { subject: 'Big one' }));
    const rt = await stack.runtime([imap(box)], { env: q('happy') });
    const result = await pollMailbox(rt, rt.config.mailboxes[0]);
    assert.equal(result.outcome, 'ok', result.error?.message);
    assert.equal(result.delivered.length, 6);

    const msgs = await stack.queueMessages('out-happy');
    assert.equal(msgs.length, 6);
    for (const m of msgs) {
      assert.equal(m.schema, 'postroom.message.v1');
      assert.match(m.idempotencyKey, /^[0-9a-f]{64}$/);
      assert.equal(m.source.mailbox, box);
      assert.equal(m.parseError, null);
    }
    assert.equal(new Set(msgs.map((m) => m.idempotencyKey)).size, 6);
    const bySubject = (re: RegExp) => msgs.find((m) => re.test(m.headers.subject ?? ''));

    // raw kept byte-exact
    const plain = bySubject(/^Plain one$/);
    assert.ok(plain);
    assert.deepEqual(await stack.blobBytes(plain.container, plain.raw.blob), raws[0]);
    assert.equal(plain.sha256, createHash('sha256').update(raws[0]).digest('hex'));
    assert.match(plain.text.content, /plain test message/);
    assert.equal(plain.headers.from[0].address, 'alice@fabrikam.test');

    // multipart: attachments in blob storage under safe names, with content types
    const multi = msgs.find((m) => m.attachments.length >= 2 && m.size < 1e6)!;
    assert.ok(multi, 'multipart message');
    for (const a of multi.attachments) {
      assert.doesNotMatch(a.blob, /\.\.|[\u0000-\u001f]/);
      assert.ok(a.blob.startsWith(`${rt.config.mailboxes[0].key}/${multi.idempotencyKey}/attachments/`));
      const props = await stack.blobProperties(multi.container, a.blob);
      assert.equal(props.contentLength, a.size);
    }
    const hostile = multi.attachments.find((a: any) => a.filename === M.HOSTILE_FILENAME);
    assert.ok(hostile, 'the original (hostile) filename is reported as data');
    assert.ok(hostile.blob.endsWith('-passwd.txt'), hostile.blob);
    assert.ok(multi.attachments.some((a: any) => a.filename === M.UNICODE_FILENAME));
    assert.ok(multi.html?.content || multi.html?.blob, 'html body kept');

    // non-UTF-8 charsets decoded to Unicode
    const latin = bySubject(/^Grüße aus Köln$/);
    assert.ok(latin, 'ISO-8859-1 encoded-word subject decoded');
    assert.match(latin.text.content, /schöne Straße/);
    assert.match(latin.text.content, /€ 5 – “quoted”/);
    // raw 8-bit UTF-8 headers
    const eight = bySubject(/^Bestellbestätigung – 注文 №42 ✓$/);
    assert.ok(eight, '8-bit subject read as UTF-8');
    assert.equal(eight.headers.from[0].name, 'Jürgen Müller');

    // no Message-ID
    assert.ok(msgs.some((m) => m.headers.messageId === null));

    // 20 MB attachment streamed to a blob intact
    const big = bySubject(/^Big one$/);
    assert.ok(big);
    const att = big.attachments.find((a: any) => a.filename === M.LARGE_ATTACHMENT_FILENAME);
    assert.equal(att.size, BIG);
    const bytes = await stack.blobBytes(big.container, att.blob);
    assert.equal(createHash('sha256').update(bytes).digest('hex'), M.largeAttachmentSha256(BIG));

    // checkpoint advanced to the last UID
    const cp = await rt.state.get<any>(rt.config.mailboxes[0].id, CHECKPOINT_KEY);
    assert.equal(cp?.value.lastUid, 6);
    // nothing secret or body-like in the logs
    const logs = rt.log.lines.join('\n');
    assert.doesNotMatch(logs, /eyJ[A-Za-z0-9_-]{10,}\.|sandbox-secret-value|plain test message/);
  });

  test('a 1.4 MB message (streamed from IMAP) is stored in one Put Blob, byte-exact, its attachment too', async () => {
    const box = MAILBOXES.proxy;
    const size = 1024 * 1024;
    await stack.sandbox.dovecot.deliver(box, M.largeAttachmentStream(size, { subject: 'Mid-size' }));
    const rt = await stack.runtime([imap(box)], { env: q('mid') });
    const result = await pollMailbox(rt, rt.config.mailboxes[0]);
    assert.equal(result.outcome, 'ok', result.error?.message);
    const [m] = await stack.queueMessages('out-mid');
    assert.ok(m.size > 1024 * 1024 && m.size < 2 * 1024 * 1024, `size ${m.size}`);
    const raw = await stack.blobBytes(m.container, m.raw.blob);
    assert.equal(raw.length, m.size);
    assert.equal(createHash('sha256').update(raw).digest('hex'), m.sha256);
    // One Put Blob: a blob written as staged blocks has a committed block list.
    const container = BlobServiceClient.fromConnectionString(stack.sandbox.azurite.connectionString).getContainerClient(m.container);
    const blocks = await container.getBlockBlobClient(m.raw.blob).getBlockList('committed');
    assert.equal(blocks.committedBlocks?.length ?? 0, 0);
    const att = m.attachments.find((a: any) => a.filename === M.LARGE_ATTACHMENT_FILENAME);
    const bytes = await stack.blobBytes(m.container, att.blob);
    assert.equal(createHash('sha256').update(bytes).digest('hex'), M.largeAttachmentSha256(size));
  });

  test('incremental: the second poll ingests only new mail; an idle poll sends no SEARCH', async () => {
    const box = MAILBOXES.incr;
    for (let i = 0; i < 3; i++) await stack.sandbox.dovecot.deliver(box, M.plainMessage({ subject: `first ${i}` }));
    const rt = await stack.runtime([imap(box)], { env: q('incr') });
    const mb = rt.config.mailboxes[0];
    assert.equal((await pollMailbox(rt, mb)).delivered.length, 3);
    await stack.sandbox.dovecot.deliver(box, M.plainMessage({ subject: 'second 0' }));
    await stack.sandbox.dovecot.deliver(box, M.plainMessage({ subject: 'second 1' }));
    const r2 = await pollMailbox(rt, mb);
    assert.deepEqual(r2.delivered.map((d) => d.subject).sort(), ['second 0', 'second 1']);
    const commands: string[] = [];
    const r3 = await pollMailbox(rt, mb, { hooks: { onCommand: (c) => commands.push(c) } });
    assert.equal(r3.delivered.length, 0);
    assert.ok(!commands.includes('SEARCH') && !commands.includes('UID SEARCH') && !commands.some((c) => /FETCH/.test(c)), commands.join(','));
    assert.equal((await stack.queueMessages('out-incr')).length, 5);
  });

  test('UIDVALIDITY change: the folder is re-read, every message flagged resync, none lost', async () => {
    const box = MAILBOXES.uidv;
    for (let i = 0; i < 3; i++) await stack.sandbox.dovecot.deliver(box, M.plainMessage({ subject: `uv ${i}` }));
    const rt = await stack.runtime([imap(box)], { env: q('uidv') });
    const mb = rt.config.mailboxes[0];
    await pollMailbox(rt, mb);
    const before = await rt.state.get<any>(mb.id, CHECKPOINT_KEY);
    await stack.sandbox.dovecot.resetUidValidity(box);
    await stack.sandbox.dovecot.deliver(box, M.plainMessage({ subject: 'uv new' }));
    const r = await pollMailbox(rt, mb);
    assert.equal(r.outcome, 'ok', r.error?.message);
    assert.equal(r.delivered.length, 4);
    const msgs = await stack.queueMessages('out-uidv');
    const resynced = msgs.filter((m) => m.resync);
    assert.equal(resynced.length, 4);
    assert.ok(resynced.every((m) => m.resync.previousValidity === before!.value.uidValidity && m.source.validity !== before!.value.uidValidity));
    assert.ok(rt.log.lines.some((l) => /UIDVALIDITY changed/.test(l)));
    const after2 = await rt.state.get<any>(mb.id, CHECKPOINT_KEY);
    assert.notEqual(after2!.value.uidValidity, before!.value.uidValidity);
    assert.equal((await pollMailbox(rt, mb)).delivered.length, 0, 'settled after the resync');
  });

  for (const [name, box, action] of [
    ['seen', MAILBOXES.seen, 'seen'],
    ['move', MAILBOXES.move, 'move:Archive'],
    ['delete', MAILBOXES.del, 'delete'],
  ] as const) {
    test(`post-action ${action} applies after the durable enqueue`, async () => {
      await stack.sandbox.dovecot.deliver(box, M.plainMessage({ subject: `pa ${name} 1` }));
      await stack.sandbox.dovecot.deliver(box, M.multipartWithAttachments({ subject: `pa ${name} 2` }));
      const rt = await stack.runtime([imap(box, { postAction: action })], { env: q(`pa-${name}`) });
      const r = await pollMailbox(rt, rt.config.mailboxes[0]);
      assert.equal(r.outcome, 'ok', r.error?.message);
      assert.equal((await stack.queueMessages(`out-pa-${name}`)).length, 2);
      const inbox = await stack.sandbox.dovecot.listMessages(box);
      if (action === 'seen') {
        assert.equal(inbox.length, 2);
        assert.ok(
          inbox.every((m) => m.flags.includes('S')),
          JSON.stringify(inbox),
        );
      } else if (action === 'move:Archive') {
        assert.equal(inbox.length, 0);
        assert.equal((await stack.sandbox.dovecot.listMessages(box, 'Archive')).length, 2);
      } else {
        assert.equal(inbox.length, 0);
      }
    });
  }

  test('post-action none leaves the mailbox untouched (a shared mailbox is read by people too)', async () => {
    const inbox = await stack.sandbox.dovecot.listMessages(MAILBOXES.happy);
    assert.equal(inbox.length, 6);
    assert.ok(inbox.every((m) => !m.flags.includes('S')));
  });

  test('a crash between queue write and checkpoint re-delivers with the same keys; nothing lost', async () => {
    const box = MAILBOXES.crash;
    for (let i = 0; i < 4; i++) await stack.sandbox.dovecot.deliver(box, M.plainMessage({ subject: `crash ${i}` }));
    const rt = await stack.runtime([imap(box)], { env: { ...q('crash'), POSTROOM_BATCH_SIZE: '2' } });
    const mb = rt.config.mailboxes[0];
    let batches = 0;
    const r1 = await pollMailbox(rt, mb, {
      beforeAcknowledge: () => {
        if (++batches === 2) throw new Error('simulated crash after the queue write');
      },
    });
    assert.equal(r1.outcome, 'failed');
    assert.equal(r1.delivered.length, 2, 'the first batch was acknowledged');
    assert.equal((await rt.state.get<any>(mb.id, CHECKPOINT_KEY))!.value.lastUid, 2);
    const r2 = await pollMailbox(rt, mb);
    assert.equal(r2.outcome, 'ok');
    assert.equal(r2.delivered.length, 2);
    const msgs = await stack.queueMessages('out-crash');
    assert.equal(msgs.length, 6, '4 messages + 2 re-deliveries');
    const keys = new Map<string, number>();
    for (const m of msgs) keys.set(m.idempotencyKey, (keys.get(m.idempotencyKey) ?? 0) + 1);
    assert.equal(keys.size, 4, 'every message present');
    assert.deepEqual([...keys.values()].sort(), [1, 1, 2, 2], 'the unacknowledged batch re-delivered under the same keys');
  });

  test('two concurrent pollers on one mailbox: one works, one backs off', async () => {
    const box = MAILBOXES.race;
    for (let i = 0; i < 3; i++) await stack.sandbox.dovecot.deliver(box, M.plainMessage({ subject: `race ${i}` }));
    const rt1 = await stack.runtime([imap(box)], { env: q('race') });
    const rt2 = await stack.runtime([imap(box)], { env: q('race') });
    const [a, b] = await Promise.all([pollMailbox(rt1, rt1.config.mailboxes[0]), pollMailbox(rt2, rt2.config.mailboxes[0])]);
    assert.deepEqual([a.outcome, b.outcome].sort(), ['leased', 'ok']);
    assert.equal((await stack.queueMessages('out-race')).length, 3);
  });

  test('Key Vault path through the real SDK; one token and one secret read across several polls', async () => {
    const box = MAILBOXES.vault;
    await stack.sandbox.dovecot.deliver(box, M.plainMessage({ subject: 'kv 1' }));
    const rt = await stack.runtime([imap(box)], { env: q('vault'), keyVault: true });
    const mb = rt.config.mailboxes[0];
    const tokensBefore = stack.sandbox.token.tokenRequestsFor(SANDBOX_APP.clientId, 'https://outlook.office365.com');
    const readsBefore = stack.vault.reads('postroom-client-secret');
    for (let i = 0; i < 3; i++) {
      const r = await pollMailbox(rt, mb);
      assert.equal(r.outcome, 'ok', r.error?.message);
    }
    assert.equal(stack.vault.reads('postroom-client-secret') - readsBefore, 1, 'one Key Vault read');
    assert.equal(stack.sandbox.token.tokenRequestsFor(SANDBOX_APP.clientId, 'https://outlook.office365.com') - tokensBefore, 1, 'one outlook token');
    assert.equal((await stack.queueMessages('out-vault')).length, 1);
  });

  test('a rotated secret in Key Vault: AADSTS7000215 makes Postroom re-read it once, then it works', async () => {
    const box = MAILBOXES.vault;
    const rt = await stack.runtime([imap(box)], { env: q('vault-rot'), keyVault: true });
    stack.vault.setSecret('postroom-client-secret', 'stale-secret');
    // prime the cache with the stale value: the first poll fails and re-reads once (still stale)
    const r1 = await pollMailbox(rt, rt.config.mailboxes[0]);
    assert.equal(r1.outcome, 'failed');
    assert.equal(r1.error?.code, 'InvalidClientSecret');
    assert.match(r1.error.message, /Value \(not its Secret ID\)/);
    assert.doesNotMatch(r1.error.message, /stale-secret/);
    stack.vault.setSecret('postroom-client-secret', SANDBOX_APP.clientSecret);
    await stack.sandbox.dovecot.deliver(box, M.plainMessage({ subject: 'kv 2' }));
    const r2 = await pollMailbox(rt, rt.config.mailboxes[0]);
    assert.equal(r2.outcome, 'ok', r2.error?.message);
  });

  describe('failures: a clear error, checkpoint untouched, nothing acknowledged', () => {
    const assertUntouched = async (rt: any, queue: string) => {
      assert.equal(await rt.state.get(rt.config.mailboxes[0].id, CHECKPOINT_KEY), undefined);
      assert.equal((await stack.queueMessages(queue)).length, 0);
      assert.equal(
        (await stack.sandbox.dovecot.listMessages(MAILBOXES.neg)).every((m) => !m.flags.includes('S')),
        true,
      );
    };
    before(async () => {
      await stack.sandbox.dovecot.deliver(MAILBOXES.neg, M.plainMessage({ subject: 'neg' }));
    });

    test('wrong client secret → InvalidClientSecret (AADSTS7000215) naming the fix', async () => {
      const rt = await stack.runtime([imap(MAILBOXES.neg, { postAction: 'seen' })], { env: q('neg-secret'), app: { ...SANDBOX_APP, clientSecret: 'wrong' } });
      const r = await pollMailbox(rt, rt.config.mailboxes[0]);
      assert.equal(r.error?.code, 'InvalidClientSecret');
      assert.equal(r.error?.serverResponseCode, 'AADSTS7000215');
      await assertUntouched(rt, 'out-neg-secret');
      assert.equal(r.status?.consecutiveFailures, 1);
    });

    test('token without IMAP.AccessAsApp → MissingRole naming the admin consent step', async () => {
      const rt = await stack.runtime([imap(MAILBOXES.neg, { postAction: 'seen' })], { env: q('neg-role'), app: NO_IMAP_APP });
      const r = await pollMailbox(rt, rt.config.mailboxes[0]);
      assert.equal(r.error?.code, 'MissingRole');
      assert.match(r.error.message, /IMAP\.AccessAsApp/);
      assert.match(r.error.message, /Grant admin consent/);
      await assertUntouched(rt, 'out-neg-role');
    });

    test('mailbox not granted to the app → AuthenticationFailed naming Add-MailboxPermission', async () => {
      const rt = await stack.runtime([imap(MAILBOXES.ungranted)], { env: q('neg-grant') });
      const r = await pollMailbox(rt, rt.config.mailboxes[0]);
      // The refusal, narrowed down by the poll: the sandbox refuses an ungranted mailbox over every protocol.
      assert.equal((r.error?.cause as PostroomError | undefined)?.code, 'AuthenticationFailed');
      assert.equal(r.error?.code, 'ServicePrincipalNotRegistered');
      assert.match(r.error.message, /Add-MailboxPermission/);
      assert.equal(await rt.state.get(rt.config.mailboxes[0].id, CHECKPOINT_KEY), undefined);
      assert.equal((await stack.queueMessages('out-neg-grant')).length, 0);
    });

    test('unreachable server → ConnectionFailed, retryable', async () => {
      const { freePort } = await import('../sandbox/ports.js');
      const port = await freePort();
      const rt = await stack.runtime([imap(MAILBOXES.neg, { host: '127.0.0.1', port })], { env: q('neg-net') });
      const r = await pollMailbox(rt, rt.config.mailboxes[0]);
      assert.equal(r.error?.code, 'ConnectionFailed');
      assert.equal(r.error?.retryable, true);
      assert.ok(r.error instanceof PostroomError);
      await assertUntouched(rt, 'out-neg-net');
    });
  });
});
