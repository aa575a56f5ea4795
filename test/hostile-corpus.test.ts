import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { QueueClient } from '@azure/storage-queue';
import { BlobServiceClient } from '@azure/storage-blob';
import { ImapFlow } from 'imapflow';
import { startStack, MAILBOXES, type Stack } from './support/stack.js';
import { hostileCorpus, type HostileCase } from './support/hostile-corpus.js';
import { pollMailbox, type PollResult } from '../shared/poll/poll-mailbox.js';
import { parseMessage, PARSE_LIMITS } from '../shared/parse/index.js';

const BOX = MAILBOXES.happy;
const QUEUE = 'out-hostile';
const CONTAINER = 'hostile-blobs';
/** Generous: the corpus takes a few seconds here; a hang is what this catches. */
const POLL_BOUND_MS = 120_000;
const RSS_BOUND_BYTES = 512 * 1024 * 1024;

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

let stack: Stack;
let corpus: HostileCase[];
let result: PollResult;
let rssGrowth = 0;
let messages: any[] = [];
let served = new Map<string, Buffer>();
const blobNames: string[] = [];
let mailboxKey = '';

/** Every queue message, decoded; overflow pointers replaced by their message.json. */
async function drainQueue(conn: string): Promise<any[]> {
  const q = new QueueClient(conn, QUEUE);
  const out: any[] = [];
  for (;;) {
    const { receivedMessageItems } = await q.receiveMessages({ numberOfMessages: 32, visibilityTimeout: 600 });
    if (!receivedMessageItems.length) return out;
    for (const m of receivedMessageItems) out.push(JSON.parse(Buffer.from(m.messageText, 'base64').toString('utf8')));
  }
}

/** What the server serves for each UID, read by a separate client (the reference for "raw preserved"). */
async function fetchServed(rt: Awaited<ReturnType<Stack['runtime']>>): Promise<Map<string, Buffer>> {
  const mb = rt.config.mailboxes[0];
  const { token } = await rt.tokens(mb.app).getToken({ renew: false });
  const client = new ImapFlow({
    host: mb.host,
    port: mb.port,
    secure: true,
    tls: { ca: stack.sandbox.certs.ca },
    auth: { user: mb.address, accessToken: token },
    logger: false,
  } as never);
  await client.connect();
  const out = new Map<string, Buffer>();
  try {
    await client.mailboxOpen('INBOX', { readOnly: true });
    for await (const m of client.fetch('1:*', { uid: true, source: true }, { uid: true })) out.set(String(m.uid), m.source ?? Buffer.alloc(0));
  } finally {
    await client.logout();
  }
  return out;
}

before(async () => {
  stack = await startStack();
  corpus = hostileCorpus();
  for (const c of corpus) await stack.sandbox.dovecot.deliver(BOX, c.raw);
  const rt = await stack.runtime([{ address: BOX, protocol: 'imap' }], { env: { POSTROOM_OUTPUT_QUEUE: QUEUE, POSTROOM_BLOB_CONTAINER: CONTAINER, POSTROOM_BATCH_SIZE: '16' } });
  mailboxKey = rt.config.mailboxes[0].key;
  global.gc?.();
  const rssBefore = process.memoryUsage().rss;
  let peak = rssBefore;
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 50);
  let timer: NodeJS.Timeout | undefined;
  try {
    result = await Promise.race([
      pollMailbox(rt, rt.config.mailboxes[0]),
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`the poll did not finish within ${POLL_BOUND_MS} ms`)), POLL_BOUND_MS))),
    ]);
  } finally {
    clearTimeout(timer);
    clearInterval(sampler);
  }
  rssGrowth = peak - rssBefore;
  const conn = stack.sandbox.azurite.connectionString;
  messages = await drainQueue(conn);
  const container = BlobServiceClient.fromConnectionString(conn).getContainerClient(CONTAINER);
  for (const m of messages) {
    if (m.overflow) Object.assign(m, JSON.parse((await container.getBlobClient(m.overflow.blob).downloadToBuffer()).toString('utf8')));
  }
  for await (const b of container.listBlobsFlat()) blobNames.push(b.name);
  served = await fetchServed(rt);
});
after(async () => {
  await stack?.stop();
});

describe('hostile corpus through the real poll (Dovecot + Azurite)', () => {
  test('the corpus has at least 60 distinct cases', () => {
    assert.ok(corpus.length >= 60, `${corpus.length} cases`);
    assert.equal(new Set(corpus.map((c) => sha(c.raw))).size, corpus.length, 'every case distinct');
  });

  test('the poll ends ok, in bounded time and memory, with one delivery per message', () => {
    assert.equal(result.outcome, 'ok', result.error?.message);
    assert.equal(result.delivered.length, corpus.length);
    assert.ok(rssGrowth < RSS_BOUND_BYTES, `RSS grew by ${(rssGrowth / 1048576).toFixed(0)} MiB`);
    const name = (m: any) => corpus.find((c) => sha(c.raw) === m.sha256)?.name ?? `uid ${m.source.id}`;
    const parsed = messages.filter((m) => !m.parseError).length;
    const limited = messages.filter((m) => m.limit);
    const failed = messages.filter((m) => m.parseError && !m.limit);
    console.log(
      `[hostile-corpus] ${corpus.length} cases in ${result.durationMs} ms, RSS +${(rssGrowth / 1048576).toFixed(0)} MiB: ${parsed} parsed, ` +
        `${failed.length} parseError (${failed.map(name).join(', ')}), ${limited.length} raw-only by limit (${limited.map((m) => `${name(m)}: ${m.limit.name}`).join(', ')})`,
    );
  });

  test('each file has exactly one outcome: one queue message with its own key', () => {
    assert.equal(messages.length, corpus.length);
    assert.equal(served.size, corpus.length, 'the server holds every case');
    const ids = messages.map((m) => m.source.id).sort();
    assert.deepEqual(ids, [...served.keys()].sort(), 'one message per UID');
    assert.equal(new Set(messages.map((m) => m.idempotencyKey)).size, corpus.length, 'keys unique');
    for (const m of messages) {
      assert.equal(m.schema, 'postroom.message.v1');
      assert.ok(m.limit === null || typeof m.limit?.name === 'string', `limit is null or names one (${m.source.id})`);
      if (m.limit) assert.match(m.parseError ?? '', new RegExp(`limit "${m.limit.name}"`), 'a limit comes with a parseError naming it');
    }
  });

  test('raw bytes preserved byte for byte in message.eml (sha256), and every case found', async () => {
    const container = BlobServiceClient.fromConnectionString(stack.sandbox.azurite.connectionString).getContainerClient(CONTAINER);
    const byHash = new Map(corpus.map((c) => [sha(c.raw), c]));
    const found = new Set<string>();
    for (const m of messages) {
      const servedBytes = served.get(m.source.id)!;
      const eml = await container
        .getBlobClient(m.raw.blob)
        .downloadToBuffer()
        .catch(() => Buffer.alloc(0));
      assert.equal(sha(eml), sha(servedBytes), `message.eml of UID ${m.source.id} is what the server served`);
      assert.equal(m.sha256, sha(servedBytes));
      assert.equal(m.size, servedBytes.length);
      const c = byHash.get(m.sha256);
      if (c) found.add(c.name);
    }
    const missing = corpus.filter((c) => !found.has(c.name));
    assert.ok(
      missing.every((c) => c.serverMayRewrite),
      `unchanged cases all found byte-exact; missing: ${missing
        .filter((c) => !c.serverMayRewrite)
        .map((c) => c.name)
        .join(', ')}`,
    );
    assert.ok(found.size >= corpus.length - corpus.filter((c) => c.serverMayRewrite).length);
  });

  test('no blob name outside its message prefix, and every listed blob exists', () => {
    const keys = new Set(messages.map((m) => m.idempotencyKey));
    for (const name of blobNames) {
      const [box, key, ...rest] = name.split('/');
      assert.equal(box, mailboxKey, name);
      assert.ok(keys.has(key), `blob under a delivered key: ${name}`);
      assert.ok(rest.length >= 1 && rest.length <= 2, name);
      assert.doesNotMatch(name, /\.\.|[\u0000-\u001f\u007f\u202a-\u202e\u2066-\u2069\\]/u, name);
    }
    const names = new Set(blobNames);
    for (const m of messages) {
      const prefix = `${mailboxKey}/${m.idempotencyKey}/`;
      const refs = [m.raw.blob, ...m.attachments.map((a: any) => a.blob), m.text?.blob, m.html?.blob].filter(Boolean);
      for (const r of refs) {
        assert.ok(r.startsWith(prefix), `${r} under ${prefix}`);
        assert.ok(names.has(r), `${r} exists`);
      }
    }
  });

  test('the known hang: 2,000 attachments are delivered raw-only, naming the parts limit', () => {
    const m = messages.find((x) => x.headers?.messageId === '<attachments-2000@corpus.test>' || x.sha256 === sha(corpus.find((c) => c.name === 'attachments-2000')!.raw));
    assert.ok(m, 'delivered');
    assert.equal(m.limit?.name, 'parts');
    assert.match(m.parseError, /parts/);
    const streamed = messages.find((x) => x.sha256 === sha(corpus.find((c) => c.name === 'parts-1200-streamed')!.raw));
    assert.equal(streamed?.limit?.name, 'parts', 'also when the raw message streams (over 1 MiB)');
    const huge = messages.find((x) => x.sha256 === sha(corpus.find((c) => c.name === 'huge-header-2mb')!.raw));
    assert.equal(huge?.limit?.name, 'header-size');
    const deep = messages.find((x) => x.sha256 === sha(corpus.find((c) => c.name === 'nested-multipart-200')!.raw));
    assert.equal(deep?.limit?.name, 'nesting');
    const baseline = messages.find((x) => x.sha256 === sha(corpus.find((c) => c.name === 'plain-baseline')!.raw));
    assert.equal(baseline?.parseError, null);
    assert.match(baseline?.text?.content ?? '', /well-formed/);
  });
});

describe('parseMessage bounds, without storage', () => {
  const corpusCase = (name: string) => corpus.find((c) => c.name === name)!.raw;
  const drain = async (s: Readable) => {
    for await (const _ of s) void _;
  };

  test('the known hang, directly: 2,000 attachments end with limit "parts" and every attachment stream ended', async () => {
    let consumed = 0;
    const r = await parseMessage(Readable.from([corpusCase('attachments-2000')]), {
      onAttachment: async (_info, content) => {
        await drain(content);
        consumed++;
      },
    });
    assert.deepEqual(r.limit, { name: 'parts', max: PARSE_LIMITS.parts });
    assert.ok(consumed < 1000, `${consumed} attachments consumed`);
  });

  test('size: over the known size nothing is parsed; over it while reading the parse stops', async () => {
    const raw = corpusCase('plain-baseline');
    const known = await parseMessage(Readable.from([raw]), { size: raw.length, limits: { size: 100 }, onAttachment: async () => undefined });
    assert.equal(known.limit?.name, 'size');
    assert.equal(known.headers.subject, null, 'not parsed');
    const seen = await parseMessage(Readable.from([raw.subarray(0, 80), raw.subarray(80)]), { limits: { size: 100 }, onAttachment: async () => undefined });
    assert.equal(seen.limit?.name, 'size');
    assert.match(seen.parseError!, /limit "size"/);
  });

  test('stall: a consumer that never reads is aborted and the parse ends with limit "stall"', async () => {
    let aborted = false;
    const r = await parseMessage(Readable.from([corpusCase('fn-path-traversal')]), {
      limits: { stallMs: 200 },
      onAttachment: (_info, _content, signal) =>
        new Promise((_, reject) =>
          signal.addEventListener('abort', () => {
            aborted = true;
            // The parser aborts its consumers with an Error (ParseAbandoned).
            reject(signal.reason as Error);
          }),
        ),
    });
    assert.equal(r.limit?.name, 'stall');
    assert.ok(aborted, 'the consumer saw the abort');
  });

  test('the poll signal reaches a hanging attachment consumer: the parse rejects with the abort', async () => {
    const poll = new AbortController();
    const parsing = parseMessage(Readable.from([corpusCase('fn-path-traversal')]), {
      signal: poll.signal,
      // The poll's abort reason, an Error, reaches the consumer as it is.
      onAttachment: (_info, _content, signal) => new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason as Error))),
    });
    setTimeout(() => poll.abort(new Error('poll deadline')), 50);
    await assert.rejects(parsing, /poll deadline/);
  });

  test('a storage failure of an attachment is not a parse error: it rejects', async () => {
    const parsing = parseMessage(Readable.from([corpusCase('same-filename-50')]), {
      onAttachment: async (info, content) => {
        if (info.index === 3) throw new Error('storage down');
        await drain(content);
      },
    });
    await assert.rejects(parsing, /storage down/);
  });
});
