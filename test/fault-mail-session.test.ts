/**
 * Fault matrix, mail side: faults of the mail session itself (resets,
 * Exchange's BYE, throttling, UIDVALIDITY, a second poller, the deadline),
 * each injected by the scripted proxy in front of the sandbox Dovecot or by
 * Dovecot itself. Figures are printed as `[matrix]` lines for docs/reliability.md.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startStack, type Stack } from './support/stack.js';
import { startFaultProxy, EXCHANGE, type FaultProxy } from './support/fault-proxy.js';
import { assertActedOnlyOnQueued, assertDelivery, drainQueue, seedMailbox, storedMessages, type QueuedMessage } from './support/fault-checks.js';
import { pollMailbox, type PollResult } from '../shared/poll/poll-mailbox.js';
import { handlePollJob, JOB_SCHEMA } from '../shared/poll/jobs.js';
import { READ_AHEAD } from '../shared/poll/pipeline.js';
import { CHECKPOINT_KEY } from '../shared/imap/source.js';
import { readStatus } from '../shared/status/index.js';
import { SANDBOX_APP } from '../sandbox/index.js';

const BATCH = 10;
const CONCURRENCY = 4;

let stack: Stack;
let imapProxy: FaultProxy;
let popProxy: FaultProxy;

before(async () => {
  stack = await startStack();
  const { certs, dovecot } = stack.sandbox;
  imapProxy = await startFaultProxy({ targetPort: dovecot.imapPort, cert: certs.cert, key: certs.key, ca: certs.ca, protocol: 'imap' });
  popProxy = await startFaultProxy({ targetPort: dovecot.pop3Port, cert: certs.cert, key: certs.key, ca: certs.ca, protocol: 'pop3' });
});
after(async () => {
  await imapProxy?.close();
  await popProxy?.close();
  await stack?.stop();
});

/** A granted mailbox of its own, seeded with `count` tagged messages. */
async function mailbox(name: string, count: number): Promise<{ address: string; sent: string[] }> {
  const address = `${name}@contoso.test`;
  await stack.sandbox.dovecot.grant(SANDBOX_APP.clientId, address);
  return { address, sent: await seedMailbox(stack, address, name, count) };
}

/** A runtime polling `settings` (merged over the proxy's host/port when `proxy` is given) into `out-<name>`. */
async function runtimeFor(name: string, settings: Record<string, unknown>, proxy?: FaultProxy, env: Record<string, string> = {}) {
  const via = proxy ? { host: '127.0.0.1', port: proxy.port } : {};
  return stack.runtime([{ ...settings, ...via }], {
    env: { POSTROOM_OUTPUT_QUEUE: `out-${name}`, POSTROOM_BATCH_SIZE: String(BATCH), POSTROOM_CONCURRENCY: String(CONCURRENCY), ...env },
  });
}

const secs = (ms: number) => (ms / 1000).toFixed(1);

function report(row: string, f: { messages: number; duplicates: number; lost: number }, polls: PollResult[], deadlineS: number, extra = ''): void {
  const ms = polls.map((p) => secs(p.durationMs)).join(' + ');
  console.log(
    `[matrix] ${row}: messages ${f.messages}, duplicates ${f.duplicates} (same key), lost ${f.lost}, polls ${polls.length} (${ms} s) vs deadline ${deadlineS} s${extra ? `, ${extra}` : ''}`,
  );
}

/** Seen-flagged subjects of an IMAP mailbox: the post-action `seen` applied. */
async function flagged(address: string): Promise<string[]> {
  return (await storedMessages(stack, address)).filter((m) => m.flags.includes('S')).map((m) => m.subject);
}

describe('fault matrix (mail side): session faults', () => {
  test('connection reset mid-FETCH (IMAP, post-action seen): the poll reconnects or the next one completes; 0 lost, same-key duplicates', async () => {
    const { address, sent } = await mailbox('reset-imap', 60);
    const rt = await runtimeFor('reset-imap', { address, protocol: 'imap', postAction: 'seen' }, imapProxy);
    // Two connections in a row cut in the middle of message data (server → client bytes).
    imapProxy.next({ dropAfterBytes: 9_000 });
    imapProxy.next({ dropAfterBytes: 7_000 });
    const polls: PollResult[] = [];
    const queued: QueuedMessage[] = [];
    for (let i = 0; i < 3 && !(polls.at(-1)?.outcome === 'ok'); i++) {
      polls.push(await pollMailbox(rt, rt.config.mailboxes[0]));
      queued.push(...(await drainQueue(stack, 'out-reset-imap')));
      assertActedOnlyOnQueued(await flagged(address), queued, `reset-imap poll ${i + 1}`);
    }
    assert.equal(polls.at(-1)?.outcome, 'ok', JSON.stringify(polls.map((p) => p.error?.message)));
    // Each drop came after messages were durable: salvaged, so the same poll reconnects and finishes.
    assert.equal(polls.length, 1, `one poll: ${JSON.stringify(polls.map((p) => p.error?.message))}`);
    const f = assertDelivery(sent, queued, 'reset-imap');
    assert.equal((await flagged(address)).length, sent.length, 'every message flagged \\Seen in the end');
    // Per drop at most the deliveries in flight behind the first one not durable.
    assert.ok(f.duplicates <= 2 * CONCURRENCY, `${f.duplicates} duplicates`);
    report('reset mid-FETCH (IMAP)', f, polls, rt.config.poll.deadlineSeconds);
  });

  test('connection reset mid-RETR (POP3, post-action delete): 0 lost, same-key duplicates, nothing deleted before its queue write, all deleted in the end', async () => {
    const { address, sent } = await mailbox('reset-pop', 60);
    const rt = await runtimeFor('reset-pop', { address, protocol: 'pop3', postAction: 'delete' }, popProxy);
    popProxy.next({ dropAfterBytes: 9_000 });
    popProxy.next({ dropAfterBytes: 7_000 });
    const polls: PollResult[] = [];
    const queued: QueuedMessage[] = [];
    for (let i = 0; i < 3 && !(polls.at(-1)?.outcome === 'ok'); i++) {
      polls.push(await pollMailbox(rt, rt.config.mailboxes[0]));
      queued.push(...(await drainQueue(stack, 'out-reset-pop')));
      const left = new Set((await storedMessages(stack, address)).map((m) => m.subject));
      assertActedOnlyOnQueued(
        sent.filter((s) => !left.has(s)),
        queued,
        `reset-pop poll ${i + 1}`,
      );
    }
    assert.equal(polls.at(-1)?.outcome, 'ok', JSON.stringify(polls.map((p) => p.error?.message)));
    // Each drop came after messages were durable: salvaged, so the same poll reconnects and finishes.
    assert.equal(polls.length, 1, `one poll: ${JSON.stringify(polls.map((p) => p.error?.message))}`);
    const f = assertDelivery(sent, queued, 'reset-pop');
    assert.equal((await storedMessages(stack, address)).length, 0, 'every message deleted in the end');
    // Per drop at most the deliveries in flight behind the first one not durable.
    assert.ok(f.duplicates <= 2 * CONCURRENCY, `${f.duplicates} duplicates`);
    report('reset mid-RETR (POP3)', f, polls, rt.config.poll.deadlineSeconds);
  });

  test('"* BYE Session invalidated - AccessTokenExpired" every 3 FETCHes: ONE poll finishes; duplicates only for messages in flight at a drop', async () => {
    const { address, sent } = await mailbox('bye-every-3', 100);
    const rt = await runtimeFor('bye-every-3', { address, protocol: 'imap', postAction: 'seen' }, imapProxy);
    // Every connection: the 3rd UID FETCH (metadata or bodies) gets Exchange's BYE and the connection closes.
    imapProxy.setDefault({ commands: [{ match: /^\S+ UID FETCH /i, nth: 3, times: 1, reply: [EXCHANGE.imapTokenExpired], close: true }] });
    const connections = imapProxy.connections;
    let r: PollResult;
    try {
      r = await pollMailbox(rt, rt.config.mailboxes[0]);
    } finally {
      imapProxy.setDefault({});
    }
    const sessions = imapProxy.connections - connections;
    assert.equal(r.outcome, 'ok', r.error?.message);
    assert.equal(r.stopped, undefined, 'finished, not stopped early');
    assert.equal(r.delivered.length, sent.length);
    const queued = await drainQueue(stack, 'out-bye-every-3');
    const f = assertDelivery(sent, queued, 'bye-every-3');
    // The issue saw 8 queue writes for 2 unique keys and no progress: here at most the in-flight bound, overall.
    const bound = CONCURRENCY + READ_AHEAD * BATCH;
    assert.ok(f.duplicates <= bound, `${f.duplicates} duplicates > in-flight bound ${bound}`);
    assert.ok(sessions >= 3, `the server dropped the session ${sessions} times`);
    assert.equal((await flagged(address)).length, sent.length, 'post-actions of salvaged batches applied by the next session');
    const cp = (await rt.state.get<any>(rt.config.mailboxes[0].id, CHECKPOINT_KEY))?.value;
    assert.equal(cp?.pendingPostAction, '');
    report('BYE every 3 FETCHes', f, [r], rt.config.poll.deadlineSeconds, `${sessions} sessions, queue writes ${queued.length} for ${sent.length} keys`);
  });

  test('throttled mid-poll with a short back-off: waited once (by imapflow), the poll carries on', async () => {
    const { address, sent } = await mailbox('throttle-short', 40);
    const rt = await runtimeFor('throttle-short', { address, protocol: 'imap' }, imapProxy);
    const BACKOFF = 1500;
    imapProxy.next({ commands: [{ match: /^\S+ UID FETCH .*BODY\.PEEK\[\]/i, nth: 2, times: 1, reply: [`{tag} ${EXCHANGE.throttled(BACKOFF)}`] }] });
    const r = await pollMailbox(rt, rt.config.mailboxes[0]);
    assert.equal(r.outcome, 'ok', r.error?.message);
    assert.equal(r.stopped, undefined);
    assert.ok(r.durationMs >= BACKOFF, `the back-off was waited (${r.durationMs} ms)`);
    assert.ok(!rt.log.lines.some((l) => /reconnecting/.test(l) && /"waitMs":[1-9]/.test(l)), 'Postroom added no wait of its own');
    const f = assertDelivery(sent, await drainQueue(stack, 'out-throttle-short'), 'throttle-short');
    report('throttled, short back-off', f, [r], rt.config.poll.deadlineSeconds, `back-off ${secs(BACKOFF)} s`);
  });

  test('throttled with a back-off longer than the time left: stopped as Throttled at once, the job back on the queue for the back-off, no retry spent', async () => {
    const { address, sent } = await mailbox('throttle-long', 40);
    const jobsQueue = 'jobs-throttle-long';
    const rt = await runtimeFor('throttle-long', { address, protocol: 'imap', postAction: 'seen' }, imapProxy, {
      POSTROOM_POLL_DEADLINE_SECONDS: '5',
      POSTROOM_JOBS_QUEUE: jobsQueue,
    });
    const BACKOFF = 60_000;
    imapProxy.next({ commands: [{ match: /^\S+ UID FETCH .*BODY\.PEEK\[\]/i, nth: 2, times: 1, reply: [`{tag} ${EXCHANGE.throttled(BACKOFF)}`] }] });
    const job = { schema: JOB_SCHEMA, mailboxId: rt.config.mailboxes[0].id, scheduledAt: new Date().toISOString() };
    const t0 = Date.now();
    const r = await handlePollJob(rt, job);
    const took = Date.now() - t0;
    assert.equal(r?.outcome, 'ok', r?.error?.message);
    assert.equal(r?.stopped?.code, 'Throttled');
    assert.ok(took < 10_000, `ended well before the ${BACKOFF} ms back-off (took ${took} ms)`);
    const jobs = await rt.storage.queue(jobsQueue);
    assert.equal((await jobs.getProperties()).approximateMessagesCount, 1, 'the job is back on the queue');
    assert.equal((await jobs.peekMessages({ numberOfMessages: 1 })).peekedMessageItems.length, 0, 'invisible for the back-off');
    const queued = await drainQueue(stack, 'out-throttle-long');
    assertActedOnlyOnQueued(await flagged(address), queued, 'throttle-long');
    // The next poll (the server no longer throttling) finishes the mailbox.
    const r2 = await pollMailbox(rt, rt.config.mailboxes[0]);
    assert.equal(r2.outcome, 'ok', r2.error?.message);
    queued.push(...(await drainQueue(stack, 'out-throttle-long')));
    const f = assertDelivery(sent, queued, 'throttle-long');
    // What was written before the throttle was checkpointed without the session (not written again).
    assert.equal(f.duplicates, 0);
    assert.equal((await flagged(address)).length, sent.length);
    report('throttled, back-off > time left', f, [r, r2], 5, `back-off ${secs(BACKOFF)} s, stopped ${r?.stopped?.code} after ${secs(took)} s, job re-queued`);
  });

  test('UIDVALIDITY changes between two sessions of one poll: the resync is flagged, 0 lost, same-key duplicates', async () => {
    const { address, sent } = await mailbox('uidv-mid', 60);
    const rt = await runtimeFor('uidv-mid', { address, protocol: 'imap' }, imapProxy);
    // The first session dies at its 3rd UID FETCH; before the reconnect, UIDVALIDITY changes.
    imapProxy.next({ commands: [{ match: /^\S+ UID FETCH /i, nth: 3, times: 1, reply: [EXCHANGE.imapTokenExpired], close: true }] });
    let changed = false;
    const r = await pollMailbox(rt, rt.config.mailboxes[0], {
      beforeAcknowledge: async () => {
        if (changed) return;
        changed = true;
        await stack.sandbox.dovecot.resetUidValidity(address);
      },
    });
    assert.equal(r.outcome, 'ok', r.error?.message);
    assert.ok(changed);
    const queued = await drainQueue(stack, 'out-uidv-mid');
    const resynced = queued.filter((m) => m.resync);
    assert.ok(resynced.length > 0, 'deliveries after the change carry resync');
    // Two validities: a message re-read after the change has a new key, and says so (resync).
    const byValidity = assertResyncDelivery(sent, queued);
    assert.ok(rt.log.lines.some((l) => /UIDVALIDITY changed/.test(l)));
    const again = await pollMailbox(rt, rt.config.mailboxes[0]);
    assert.equal(again.delivered.length, 0, 'settled after the resync');
    report('UIDVALIDITY change mid-poll', byValidity, [r], rt.config.poll.deadlineSeconds, `${resynced.length} re-read flagged resync`);
  });

  test('two pollers on one mailbox at once: one holds the lease, the other reports leased; 0 lost, no duplicate', async () => {
    const { address, sent } = await mailbox('two-pollers', 80);
    const rt1 = await runtimeFor('two-pollers', { address, protocol: 'imap', postAction: 'seen' });
    const rt2 = await runtimeFor('two-pollers', { address, protocol: 'imap', postAction: 'seen' });
    const [a, b] = await Promise.all([pollMailbox(rt1, rt1.config.mailboxes[0]), pollMailbox(rt2, rt2.config.mailboxes[0])]);
    assert.deepEqual([a.outcome, b.outcome].sort(), ['leased', 'ok']);
    // The lease was released: the loser's next poll goes on (nothing left to do).
    const loser = a.outcome === 'leased' ? { rt: rt1, r: a } : { rt: rt2, r: b };
    const next = await pollMailbox(loser.rt, loser.rt.config.mailboxes[0]);
    assert.equal(next.outcome, 'ok');
    assert.equal(next.delivered.length, 0);
    const queued = await drainQueue(stack, 'out-two-pollers');
    const f = assertDelivery(sent, queued, 'two-pollers');
    assert.equal(f.duplicates, 0);
    assert.equal((await flagged(address)).length, sent.length);
    report('two pollers at once', f, [a, b], rt1.config.poll.deadlineSeconds, 'one leased');
  });

  test('the deadline: a slow server, POSTROOM_POLL_DEADLINE_SECONDS=5 → stops by deadline + grace, checkpoint advanced, DeadlineReached recorded, lease released, the next poll goes on', async () => {
    const { address, sent } = await mailbox('deadline', 150);
    const rt = await runtimeFor('deadline', { address, protocol: 'imap', postAction: 'seen' }, imapProxy, { POSTROOM_POLL_DEADLINE_SECONDS: '5' });
    const mb = rt.config.mailboxes[0];
    // Every body FETCH answered 1 s late: 15 batches take ~15 s, three times the deadline.
    imapProxy.setDefault({ commands: [{ match: /^\S+ UID FETCH .*BODY\.PEEK\[\]/i, delayMs: 1000 }] });
    const polls: PollResult[] = [];
    const queued: QueuedMessage[] = [];
    try {
      polls.push(await pollMailbox(rt, mb));
      const first = polls[0];
      assert.equal(first.outcome, 'ok', first.error?.message);
      assert.equal(first.stopped?.code, 'DeadlineReached');
      assert.ok(first.durationMs <= (5 + 30) * 1000, `${first.durationMs} ms`);
      assert.ok(first.delivered.length > 0 && first.delivered.length < sent.length, `${first.delivered.length} delivered`);
      const status = await readStatus(rt.state, mb);
      assert.equal(status?.lastStopCode, 'DeadlineReached');
      const cp = (await rt.state.get<any>(mb.id, CHECKPOINT_KEY))?.value;
      assert.ok(cp?.lastUid >= first.delivered.length, 'what was written is acknowledged (checkpoint advanced)');
      queued.push(...(await drainQueue(stack, 'out-deadline')));
      assertActedOnlyOnQueued(await flagged(address), queued, 'deadline');
      // Lease released: the next polls go on at once, from the checkpoint.
      for (let i = 0; i < 6 && queued.length < sent.length; i++) {
        const r = await pollMailbox(rt, mb);
        assert.notEqual(r.outcome, 'leased');
        assert.equal(r.outcome, 'ok', r.error?.message);
        assert.ok(r.delivered.length > 0, 'each poll makes progress');
        polls.push(r);
        queued.push(...(await drainQueue(stack, 'out-deadline')));
      }
    } finally {
      imapProxy.setDefault({});
    }
    const f = assertDelivery(sent, queued, 'deadline');
    assert.equal((await flagged(address)).length, sent.length);
    report('deadline, slow server', f, polls, 5, `first poll stopped DeadlineReached after ${polls[0].delivered.length} messages`);
  });
});

/** After a UIDVALIDITY change a message may be delivered under both validities: then the later delivery carries `resync`. */
function assertResyncDelivery(sent: readonly string[], queued: readonly QueuedMessage[]): { messages: number; duplicates: number; lost: number } {
  const plain = queued.filter((m) => !m.resync);
  const resync = queued.filter((m) => m.resync);
  // Within each validity: duplicates only under the same key.
  const a = assertDelivery(
    sent.filter((s) => plain.some((m) => m.subject === s)),
    plain,
    'before the change',
  );
  const b = assertDelivery(
    sent.filter((s) => resync.some((m) => m.subject === s)),
    resync,
    'after the change',
  );
  const seen = new Set(queued.map((m) => m.subject));
  const lost = sent.filter((s) => !seen.has(s));
  assert.deepEqual(lost, [], 'lost across the resync');
  return { messages: sent.length, duplicates: a.duplicates + b.duplicates, lost: lost.length };
}
