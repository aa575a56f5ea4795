import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ensureCertificates, type SandboxCertificates } from '../sandbox/ca.js';
import { isPostroomError } from '../shared/errors.js';
import { memoryLogger } from '../shared/logger.js';
import { createPop3Source, type Pop3SourceOptions } from '../shared/pop3/source.js';
import { HASHES_PER_PROPERTY, MAX_TRACKED_UIDLS, packUidlHashes, pruneUidlHashes, uidlHash, unpackUidlHashes } from '../shared/pop3/uidl-set.js';
import type { SourceMessage } from '../shared/source.js';
import { MemoryStateStore } from './support/memory-state.js';
import { maildropScript, startScriptServer, type MaildropMessage, type ScriptServer } from './support/pop3-script-server.js';

const KEY = { partition: 'mbx-1', key: 'pop3-uidls' };

/** Azure Table's entity size rule: 4 + 2*(PK+RK) + per property 8 + 2*name + value bytes. */
function entityBytes(value: Record<string, unknown>): number {
  let n = 4 + 2 * (KEY.partition.length + KEY.key.length);
  for (const [k, v] of Object.entries(value)) {
    n += 8 + 2 * k.length + (v instanceof Uint8Array ? v.length + 4 : typeof v === 'string' ? 4 + 2 * v.length : 8);
  }
  return n;
}

describe('delivered-UIDL set', () => {
  test('50,000 UIDLs pack within the Table limits and round-trip exactly', () => {
    const uids = Array.from({ length: 50_000 }, (_, i) => `${(i * 7919).toString(16).padStart(8, '0').toUpperCase()}5F3A91C2-${i}`);
    const hashes = uids.map(uidlHash);
    const record = packUidlHashes(hashes);
    assert.equal(record.count, 50_000);
    const props = Object.entries(record).filter(([k]) => /^h\d+$/.test(k));
    assert.equal(props.length, Math.ceil(50_000 / HASHES_PER_PROPERTY));
    for (const [, v] of props) assert.ok(v instanceof Uint8Array && v.length <= 64 * 1024);
    assert.ok(entityBytes(record) < 1024 * 1024, `entity is ${entityBytes(record)} bytes`);
    const back = unpackUidlHashes(record);
    assert.equal(back.size, 50_000);
    for (const h of hashes) assert.ok(back.has(h));
    // Sorted on disk, whatever the input order.
    const h0 = Buffer.from(record['h0'] as Uint8Array);
    for (let i = 8; i < h0.length; i += 8) assert.ok(h0.readBigUInt64BE(i - 8) < h0.readBigUInt64BE(i));
  });

  test('the largest set allowed still fits one entity; one more is refused', () => {
    const hashes = Array.from({ length: MAX_TRACKED_UIDLS }, (_, i) => (BigInt(i) * 0x9e3779b97f4a7c15n) % 2n ** 64n);
    const record = packUidlHashes(hashes);
    assert.ok(entityBytes(record) < 1024 * 1024, `entity is ${entityBytes(record)} bytes`);
    assert.throws(
      () => packUidlHashes([...hashes, 2n ** 64n - 1n]),
      (e) => isPostroomError(e, 'ConfigInvalid'),
    );
  });

  test('duplicates collapse; properties left over from a larger write are ignored', () => {
    const a = uidlHash('a');
    const b = uidlHash('b');
    const big = packUidlHashes(Array.from({ length: HASHES_PER_PROPERTY + 5 }, (_, i) => uidlHash(`u${i}`)));
    const small = packUidlHashes([a, b, a]);
    assert.equal(small.count, 2);
    const merged = { ...big, ...small }; // a merge-mode write keeps big's h1
    assert.deepEqual(unpackUidlHashes(merged), new Set([a, b]));
  });

  test('a malformed record is refused with ConfigInvalid', () => {
    const good = packUidlHashes([uidlHash('x'), uidlHash('y')]);
    for (const bad of [
      { ...good, format: 'other' },
      { ...good, count: 3 },
      { ...good, h0: new Uint8Array(15) },
      { ...good, count: -1 },
    ]) {
      assert.throws(
        () => unpackUidlHashes(bad),
        (e) => isPostroomError(e, 'ConfigInvalid'),
      );
    }
  });

  test('pruning keeps only what is still on the server', () => {
    const [a, b, c] = ['a', 'b', 'c'].map(uidlHash) as [bigint, bigint, bigint];
    assert.deepEqual(pruneUidlHashes(new Set([a, b]), new Set([b, c])), new Set([b]));
  });
});

// ---------------------------------------------------------------- the source against a scripted maildrop

let certs: SandboxCertificates;
let certDir: string;
const servers: ScriptServer[] = [];

before(async () => {
  certDir = await mkdtemp(join(tmpdir(), 'postroom-pop3-state-'));
  certs = await ensureCertificates(certDir);
});

after(async () => {
  await Promise.all(servers.map((s) => s.close()));
  await rm(certDir, { recursive: true, force: true });
});

async function maildrop(messages: MaildropMessage[], accept?: (user: string, token: string) => boolean): Promise<ScriptServer> {
  const s = await startScriptServer(maildropScript({ messages, accept }), { tls: { key: certs.key, cert: certs.cert } });
  servers.push(s);
  return s;
}

function msg(uid: string): MaildropMessage {
  return { uid, body: `Subject: ${uid}\r\n\r\n.body of ${uid}\r\n` };
}

function sourceOptions(port: number, state: MemoryStateStore, extra: Partial<Pop3SourceOptions> = {}): Pop3SourceOptions {
  return {
    mailbox: 'box@contoso.example',
    host: '127.0.0.1',
    port,
    tls: 'implicit',
    ca: certs.ca,
    postAction: 'none',
    getToken: async () => 'token-1',
    state,
    stateKey: KEY,
    batchSize: 2,
    logger: memoryLogger(),
    commandTimeoutMs: 5_000,
    ...extra,
  };
}

async function read(m: SourceMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of await m.open()) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString();
}

/** One poll as the pipeline runs it; `ackBatches` limits how many batches are acknowledged. */
async function poll(o: Pop3SourceOptions, ackBatches = Infinity): Promise<{ batches: string[][]; bodies: string[] }> {
  const session = await createPop3Source(o).open();
  assert.equal(session.folder, 'INBOX');
  assert.equal(session.validity, 'pop3');
  const batches: string[][] = [];
  const bodies: string[] = [];
  try {
    for await (const batch of session.batches()) {
      batches.push(batch.map((m) => m.id));
      for (const m of batch) bodies.push(await read(m));
      if (batches.length <= ackBatches) await session.acknowledge(batch);
    }
  } catch (e) {
    session.abort();
    throw e;
  }
  await session.close();
  return { batches, bodies };
}

describe('createPop3Source', () => {
  test("post-action 'none': delivers new UIDLs oldest first in batches, remembers them, prunes vanished ones", async () => {
    const messages = ['U1', 'U2', 'U3', 'U4', 'U5'].map(msg);
    const s = await maildrop(messages);
    const state = new MemoryStateStore();
    const first = await poll(sourceOptions(s.port, state));
    assert.deepEqual(first.batches, [['U1', 'U2'], ['U3', 'U4'], ['U5']]);
    assert.equal(first.bodies[0], messages[0].body);
    assert.equal(state.writes, 3);
    assert.equal(s.connections[0].received.at(-1), 'QUIT');
    assert.ok(!s.connections[0].received.some((l) => l.startsWith('DELE')));

    // U1 and U3 vanish (read elsewhere), U6 arrives.
    messages.splice(2, 1);
    messages.splice(0, 1);
    messages.push(msg('U6'));
    const second = await poll(sourceOptions(s.port, state));
    assert.deepEqual(second.batches, [['U6']]);
    const saved = unpackUidlHashes((await state.get(KEY.partition, KEY.key))!.value);
    assert.deepEqual(saved, new Set(['U2', 'U4', 'U5', 'U6'].map(uidlHash)));

    const third = await poll(sourceOptions(s.port, state));
    assert.deepEqual(third.batches, []);
  });

  test('an unacknowledged batch is delivered again by the next poll', async () => {
    const s = await maildrop(['A', 'B', 'C'].map(msg));
    const state = new MemoryStateStore();
    assert.deepEqual((await poll(sourceOptions(s.port, state), 1)).batches, [['A', 'B'], ['C']]);
    assert.deepEqual((await poll(sourceOptions(s.port, state))).batches, [['C']]);
  });

  test("post-action 'delete': DELE only acknowledged messages, committed by QUIT; abort commits nothing", async () => {
    const messages = ['D1', 'D2', 'D3'].map(msg);
    const s = await maildrop(messages);
    const state = new MemoryStateStore();
    const o = sourceOptions(s.port, state, { postAction: 'delete' });
    assert.deepEqual((await poll(o, 1)).batches, [['D1', 'D2'], ['D3']]);
    assert.deepEqual(
      s.connections[0].received.filter((l) => /^(DELE|QUIT)/.test(l)),
      ['DELE 1', 'DELE 2', 'QUIT'],
    );
    assert.deepEqual(
      messages.map((m) => m.uid),
      ['D3'],
    );
    assert.equal(state.writes, 1, 'delete mode keeps the delivered-UIDL set too (one write per acknowledged batch)');

    const session = await createPop3Source(o).open();
    for await (const batch of session.batches()) {
      for (const m of batch) await read(m);
      await session.acknowledge(batch);
    }
    session.abort();
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(
      messages.map((m) => m.uid),
      ['D3'],
      'an aborted session deleted something',
    );
  });

  test('an auth failure is retried once with a renewed token', async () => {
    const s = await maildrop([msg('R1')], (_u, t) => t === 'fresh');
    const calls: boolean[] = [];
    const log = memoryLogger();
    const o = sourceOptions(s.port, new MemoryStateStore(), {
      logger: log,
      getToken: async ({ renew }) => {
        calls.push(renew);
        return renew ? 'fresh' : 'stale';
      },
    });
    assert.deepEqual((await poll(o)).batches, [['R1']]);
    assert.deepEqual(calls, [false, true]);
    assert.ok(log.lines.some((l) => /retrying once with a renewed token/.test(l)));
    assert.ok(!log.lines.some((l) => l.includes('fresh') || l.includes('stale')));

    calls.length = 0;
    const failing = sourceOptions(s.port, new MemoryStateStore(), {
      getToken: async ({ renew }) => {
        calls.push(renew);
        return 'never';
      },
    });
    await assert.rejects(createPop3Source(failing).open(), (e) => isPostroomError(e, 'AuthenticationFailed') && e.subject === 'box@contoso.example');
    assert.deepEqual(calls, [false, true]);
  });

  test('a concurrent state writer makes acknowledge fail with CheckpointConflict', async () => {
    const s = await maildrop([msg('C1')]);
    const state = new MemoryStateStore();
    const session = await createPop3Source(sourceOptions(s.port, state)).open();
    await state.put(KEY.partition, KEY.key, packUidlHashes([]));
    for await (const batch of session.batches()) {
      await read(batch[0]);
      await assert.rejects(session.acknowledge(batch), (e) => isPostroomError(e, 'CheckpointConflict'));
    }
    session.abort();
  });

  test('maxMessageBytes skips larger messages with a warning; foreign messages are refused', async () => {
    const big = { uid: 'BIG', body: 'Subject: big\r\n\r\n' + 'x'.repeat(5000) + '\r\n' };
    const s = await maildrop([msg('S1'), big, msg('S2')]);
    const log = memoryLogger();
    const o = sourceOptions(s.port, new MemoryStateStore(), { maxMessageBytes: 1000, logger: log });
    const session = await createPop3Source(o).open();
    const ids: string[] = [];
    for await (const batch of session.batches()) ids.push(...batch.map((m) => m.id));
    assert.deepEqual(ids, ['S1', 'S2']);
    assert.ok(log.lines.some((l) => l.startsWith('warn') && l.includes('BIG')));
    const foreign: SourceMessage = {
      id: 'nope',
      open: async () => {
        throw new Error('unused');
      },
    };
    await assert.rejects(session.acknowledge([foreign]), TypeError);
    await session.close();
  });
});
