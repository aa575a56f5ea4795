/**
 * Shared pieces of the benchmarks: the local stack, a request-counting proxy
 * in front of Azurite, minimal raw IMAP/POP3 clients (the protocol ceilings),
 * message generators, seeding and small statistics.
 */
import { randomBytes } from 'node:crypto';
import { createServer, request, Agent, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { SANDBOX_APP, startSandbox, type Sandbox } from '../sandbox/index.js';
import { AZURITE_ACCOUNT, AZURITE_KEY } from '../sandbox/azurite.js';
import { rfc2822Date } from '../sandbox/messages.js';

export const CLIENT_ID = SANDBOX_APP.clientId;

/** Starts the sandbox with FullAccess grants on every benchmark mailbox. */
export async function startBenchStack(dir: string, mailboxes: string[]): Promise<Sandbox> {
  const grants = mailboxes.map((mailbox) => ({ appId: SANDBOX_APP.clientId, mailbox }));
  return startSandbox({ dir, grants, inMemoryStorage: true });
}

// ---------------------------------------------------------------- statistics

export interface Stats {
  min: number;
  median: number;
  max: number;
  runs: number[];
}

export function stats(xs: number[]): Stats {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  const median = s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
  return { min: s[0], median, max: s[s.length - 1], runs: xs };
}

export async function mapPool<T, R>(items: readonly T[], limit: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  return out;
}

// ------------------------------------------------------------------ messages

const CRLF = '\r\n';
const WORDS = 'invoice order shipment delivery account balance payment reminder contract renewal meeting agenda report quarter budget forecast'.split(' ');

function filler(bytes: number, seed: number): string {
  const lines: string[] = [];
  let n = 0;
  let i = seed;
  while (n < bytes) {
    let line = '';
    while (line.length < 70) line += WORDS[(i = (i * 1103515245 + 12345) & 0x7fffffff) % WORDS.length] + ' ';
    lines.push(line.trimEnd());
    n += line.length + 1;
  }
  return lines.join(CRLF);
}

/** A text/plain message of about `bytes` bytes. */
export function textMessage(i: number, bytes = 4096, to = 'bench@contoso.test'): Buffer {
  const date = new Date(Date.UTC(2025, 0, 6, 8, 0, 0) + i * 60_000);
  const head = [
    `From: "Bench Sender ${i % 97}" <sender${i % 97}@fabrikam.test>`,
    `To: ${to}`,
    `Subject: Benchmark message ${i}`,
    `Date: ${rfc2822Date(date)}`,
    `Message-ID: <bench-${i}.${date.getTime().toString(36)}@bench.contoso.test>`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
    'Content-Transfer-Encoding: 7bit',
    '',
    '',
  ].join(CRLF);
  return Buffer.from(head + filler(Math.max(0, bytes - head.length), i) + CRLF, 'utf8');
}

let attachmentPayload: Buffer | undefined;

/** A multipart message with a short text part and one binary attachment, about `bytes` bytes in total. */
export function attachmentMessage(i: number, bytes = 1_000_000, to = 'bench@contoso.test'): Buffer {
  const raw = Math.floor(((bytes - 1200) * 57) / 78);
  if (!attachmentPayload || attachmentPayload.length < raw) attachmentPayload = randomBytes(raw);
  const b64 = attachmentPayload.subarray(0, raw).toString('base64');
  const lines: string[] = [];
  for (let p = 0; p < b64.length; p += 76) lines.push(b64.slice(p, p + 76));
  const boundary = `----=_bench_${i}`;
  const date = new Date(Date.UTC(2025, 0, 6, 8, 0, 0) + i * 60_000);
  const text = [
    `From: Scanner <scanner@fabrikam.test>`,
    `To: ${to}`,
    `Subject: Scanned document ${i}`,
    `Date: ${rfc2822Date(date)}`,
    `Message-ID: <bench-att-${i}@bench.contoso.test>`,
    'MIME-Version: 1.0',
    `Content-Type: multipart/mixed; boundary="${boundary}"`,
    '',
    `--${boundary}`,
    'Content-Type: text/plain; charset=utf-8',
    '',
    'Please find the scanned document attached.',
    '',
    `--${boundary}`,
    'Content-Type: application/pdf',
    `Content-Disposition: attachment; filename="scan-${i}.pdf"`,
    'Content-Transfer-Encoding: base64',
    '',
    ...lines,
    `--${boundary}--`,
    '',
  ].join(CRLF);
  return Buffer.from(text, 'ascii');
}

/** Delivers messages into a Maildir through the sandbox, with some parallelism; returns msg/s. */
export async function seed(sandbox: Sandbox, mailbox: string, count: number, make: (i: number) => Buffer, concurrency = 16): Promise<number> {
  const t0 = performance.now();
  // The first delivery creates the folders; the rest race only on existing ones.
  if (count > 0) await sandbox.dovecot.deliver(mailbox, make(0));
  await mapPool(
    Array.from({ length: Math.max(0, count - 1) }, (_, k) => k + 1),
    concurrency,
    (i) => sandbox.dovecot.deliver(mailbox, make(i)),
  );
  return count / ((performance.now() - t0) / 1000);
}

// ----------------------------------------------------- counting storage proxy

export interface StorageRequest {
  service: 'blob' | 'queue' | 'table';
  method: string;
  path: string;
  query: string;
  bytes: number;
}

export interface CountingProxy {
  /** A connection string that sends every storage request through the proxy. */
  connectionString: string;
  requests: StorageRequest[];
  reset(): void;
  stop(): Promise<void>;
}

/**
 * Forwards one buffered request upstream. Azurite closes an idle kept-alive socket (Node's default: after 5 s);
 * a request sent on it just as it closes fails with "socket hang up" (ECONNRESET on a reused
 * socket: the request never reached Azurite). That is the proxy's race, not the client's, so it
 * is retried once on a new socket; any other failure is answered 503 (which the storage SDKs
 * retry, as they do Azure's own), never a 502 they would not.
 */
function forward(to: { service: string; port: number; agent: Agent }, req: IncomingMessage, res: ServerResponse, body: Buffer, retry: boolean): void {
  const up = request({ host: '127.0.0.1', port: to.port, method: req.method, path: req.url, headers: req.headers, agent: to.agent }, (ur) => {
    res.writeHead(ur.statusCode ?? 502, ur.headers);
    ur.pipe(res);
  });
  up.on('error', (e) => {
    if (retry && up.reusedSocket && (e as NodeJS.ErrnoException).code === 'ECONNRESET') return forward(to, req, res, body, false);
    if (res.headersSent) return void res.destroy(e);
    res.writeHead(503, { 'x-proxy-error': `${to.service}: ${String(e.message).slice(0, 100)}` });
    res.end();
  });
  up.end(body);
}

/**
 * One HTTP forwarder per storage service, recording every request (method,
 * path, body size). The SharedKey signature covers the path, not the port,
 * so the SDKs' requests pass through unchanged.
 */
export async function startCountingProxy(azurite: { blobPort: number; queuePort: number; tablePort: number }): Promise<CountingProxy> {
  const requests: StorageRequest[] = [];
  const agent = new Agent({ keepAlive: true, maxSockets: 256 });
  const servers: Server[] = [];
  const ports: Record<string, number> = {};
  for (const [service, target] of [
    ['blob', azurite.blobPort],
    ['queue', azurite.queuePort],
    ['table', azurite.tablePort],
  ] as const) {
    const server = createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://x');
      const rec: StorageRequest = { service, method: req.method ?? 'GET', path: decodeURIComponent(url.pathname), query: url.search, bytes: 0 };
      requests.push(rec);
      const body: Buffer[] = [];
      req.on('data', (c: Buffer) => (body.push(c), (rec.bytes += c.length)));
      req.on('end', () => forward({ service, port: target, agent }, req, res, Buffer.concat(body), true));
    });
    server.keepAliveTimeout = 30_000;
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    ports[service] = (server.address() as AddressInfo).port;
    servers.push(server);
  }
  const host = 'http://127.0.0.1';
  return {
    connectionString:
      `DefaultEndpointsProtocol=http;AccountName=${AZURITE_ACCOUNT};AccountKey=${AZURITE_KEY};` +
      `BlobEndpoint=${host}:${ports.blob}/${AZURITE_ACCOUNT};QueueEndpoint=${host}:${ports.queue}/${AZURITE_ACCOUNT};TableEndpoint=${host}:${ports.table}/${AZURITE_ACCOUNT};`,
    requests,
    reset: () => void (requests.length = 0),
    async stop() {
      agent.destroy();
      await Promise.all(servers.map((s) => new Promise<void>((r) => (s.closeAllConnections(), s.close(() => r())))));
    },
  };
}

/** Groups recorded requests into readable kinds, e.g. `blob PUT`, `blob PUT comp=block`, `queue POST`. */
export function requestKinds(reqs: StorageRequest[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const r of reqs) {
    const comp = /[?&]comp=([^&]+)/.exec(r.query)?.[1];
    const restype = /[?&]restype=([^&]+)/.exec(r.query)?.[1];
    const k = `${r.service} ${r.method}${comp ? ` comp=${comp}` : ''}${restype ? ` restype=${restype}` : ''}`;
    out[k] = (out[k] ?? 0) + 1;
  }
  return out;
}

// ------------------------------------------------------------ raw protocols

export function xoauth2(user: string, token: string): string {
  return Buffer.from(`user=${user}\x01auth=Bearer ${token}\x01\x01`).toString('base64');
}

function tlsOpen(port: number, ca: string): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = tlsConnect({ host: '127.0.0.1', port, ca, minVersion: 'TLSv1.2' }, () => resolve(s));
    s.once('error', reject);
  });
}

/**
 * The IMAP ceiling: TLS, AUTHENTICATE XOAUTH2 (SASL-IR), SELECT, one
 * `UID FETCH 1:* BODY.PEEK[]`, bytes discarded by a literal-aware scanner
 * (so message text can never be taken for the tagged reply). Returns the
 * literal bytes and message count, and the UIDVALIDITY seen.
 */
export async function rawImapFetchAll(o: {
  port: number;
  ca: string;
  user: string;
  token: string;
  folder?: string;
  fetch?: boolean;
  readWrite?: boolean;
}): Promise<{ messages: number; bytes: number; uidValidity: string; uidNext: number }> {
  const sock = await tlsOpen(o.port, o.ca);
  let pending = Buffer.alloc(0);
  let skip = 0;
  let bytes = 0;
  let messages = 0;
  let waiting: { tag: string; resolve: (line: string) => void; reject: (e: Error) => void } | undefined;
  const untagged: string[] = [];
  const onLine = (line: string) => {
    if (waiting && line.startsWith(waiting.tag + ' ')) {
      const w = waiting;
      waiting = undefined;
      if (/^\S+ OK/.test(line)) w.resolve(line);
      else w.reject(new Error(`IMAP: ${line.slice(0, 200)}`));
    } else if (line.startsWith('* ') && !line.includes(' FETCH ')) untagged.push(line);
  };
  sock.on('data', (chunk: Buffer) => {
    let off = 0;
    while (off < chunk.length) {
      if (skip > 0) {
        const n = Math.min(skip, chunk.length - off);
        skip -= n;
        bytes += n;
        off += n;
        continue;
      }
      const nl = chunk.indexOf(10, off);
      if (nl < 0) {
        pending = Buffer.concat([pending, chunk.subarray(off)]);
        return;
      }
      const lineBuf = pending.length ? Buffer.concat([pending, chunk.subarray(off, nl + 1)]) : chunk.subarray(off, nl + 1);
      pending = Buffer.alloc(0);
      off = nl + 1;
      const line = lineBuf.toString('latin1').replace(/\r?\n$/, '');
      const lit = /\{(\d+)\}$/.exec(line);
      if (lit) {
        skip = Number(lit[1]);
        messages++;
      } else onLine(line);
    }
  });
  let closed: Error | undefined;
  sock.on('error', (e) => (closed = e));
  sock.on('close', () => waiting?.reject(closed ?? new Error('IMAP connection closed')));
  let n = 0;
  const cmd = (text: string) =>
    new Promise<string>((resolve, reject) => {
      const tag = `R${++n}`;
      waiting = { tag, resolve, reject };
      sock.write(`${tag} ${text}\r\n`);
    });
  try {
    // The greeting arrives before any tagged reply: wait for it first.
    await new Promise<void>((resolve) => {
      const check = () => (untagged.length ? resolve() : setTimeout(check, 2));
      check();
    });
    await cmd(`AUTHENTICATE XOAUTH2 ${xoauth2(o.user, o.token)}`);
    await cmd(`${o.readWrite ? 'SELECT' : 'EXAMINE'} "${o.folder ?? 'INBOX'}"`);
    const uv = untagged.map((l) => /UIDVALIDITY (\d+)/.exec(l)?.[1]).find(Boolean) ?? '';
    const un = Number(untagged.map((l) => /UIDNEXT (\d+)/.exec(l)?.[1]).find(Boolean) ?? 0);
    messages = 0;
    bytes = 0;
    if (o.fetch !== false) await cmd('UID FETCH 1:* BODY.PEEK[]');
    await cmd('LOGOUT').catch(() => undefined);
    return { messages, bytes, uidValidity: uv, uidNext: un };
  } finally {
    sock.destroy();
  }
}

/** The POP3 ceiling: TLS, AUTH XOAUTH2, STAT, then RETR 1..n one at a time (as a sequential client must), bytes discarded. */
export async function rawPop3RetrAll(o: { port: number; ca: string; user: string; token: string }): Promise<{ messages: number; bytes: number }> {
  const sock = await tlsOpen(o.port, o.ca);
  let mode: 'line' | 'multi' = 'line';
  let line = '';
  let tail = '';
  let bytes = 0;
  let waiting: { resolve: (s: string) => void; reject: (e: Error) => void } | undefined;
  sock.on('data', (chunk: Buffer) => {
    let off = 0;
    while (off < chunk.length) {
      if (mode === 'line') {
        const nl = chunk.indexOf(10, off);
        if (nl < 0) {
          line += chunk.toString('latin1', off);
          return;
        }
        line += chunk.toString('latin1', off, nl + 1);
        off = nl + 1;
        const l = line;
        line = '';
        if (!l.startsWith('+OK') || !multiNext) {
          const w = waiting;
          waiting = undefined;
          if (l.startsWith('+')) w?.resolve(l);
          else w?.reject(new Error(`POP3: ${l.slice(0, 200)}`));
        } else {
          mode = 'multi';
          tail = '\r\n';
        }
      } else {
        // Multi-line data ends at CRLF.CRLF; a 5-byte tail carries the match across chunks.
        const part = chunk.subarray(off);
        const probe = tail + part.toString('latin1', 0, Math.min(part.length, 5));
        let end = probe.indexOf('\r\n.\r\n');
        let consumed: number;
        if (end >= 0) consumed = end + 5 - tail.length;
        else {
          end = part.indexOf('\r\n.\r\n');
          consumed = end >= 0 ? end + 5 : -1;
        }
        if (consumed >= 0) {
          bytes += consumed;
          off += consumed;
          mode = 'line';
          const w = waiting;
          waiting = undefined;
          w?.resolve('');
        } else {
          bytes += part.length;
          tail = (tail + part.toString('latin1', Math.max(0, part.length - 5))).slice(-5);
          return;
        }
      }
    }
  });
  let multiNext = false;
  const cmd = (text: string | null, multi = false) =>
    new Promise<string>((resolve, reject) => {
      multiNext = multi;
      waiting = { resolve, reject };
      if (text !== null) sock.write(`${text}\r\n`);
    });
  try {
    await cmd(null);
    await cmd(`AUTH XOAUTH2 ${xoauth2(o.user, o.token)}`);
    const stat = await cmd('STAT');
    const count = Number(stat.split(' ')[1]);
    bytes = 0;
    for (let i = 1; i <= count; i++) await cmd(`RETR ${i}`, true);
    await cmd('QUIT').catch(() => undefined);
    return { messages: count, bytes };
  } finally {
    sock.destroy();
  }
}

export function fmt(n: number, digits = 0): string {
  return n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
}
