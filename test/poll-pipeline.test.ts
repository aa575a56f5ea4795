import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { pipelineBatches, READ_AHEAD } from '../shared/poll/pipeline.js';
import type { MailSession, SourceMessage } from '../shared/source.js';

const tick = () => new Promise((r) => setImmediate(r));

/** An in-memory session: `n` batches of `size` messages, recording what the pipeline asked for. */
function session(n: number, size: number, events: string[]): MailSession {
  const msg = (id: string): SourceMessage => ({ id, open: async () => Readable.from([Buffer.from(id)]) });
  return {
    folder: 'INBOX',
    validity: '1',
    async *batches() {
      for (let b = 0; b < n; b++) {
        events.push(`fetch ${b}`);
        await tick();
        yield Array.from({ length: size }, (_, i) => msg(`${b}.${i}`));
      }
    },
    async acknowledge() {},
    async checkpoint() {},
    async close() {},
    abort() {},
  };
}

describe('pipelineBatches: read ahead, deliver across batches, acknowledge in order', () => {
  test('acknowledges each batch in order and only after all of its messages are delivered', async () => {
    const events: string[] = [];
    const done = new Set<string>();
    let active = 0;
    let maxActive = 0;
    await pipelineBatches(session(6, 5, events), {
      limit: 4,
      signal: new AbortController().signal,
      deliver: async (m) => {
        active++;
        maxActive = Math.max(maxActive, active);
        events.push(`start ${m.id}`);
        // Later messages finish first: order must come from the pipeline, not from timing.
        await new Promise((r) => setTimeout(r, 8 - Number(m.id.split('.')[1])));
        active--;
        done.add(m.id);
        return m.id;
      },
      acknowledge: async (batch, results) => {
        for (const m of batch) assert.ok(done.has(m.id), `acknowledged ${m.id} before it was delivered`);
        assert.deepEqual(
          results,
          batch.map((m) => m.id),
          'results in batch order',
        );
        events.push(`ack ${batch[0].id.split('.')[0]}`);
      },
    });
    assert.ok(maxActive <= 4, `at most 4 deliveries at once, saw ${maxActive}`);
    assert.equal(maxActive, 4, 'the pool is kept full');
    const acks = events.filter((e) => e.startsWith('ack'));
    assert.deepEqual(acks, ['ack 0', 'ack 1', 'ack 2', 'ack 3', 'ack 4', 'ack 5']);
    // Overlap: the next batch is fetched and started before the previous one is acknowledged.
    assert.ok(events.indexOf('fetch 1') < events.indexOf('ack 0'), events.join(','));
    assert.ok(events.indexOf('start 1.0') < events.indexOf('ack 0'), 'batch 1 starts while batch 0 is in flight');
    // Bounded read-ahead: never more than READ_AHEAD + 1 batches unacknowledged.
    for (let b = READ_AHEAD + 1; b < 6; b++) {
      assert.ok(events.indexOf(`ack ${b - READ_AHEAD - 1}`) < events.indexOf(`fetch ${b}`), `fetch ${b} waited for an ack`);
    }
  });

  test('a failed delivery: earlier batches acknowledged, nothing after, no delivery starts later or outlives the call', async () => {
    const events: string[] = [];
    const acked: string[] = [];
    let inFlight = 0;
    const boom = new Error('queue write failed');
    await assert.rejects(
      pipelineBatches(session(8, 4, events), {
        limit: 3,
        signal: new AbortController().signal,
        deliver: async (m) => {
          inFlight++;
          events.push(`start ${m.id}`);
          try {
            await new Promise((r) => setTimeout(r, 2));
            if (m.id === '2.1') throw boom;
            return m.id;
          } finally {
            inFlight--;
          }
        },
        acknowledge: async (batch) => {
          acked.push(batch[0].id.split('.')[0]);
        },
      }),
      (e) => e === boom,
    );
    assert.equal(inFlight, 0, 'every delivery settled before the pipeline gave up');
    assert.deepEqual(acked, ['0', '1'], 'only batches wholly before the failure are acknowledged');
    const failedAt = events.indexOf('start 2.1');
    const startedAfter = events.slice(failedAt + 1).filter((e) => e.startsWith('start'));
    assert.ok(startedAfter.length <= 2, `only deliveries already admitted may start after the failing one: ${startedAfter.join(',')}`);
    assert.ok(!events.includes('fetch 7'), 'reading stopped');
  });

  test('a failed acknowledgement stops the pipeline with that error', async () => {
    const events: string[] = [];
    let inFlight = 0;
    const nope = new Error('checkpoint conflict');
    let acks = 0;
    await assert.rejects(
      pipelineBatches(session(5, 3, events), {
        limit: 2,
        signal: new AbortController().signal,
        deliver: async (m) => {
          inFlight++;
          await tick();
          inFlight--;
          return m.id;
        },
        acknowledge: async () => {
          if (++acks === 2) throw nope;
        },
      }),
      (e) => e === nope,
    );
    assert.equal(acks, 2);
    assert.equal(inFlight, 0);
  });
});
