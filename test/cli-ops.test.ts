import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join, resolve } from 'node:path';
import { QueueClient } from '@azure/storage-queue';
import { encodeQueueJson } from '../shared/queue-json.js';
import { JOB_SCHEMA } from '../shared/poll/jobs.js';
import { setRuntime } from '../shared/runtime.js';
import { Writable } from 'node:stream';
import { main } from '../shared/cli/main.js';
import { plainMessage } from '../sandbox/messages.js';
import { MAILBOXES, startStack, type Stack } from './support/stack.js';

const root = resolve(import.meta.dirname, '..', '..');
const HAPPY = MAILBOXES.happy;
const POP = MAILBOXES.pop;
const UNGRANTED = MAILBOXES.ungranted;
const MAILBOX_SETTINGS = [
  { address: HAPPY, protocol: 'imap' },
  { address: POP, protocol: 'pop3' },
  { address: UNGRANTED, protocol: 'imap' },
];

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

describe('postroom CLI against the local stack (poll, status, poison)', () => {
  let stack: Stack;
  let env: Record<string, string>;
  const cli = (...args: string[]): Promise<Run> =>
    new Promise((res) => {
      execFile(process.execPath, [join(root, 'bin', 'postroom.mjs'), ...args], { cwd: stack.dir, env: { PATH: process.env.PATH, ...env }, timeout: 60_000 }, (e, stdout, stderr) =>
        res({ code: e ? ((e as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      );
    });
  const queue = (name: string) => new QueueClient(stack.sandbox.azurite.connectionString, name);

  before(async () => {
    stack = await startStack();
    env = { ...stack.sandbox.env(MAILBOX_SETTINGS), POSTROOM_CONCURRENCY: '4', POSTROOM_BATCH_SIZE: '2' };
    for (let i = 0; i < 5; i++) await stack.sandbox.dovecot.deliver(HAPPY, plainMessage({ subject: `CLI ${i}` }));
    for (let i = 0; i < 2; i++) await stack.sandbox.dovecot.deliver(POP, plainMessage({ subject: `CLI pop ${i}` }));
  });
  after(async () => {
    setRuntime(undefined);
    await stack?.stop();
  });

  it('status before any poll: every mailbox listed as never polled, exit 0', async () => {
    const r = await cli('status');
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.split('\n');
    assert.match(lines[0], /^MAILBOX\s+LAST POLL\s+RESULT\s+LAG\s+LAST\s+TOTAL\s+FAILS\s+LAST ERROR$/);
    for (const a of [HAPPY, POP, UNGRANTED])
      assert.ok(
        lines.some((l) => l.includes(a) && /\bnever\b/.test(l)),
        `${a} in:\n${r.stdout}`,
      );
  });

  it('poll --once --mailbox: ingests through the function code path and prints the summary, exit 0', async () => {
    const r = await cli('poll', '--once', '--mailbox', HAPPY, '--mailbox', `pop3:${POP}/INBOX`);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, new RegExp(`^✓ imap:${HAPPY}/INBOX: 5 message\\(s\\), [\\d.]+ KiB in [\\d.]+ s \\([\\d.]+ msg/s\\)$`, 'm'));
    assert.match(r.stdout, new RegExp(`^✓ pop3:${POP}/INBOX: 2 message\\(s\\)`, 'm'));
    assert.match(r.stdout, /^poll: 2 mailbox\(es\), 7 message\(s\), [\d.]+ KiB in [\d.]+ s \([\d.]+ msg\/s\), 0 error\(s\)$/m);
    const out = await stack.queueMessages('postroom-messages');
    assert.equal(out.length, 7);
    // Not a terminal: no progress line on stderr.
    assert.doesNotMatch(r.stderr, /msgs,/);
    const again = await cli('poll', '--once', '--mailbox', HAPPY);
    assert.match(again.stdout, /: 0 message\(s\)/, 'incremental: nothing new');
  });

  it('poll --once with a mailbox the app may not open: ✗ line, the error and its fix, exit 1; status shows it with lag', async () => {
    const r = await cli('poll', '--once', '--mailbox', UNGRANTED);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stdout, new RegExp(`^✗ imap:${UNGRANTED}/INBOX: 0 message\\(s\\)`, 'm'));
    const err = /^ {2}error: (\w+): (.*)$/m.exec(r.stdout);
    assert.ok(err, r.stdout);
    // The sandbox refuses the login for an ungranted mailbox over every protocol: the poll's diagnosis says so.
    assert.ok(['MailboxNotConnected', 'ServicePrincipalNotRegistered'].includes(err[1]), err[1]);
    assert.match(r.stdout, /^ {2}fix: .*Add-MailboxPermission/m);
    assert.doesNotMatch(err[2], / Fix: /, 'the fix is printed once, on its own line');
    assert.match(r.stdout, /^poll: 1 mailbox\(es\), 0 message\(s\), .* 1 error\(s\)$/m);

    const s = await cli('status');
    assert.equal(s.code, 1, 'a failed mailbox makes status exit 1');
    assert.match(s.stdout, new RegExp(`^imap:${HAPPY}/INBOX\\s+\\S+Z\\s+ok\\s+\\d+s\\s+0\\s+5\\s+0\\s*$`, 'm'));
    assert.match(s.stdout, new RegExp(`^imap:${UNGRANTED}/INBOX\\s+\\S+Z\\s+failed\\s+-\\s+0\\s+0\\s+1\\s+${err[1]}$`, 'm'));
    assert.match(s.stdout, /^ {2}fix: .*Add-MailboxPermission/m);
    if (err[1] === 'ServicePrincipalNotRegistered') assert.match(s.stdout, /^ {2}diagnosis \(\S+Z\): ServicePrincipalNotRegistered \(likely\): every protocol tried/m);
    const j = await cli('status', '--json');
    const report = JSON.parse(j.stdout);
    const happy = report.mailboxes.find((m: { address: string }) => m.address === HAPPY);
    assert.equal(happy.status.totalDelivered, 5);
    assert.equal(typeof happy.lagSeconds, 'number');
    const bad = report.mailboxes.find((m: { address: string }) => m.address === UNGRANTED);
    assert.equal(bad.status.lastResult, 'failed');
    assert.equal(bad.lagSeconds, null);
    assert.match(bad.lastErrorFix, /Add-MailboxPermission/);
  });

  it('poison list / show / replay <id> / replay --all / purge, for the jobs and the notifications poison queues', async () => {
    const jobsPoison = queue('postroom-jobs-poison');
    const notifyPoison = queue('postroom-notifications-poison');
    await Promise.all([jobsPoison.createIfNotExists(), notifyPoison.createIfNotExists()]);
    const job = (mailboxId: string) => encodeQueueJson({ schema: JOB_SCHEMA, mailboxId, scheduledAt: '2026-01-01T00:00:00.000Z' });
    const j1 = (await jobsPoison.sendMessage(job(`imap:${HAPPY}/INBOX`))).messageId;
    const j2 = (await jobsPoison.sendMessage(job(`pop3:${POP}/INBOX`))).messageId;
    const n1 = (
      await notifyPoison.sendMessage(
        encodeQueueJson({
          schema: 'postroom.notification.v1',
          id: 'n-1',
          kind: 'digest',
          mailboxId: `imap:${HAPPY}/INBOX`,
          mailbox: HAPPY,
          createdAt: '2026-01-01T00:00:00.000Z',
          data: {},
        }),
      )
    ).messageId;

    const list = await cli('poison', 'list');
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, new RegExp(`^postroom-jobs-poison\\s+${j1}\\s+\\S+Z\\s+\\d+\\s+poll job for imap:${HAPPY}/INBOX`, 'm'));
    assert.match(list.stdout, new RegExp(`^postroom-notifications-poison\\s+${n1}\\s+.*digest notification for ${HAPPY}`, 'm'));
    assert.match(list.stdout, /^postroom-jobs-poison: 2 message\(s\)$/m);
    const listJson = JSON.parse((await cli('poison', 'list', '--queue', 'notifications', '--json')).stdout);
    assert.deepEqual(
      listJson.messages.map((m: { id: string }) => m.id),
      [n1],
    );

    const show = await cli('poison', 'show', j2);
    assert.equal(show.code, 0, show.stderr);
    const shown = JSON.parse(show.stdout);
    assert.equal(shown.originalQueue, 'postroom-jobs');
    assert.equal(shown.body.mailboxId, `pop3:${POP}/INBOX`);
    assert.equal((await cli('poison', 'show', 'no-such-id')).code, 1);

    const replay = await cli('poison', 'replay', j1);
    assert.equal(replay.code, 0, replay.stderr);
    assert.match(replay.stdout, new RegExp(`^✓ replayed ${j1} .* from postroom-jobs-poison to postroom-jobs$`, 'm'));
    const back = (await queue('postroom-jobs').peekMessages({ numberOfMessages: 32 })).peekedMessageItems;
    assert.deepEqual(
      back.map((m) => JSON.parse(Buffer.from(m.messageText, 'base64').toString()).mailboxId),
      [`imap:${HAPPY}/INBOX`],
    );
    const left = (await jobsPoison.peekMessages({ numberOfMessages: 32 })).peekedMessageItems.map((m) => m.messageId);
    assert.deepEqual(left, [j2], 'only the replayed message left the poison queue; the other is visible again');

    const all = await cli('poison', 'replay', '--all', '--queue', 'notifications');
    assert.equal(all.code, 0, all.stderr);
    assert.match(all.stdout, /^replayed 1 message\(s\)$/m);
    assert.equal((await queue('postroom-notifications').peekMessages()).peekedMessageItems.length, 1);
    assert.equal((await notifyPoison.getProperties()).approximateMessagesCount, 0);

    assert.equal((await cli('poison', 'replay')).code, 2, 'replay needs an id or --all');
    const unconfirmed = await cli('poison', 'purge');
    assert.equal(unconfirmed.code, 2);
    assert.match(unconfirmed.stdout, /^postroom-jobs-poison: 1 message\(s\) would be deleted$/m);
    assert.match(unconfirmed.stderr, /--yes/);
    assert.equal((await jobsPoison.peekMessages()).peekedMessageItems.length, 1, 'nothing deleted without --yes');
    const purge = await cli('poison', 'purge', '--yes');
    assert.equal(purge.code, 0, purge.stderr);
    assert.equal((await jobsPoison.peekMessages()).peekedMessageItems.length, 0);
  });

  it('on a terminal, a long poll shows a progress line on stderr and clears it before the summary', async () => {
    for (let i = 0; i < 7; i++) await stack.sandbox.dovecot.deliver(HAPPY, plainMessage({ subject: `Progress ${i}` }));
    const sink = () => Object.assign(new Writable({ write: (c, _e, cb) => (chunks.push(String(c)), cb()) }), { isTTY: true, columns: 100 });
    const chunks: string[] = [];
    const out: string[] = [];
    const stdout = Object.assign(new Writable({ write: (c, _e, cb) => (out.push(String(c)), cb()) }), { isTTY: true });
    const code = await main(['poll', '--once', '--mailbox', HAPPY], { stdout, stderr: sink(), env: env, cwd: stack.dir });
    assert.equal(code, 0, chunks.join(''));
    const progress = chunks.filter((c) => c.startsWith('\r') && c.includes('msgs,'));
    // Batches of 2: the line appears once more than one batch came in, and counts up to the 7 delivered.
    assert.ok(progress.length >= 2, chunks.join('|'));
    assert.match(progress.at(-1)!, new RegExp(`imap:${HAPPY}/INBOX \\[[= ]+\\] 7 msgs, [\\d.]+ KiB, [\\d.]+ msg/s`));
    assert.equal(chunks.at(-1), '\r\x1b[K', 'the line is cleared');
    assert.match(out.join(''), new RegExp(`✓ imap:${HAPPY}/INBOX: 7 message\\(s\\)`));
  });

  it('bad settings and bad usage are exit 2; an unknown mailbox names the configured ones', async () => {
    const saved = env;
    try {
      env = { ...saved, POSTROOM_BATCH_SIZE: '0' };
      const r = await cli('status');
      assert.equal(r.code, 2);
      assert.match(r.stderr, /POSTROOM_BATCH_SIZE: "0" must be a whole number/);
    } finally {
      env = saved;
    }
    const unknown = await cli('poll', '--once', '--mailbox', 'nobody@contoso.test');
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, new RegExp(`no configured mailbox "nobody@contoso.test" \\(have: imap:${HAPPY}/INBOX`));
    assert.equal((await cli('poison', 'explode')).code, 2);
    assert.equal((await cli('frobnicate')).code, 2);
  });

  it('HTTP status function: 503 with every settings problem when they are invalid, 200 with last error and fix when valid', async () => {
    const { status } = await import('../functions/status.js');
    const keys = ['POSTROOM_APPS', 'POSTROOM_MAILBOXES', 'POSTROOM_STORAGE', 'POSTROOM_BATCH_SIZE'];
    const saved = Object.fromEntries(keys.map((k) => [k, process.env[k]]));
    try {
      setRuntime(undefined);
      Object.assign(process.env, { POSTROOM_APPS: '', POSTROOM_MAILBOXES: '[]', POSTROOM_STORAGE: 'UseDevelopmentStorage=true', POSTROOM_BATCH_SIZE: '0' });
      const res = await status({} as never, {} as never);
      assert.equal(res.status, 503);
      const body = res.jsonBody as { code: string; problems: string[]; fix: string };
      assert.equal(body.code, 'ConfigInvalid');
      assert.deepEqual(body.problems, ['POSTROOM_APPS: missing (a JSON array; see docs/settings.md)', 'POSTROOM_BATCH_SIZE: "0" must be a whole number from 1 to 1000']);
      assert.match(body.fix, /Correct the settings/);
    } finally {
      for (const k of keys)
        if (saved[k] === undefined) delete process.env[k];
        else process.env[k] = saved[k];
    }
    setRuntime(await stack.runtime(MAILBOX_SETTINGS));
    const ok = await status({} as never, {} as never);
    assert.equal(ok.status, 200);
    const report = ok.jsonBody as { mailboxes: Array<{ address: string; lastErrorFix: string | null; status: { lastResult: string } | null }> };
    const bad = report.mailboxes.find((m) => m.address === UNGRANTED)!;
    assert.equal(bad.status?.lastResult, 'failed');
    assert.match(bad.lastErrorFix ?? '', /Add-MailboxPermission/);
    assert.equal(report.mailboxes.find((m) => m.address === HAPPY)!.lastErrorFix, null);
  });
});
