import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { pipelineBatches } from '../shared/poll/pipeline.js';
import { startPollClock } from '../shared/poll/deadline.js';
import { formatUidSet, parseUidSet } from '../shared/imap/uid-set.js';
import { abortable } from '../shared/abortable.js';
import type { MailSession, SourceMessage } from '../shared/source.js';

const msg = (id: string): SourceMessage => ({ id, open: async () => Readable.from([Buffer.from(id)]) });

/** A session of `n` batches of `size`; the batch `failAt` throws (a dropped connection) when it is read. */
function session(n: number, size: number, failAt = -1): MailSession & { checkpointed: string[] } {
  const checkpointed: string[] = [];
  return {
    folder: 'INBOX',
    validity: '1',
    checkpointed,
    async *batches() {
      for (let b = 0; b < n; b++) {
        await new Promise((r) => setImmediate(r));
        if (b === failAt) throw new Error('connection lost');
        yield Array.from({ length: size }, (_, i) => msg(`${b}.${i}`));
      }
    },
    async acknowledge() {},
    async checkpoint(messages) {
      checkpointed.push(...messages.map((m) => m.id));
    },
    async close() {},
    abort() {},
  };
}

describe('pipeline: what a dropped session leaves behind', () => {
  test('durable batches read ahead are salvaged (checkpointed without the session), in order, when the source fails', async () => {
    const s = session(6, 2, 3);
    const acked: string[] = [];
    const salvaged: string[] = [];
    await assert.rejects(
      pipelineBatches(s, {
        limit: 8,
        signal: new AbortController().signal,
        deliver: async (m) => m.id,
        acknowledge: async (batch) => {
          // The first acknowledgement waits: batches 1 and 2 are durable but not yet acknowledged when batch 3 fails.
          if (!acked.length) await new Promise((r) => setTimeout(r, 20));
          acked.push(...batch.map((m) => m.id));
        },
        salvage: async (messages) => {
          salvaged.push(...messages.map((m) => m.id));
        },
      }),
      /connection lost/,
    );
    const all = [...acked, ...salvaged];
    assert.deepEqual(all, ['0.0', '0.1', '1.0', '1.1', '2.0', '2.1'], 'every durable message is either acknowledged or salvaged, once, in order');
    assert.ok(salvaged.length > 0, 'something was salvaged');
  });

  test('a failed delivery: only the durable prefix before it is salvaged', async () => {
    const salvaged: string[] = [];
    await assert.rejects(
      pipelineBatches(session(3, 3), {
        limit: 1,
        signal: new AbortController().signal,
        deliver: async (m) => {
          if (m.id === '0.2') throw new Error('parse exploded');
          return m.id;
        },
        acknowledge: async () => {},
        salvage: async (messages) => {
          salvaged.push(...messages.map((m) => m.id));
        },
      }),
      /parse exploded/,
    );
    assert.deepEqual(salvaged, ['0.0', '0.1']);
  });

  test('a failed acknowledgement (a post-action on a dropped connection) leaves its batch durable: it is salvaged, once', async () => {
    let salvageCalls = 0;
    await assert.rejects(
      pipelineBatches(session(3, 2), {
        limit: 4,
        signal: new AbortController().signal,
        deliver: async (m) => m.id,
        acknowledge: async () => {
          throw new Error('checkpoint conflict');
        },
        salvage: async () => {
          salvageCalls++;
        },
      }),
      /checkpoint conflict/,
    );
    assert.equal(salvageCalls, 1);
  });

  test('the soft stop reads no new batch but acknowledges what is in flight', async () => {
    const stop = new AbortController();
    const acked: string[] = [];
    await pipelineBatches(session(10, 2), {
      limit: 4,
      signal: new AbortController().signal,
      stop: stop.signal,
      deliver: async (m) => {
        if (m.id === '1.0') stop.abort();
        return m.id;
      },
      acknowledge: async (batch) => {
        acked.push(...batch.map((m) => m.id));
      },
    });
    assert.ok(acked.length >= 4 && acked.length < 20, `stopped early and acknowledged what it had: ${acked.join(',')}`);
    assert.deepEqual(
      acked,
      acked.slice().sort((a, b) => Number(a.split('.')[0]) - Number(b.split('.')[0]) || a.localeCompare(b)),
      'in order',
    );
  });
});

describe('poll clock', () => {
  test('soft stop at the deadline, hard abort after the grace; the lease is kept only while the poll moves', async () => {
    let now = 0;
    const clock = startPollClock({ deadlineMs: 40, graceMs: 40, stallMs: 1000, signals: [], subject: 'm', listeners: 10 }, () => now);
    assert.equal(clock.alive(), true);
    now = 2000;
    assert.equal(clock.alive(), false, 'no progress for longer than stallMs');
    clock.progress();
    assert.equal(clock.alive(), true);
    await new Promise((r) => setTimeout(r, 60));
    assert.equal(clock.stop.aborted, true);
    assert.equal(clock.signal.aborted, false, 'the grace is still running');
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(clock.signal.aborted, true);
    assert.equal((clock.signal.reason as { code?: string }).code, 'DeadlineReached');
    assert.equal(clock.alive(), false, 'past the hard deadline the lease is let go');
    clock.dispose();
  });

  test('an outside abort (host shutdown, lease lost) aborts at once', () => {
    const outside = new AbortController();
    const clock = startPollClock({ deadlineMs: 60_000, graceMs: 1000, stallMs: 1000, signals: [outside.signal], subject: 'm', listeners: 10 });
    outside.abort(new Error('shutdown'));
    assert.equal(clock.signal.aborted, true);
    assert.equal(clock.stop.aborted, true);
    clock.dispose();
  });
});

test('UID sets: compact, sorted, round-trip; anything else is a TypeError', () => {
  assert.equal(formatUidSet([9, 4, 5, 6, 12, 5]), '4:6,9,12');
  assert.deepEqual(parseUidSet('4:6,9,12'), [4, 5, 6, 9, 12]);
  assert.deepEqual(parseUidSet(''), []);
  assert.throws(() => parseUidSet('4:*'), TypeError);
});

test('abortable: a call that takes no signal stops holding the caller when the signal fires', async () => {
  const never = new Promise<string>(() => {});
  const c = new AbortController();
  const p = abortable(never, c.signal);
  c.abort(new Error('deadline'));
  await assert.rejects(p, /deadline/);
  assert.equal(await abortable(Promise.resolve('ok'), new AbortController().signal), 'ok');
});
