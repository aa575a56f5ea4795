/**
 * Fault matrix, mail side, row 1: SIGKILL of the poller at random (seeded)
 * moments, each mode on its own mailbox and in its own process, the four
 * modes at once. Figures are printed as `[matrix]` lines for docs/reliability.md.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startStack, type Stack } from './support/stack.js';
import { startPollerProcess, seededRandom } from './support/poller-process.js';
import { assertActedOnlyOnQueued, assertDelivery, drainQueue, seedMailbox, storedMessages, type QueuedMessage } from './support/fault-checks.js';
import { CHECKPOINT_KEY } from '../shared/imap/source.js';
import { READ_AHEAD } from '../shared/poll/pipeline.js';
import { SANDBOX_APP } from '../sandbox/index.js';

/** Messages per mode (4 modes). */
const MESSAGES = 500;
/** Kills per mode; each is followed by a poll that must wait for the lease to expire. */
const KILLS = 4;
const LEASE_SECONDS = 15;
const SEED = 20260211;
const BATCH = 20;

let stack: Stack;
before(async () => {
  stack = await startStack();
});
after(async () => {
  await stack?.stop();
});

interface Mode {
  name: string;
  protocol: 'imap' | 'pop3';
  postAction: 'none' | 'seen' | 'move:Archive' | 'delete';
}

const MODES: Mode[] = [
  { name: 'imap-none', protocol: 'imap', postAction: 'none' },
  { name: 'imap-seen', protocol: 'imap', postAction: 'seen' },
  { name: 'imap-move', protocol: 'imap', postAction: 'move:Archive' },
  { name: 'pop3-delete', protocol: 'pop3', postAction: 'delete' },
];

/** Subjects the mode's post-action has visibly been applied to. */
async function actedOn(mode: Mode, address: string, sent: readonly string[]): Promise<string[]> {
  if (mode.postAction === 'none') return [];
  if (mode.postAction === 'seen') return (await storedMessages(stack, address)).filter((m) => m.flags.includes('S')).map((m) => m.subject);
  if (mode.postAction === 'move:Archive') return (await storedMessages(stack, address, 'Archive')).map((m) => m.subject);
  const left = new Set((await storedMessages(stack, address)).map((m) => m.subject));
  return sent.filter((s) => !left.has(s));
}

interface KillFigures {
  mode: string;
  kills: number;
  /** Messages acknowledged-or-about-to-be by the killed run, per kill. */
  killedAfter: number[];
  leaseWaitsMs: number[];
  queued: QueuedMessage[];
  finalPollMs: number;
}

async function killAndRepeat(mode: Mode, random: () => number): Promise<KillFigures> {
  const address = `kill-${mode.name}@contoso.test`;
  await stack.sandbox.dovecot.grant(SANDBOX_APP.clientId, address);
  const sent = await seedMailbox(stack, address, mode.name, MESSAGES);
  const queue = `out-kill-${mode.name}`;
  const env = {
    ...stack.sandbox.env([{ address, protocol: mode.protocol, postAction: mode.postAction }]),
    POSTROOM_OUTPUT_QUEUE: queue,
    POSTROOM_LEASE_SECONDS: String(LEASE_SECONDS),
    POSTROOM_BATCH_SIZE: String(BATCH),
    POSTROOM_CONCURRENCY: '4',
  };
  const queued: QueuedMessage[] = [];
  const leaseWaitsMs: number[] = [];
  const killedAfter: number[] = [];
  let kills = 0;
  let killedAt: number | undefined;
  for (let run = 0; ; run++) {
    const p = startPollerProcess(env);
    const session = await p.waitFor((e) => e.e === 'session');
    assert.ok(session, `${mode.name} run ${run}: no session (${JSON.stringify(p.events)})\n${p.stderr()}`);
    if (killedAt !== undefined) {
      // The killed poller never released its lease: this one was refused until it expired.
      assert.ok(
        p.events.some((e) => e.e === 'leased'),
        `${mode.name} run ${run}: the lease of the killed poller was not held`,
      );
      leaseWaitsMs.push(Date.now() - killedAt);
    }
    if (run >= KILLS) {
      const done = await p.waitFor((e) => e.e === 'done');
      assert.equal(done?.outcome, 'ok', `${mode.name} final poll: ${JSON.stringify(done)}\n${p.stderr()}`);
      queued.push(...(await drainQueue(stack, queue)));
      return { mode: mode.name, kills, killedAfter, leaseWaitsMs, queued, finalPollMs: done.durationMs ?? 0 };
    }
    // A random moment: one kill in four while the session opens (pending post-actions applied there),
    // the others 0-3 s after the first acknowledgement (mid-batch, between queue write, checkpoint and
    // post-action), so kills land mid-poll however slow the machine is.
    const early = random() < 0.25;
    const delay = random() * (early ? 1000 : 3000);
    if (!early) await p.waitFor((e) => e.e === 'ack' || e.e === 'done');
    await Promise.race([new Promise((r) => setTimeout(r, delay)), p.exited]);
    await p.kill();
    // A poll that finished as the kill came has released its lease: that is no kill mid-poll.
    const { signal } = await p.exited;
    if (signal === 'SIGKILL' && !p.events.some((e) => e.e === 'done')) {
      kills++;
      killedAfter.push(Math.max(0, ...p.events.map((e) => e.n ?? 0)));
      killedAt = Date.now();
    } else killedAt = undefined;
    queued.push(...(await drainQueue(stack, queue)));
    assertActedOnlyOnQueued(await actedOn(mode, address, sent), queued, `${mode.name} after kill ${kills}`);
  }
}

describe('fault matrix (mail side): SIGKILL of the poller', () => {
  test(`${MODES.length} modes x ${KILLS} kills, ${MESSAGES} messages each: 0 lost, same-key duplicates, post-actions only on queued messages and all applied eventually, the lease expires`, async () => {
    const random = seededRandom(SEED);
    const t0 = Date.now();
    const results = await Promise.all(MODES.map((m) => killAndRepeat(m, random)));
    for (const [i, r] of results.entries()) {
      const mode = MODES[i];
      const address = `kill-${mode.name}@contoso.test`;
      const sent = Array.from({ length: MESSAGES }, (_, j) => `${mode.name}-${String(j).padStart(5, '0')}`);
      const figures = assertDelivery(sent, r.queued, mode.name);
      // A kill re-delivers at most what was written and not acknowledged: the batches read ahead.
      assert.ok(figures.duplicates <= r.kills * (READ_AHEAD + 1) * BATCH, `${mode.name}: ${figures.duplicates} duplicates for ${r.kills} kills`);
      assert.ok(r.kills >= KILLS - 1, `${mode.name}: only ${r.kills} kill(s) landed mid-poll`);
      for (const w of r.leaseWaitsMs) assert.ok(w <= (LEASE_SECONDS + 10) * 1000, `${mode.name}: the lease took ${w} ms to expire`);
      // Eventually complete: every message acted on, nothing pending.
      const inbox = await storedMessages(stack, address);
      if (mode.postAction === 'none') assert.ok(inbox.length === MESSAGES && inbox.every((m) => !m.flags.includes('S')), `${mode.name}: mailbox untouched`);
      if (mode.postAction === 'seen')
        assert.ok(inbox.length === MESSAGES && inbox.every((m) => m.flags.includes('S')), `${mode.name}: ${inbox.filter((m) => !m.flags.includes('S')).length} not flagged`);
      if (mode.postAction === 'move:Archive') {
        assert.equal(inbox.length, 0, `${mode.name}: left in INBOX`);
        assert.equal((await storedMessages(stack, address, 'Archive')).length, MESSAGES);
      }
      if (mode.postAction === 'delete') assert.equal(inbox.length, 0, `${mode.name}: not deleted`);
      if (mode.protocol === 'imap') {
        const rt = await stack.runtime([{ address, protocol: 'imap', postAction: mode.postAction }]);
        const cp = (await rt.state.get<any>(rt.config.mailboxes[0].id, CHECKPOINT_KEY))?.value;
        assert.equal(cp?.lastUid, MESSAGES, `${mode.name}: checkpoint at the last UID`);
        assert.equal(cp?.pendingPostAction, '', `${mode.name}: no post-action left pending`);
      }
      console.log(
        `[matrix] kill ${mode.name}: messages ${figures.messages}, kills ${r.kills} (after ${r.killedAfter.join('/')} acked), duplicates ${figures.duplicates} (same key), lost ${figures.lost}, lease waits ${r.leaseWaitsMs.map((w) => (w / 1000).toFixed(1)).join('/')} s, final poll ${(r.finalPollMs / 1000).toFixed(1)} s`,
      );
    }
    console.log(`[matrix] kill total ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  });
});
