/**
 * A small scriptable TLS proxy in front of the sandbox Dovecot, so tests can
 * see Exchange Online's exact reply texts and faults (Dovecot speaks its own).
 * It terminates TLS towards the client with our certificate and opens TLS to
 * the server trusting our CA. Traffic is streamed: lines are inspected only
 * while a rule needs it, and IMAP literals (`{n}`) / POP3 multi-line bodies
 * are passed through unread, so 20 MB messages are never held in memory.
 */
import { once } from 'node:events';
import net, { type Socket } from 'node:net';
import tls from 'node:tls';
import type { Readable, Writable } from 'node:stream';

/** Rewrites, drops or acts on a server → client line (text without CRLF, read as latin1). */
export interface ReplyRule {
  /** Tested against each server line (e.g. `/^(\S+) NO \[AUTHENTICATIONFAILED\]/`); no `g` flag. */
  match: RegExp;
  /** New text via `line.replace(match, replace)` (so `$1` works); a function may return `null` to drop the line. Omitted: unchanged. */
  replace?: string | ((line: string) => string | null);
  /** Extra lines sent to the client right after this one (e.g. `* BYE …`). */
  append?: string[];
  /** Waits this long before sending the line. */
  delayMs?: number;
  /** Closes the connection after sending the line. */
  close?: boolean;
  /** How many times the rule may fire on a connection; default unlimited. */
  times?: number;
}

/** Acts on a client → server command line instead of (or before) forwarding it. */
export interface CommandRule {
  /** Tested against each client line (e.g. `/^\S+ SELECT /i`); `/^/` matches every line (SASL continuation lines included); no `g` flag. */
  match: RegExp;
  /** Fire only from the nth matching line on (1-based); default 1. */
  nth?: number;
  /** How many times the rule may fire; default unlimited. */
  times?: number;
  /** Lines sent to the client instead of forwarding the command; `{tag}` is replaced with the command's tag. */
  reply?: string[];
  /** Waits this long before forwarding / replying. */
  delayMs?: number;
  /** Closes the connection (after `reply`, if any) without forwarding. */
  close?: boolean;
}

/** What the proxy does on one client connection. */
export interface ConnectionScript {
  /** Reset the connection right after accepting it (before TLS). */
  refuse?: boolean;
  /** Waits this long before connecting to the server (the greeting is delayed as much). */
  connectDelayMs?: number;
  replies?: ReplyRule[];
  commands?: CommandRule[];
  /** Cuts the connection once this many server → client bytes have been forwarded. */
  dropAfterBytes?: number;
}

export interface FaultProxyOptions {
  /** The server's port (TLS on connect), on `targetHost` (default 127.0.0.1). */
  targetPort: number;
  targetHost?: string;
  /** PEM certificate and key shown to clients. */
  cert: string | Buffer;
  key: string | Buffer;
  /** PEM CA the server's certificate is checked against. */
  ca: string | Buffer;
  /** Protocol awareness for skipping message data: IMAP literals or POP3 multi-line replies. */
  protocol: 'imap' | 'pop3';
  /** Script for connections without a queued one; default: forward everything unchanged. */
  defaultScript?: ConnectionScript;
}

export interface FaultProxy {
  /** The port clients connect to (127.0.0.1, TLS). */
  readonly port: number;
  /** Connections accepted so far. */
  readonly connections: number;
  /** Queues a script for the next accepted connection (FIFO); later connections fall back to the default. */
  next(script: ConnectionScript): void;
  /** Replaces the default script. */
  setDefault(script: ConnectionScript): void;
  /** Stops listening and cuts every open connection. */
  close(): Promise<void>;
}

/** Exchange Online's reply texts, for rules. */
export const EXCHANGE = {
  imapAuthFailed: 'NO AUTHENTICATE failed.',
  imapNotConnected: 'BAD User is authenticated but not connected.',
  imapTokenExpired: '* BYE Session invalidated - AccessTokenExpired',
  throttled: (ms: number) => `NO Request is throttled. Suggested Backoff Time: ${ms} milliseconds`,
  pop3AuthFailed: '-ERR Authentication failure: unknown user name or bad password.',
} as const;

const MAX_LINE = 64 * 1024;
const CRLF = Buffer.from('\r\n');

class Stop extends Error {}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function write(dst: Writable, data: Buffer): Promise<void> {
  if (data.length === 0) return;
  if ((dst as Socket).destroyed) throw new Stop();
  if (dst.write(data)) return;
  await new Promise<void>((resolve) => {
    const done = () => {
      dst.off('drain', done);
      dst.off('close', done);
      resolve();
    };
    dst.on('drain', done);
    dst.on('close', done);
  });
}

/**
 * Forwards src to dst, calling onLine for each line outside of message data.
 * `literalAfter` says whether a line announces an IMAP literal (its byte count).
 */
async function pumpLines(
  src: Readable,
  onLine: (text: string, raw: Buffer) => Promise<void>,
  passRaw: (data: Buffer) => Promise<void>,
  literalAfter: (text: string) => number,
  rawMode: (text: string) => boolean,
): Promise<void> {
  let pending: Buffer[] = [];
  let pendingLen = 0;
  let literal = 0;
  let longLine = false;
  for await (const chunk of src as AsyncIterable<Buffer>) {
    let off = 0;
    while (off < chunk.length) {
      if (literal > 0) {
        const n = Math.min(literal, chunk.length - off);
        await passRaw(chunk.subarray(off, off + n));
        literal -= n;
        off += n;
        continue;
      }
      const nl = chunk.indexOf(10, off);
      if (nl < 0) {
        const rest = chunk.subarray(off);
        if (longLine) await passRaw(rest);
        else {
          pending.push(rest);
          pendingLen += rest.length;
          // A line this long is message data, not a reply: pass it through unread.
          if (pendingLen > MAX_LINE) {
            await passRaw(Buffer.concat(pending));
            pending = [];
            pendingLen = 0;
            longLine = true;
          }
        }
        break;
      }
      const piece = chunk.subarray(off, nl + 1);
      off = nl + 1;
      if (longLine) {
        await passRaw(piece);
        longLine = false;
        continue;
      }
      const raw = pending.length ? Buffer.concat([...pending, piece]) : piece;
      pending = [];
      pendingLen = 0;
      const text = raw.toString('latin1').replace(/\r?\n$/, '');
      if (rawMode(text)) await passRaw(raw);
      else {
        literal = literalAfter(text);
        await onLine(text, raw);
      }
    }
  }
}

/**
 * Starts the proxy on a free 127.0.0.1 port.
 *
 * @example
 * ```ts
 * const proxy = await startFaultProxy({ targetPort: dovecot.imapPort, cert, key, ca, protocol: 'imap' });
 * // Exchange's wording for a refused token:
 * proxy.next({ replies: [{ match: /^(\S+) NO \[AUTHENTICATIONFAILED\].*$/, replace: `$1 ${EXCHANGE.imapAuthFailed}` }] });
 * // The session dies on the 4th command, as when the token expires:
 * proxy.next({ commands: [{ match: /^/, nth: 4, reply: [EXCHANGE.imapTokenExpired], close: true }] });
 * // connect the client to proxy.port ...
 * await proxy.close();
 * ```
 */
export async function startFaultProxy(o: FaultProxyOptions): Promise<FaultProxy> {
  const queue: ConnectionScript[] = [];
  let defaultScript: ConnectionScript = o.defaultScript ?? {};
  let connections = 0;
  const open = new Set<Socket>();

  const secureContext = tls.createSecureContext({ cert: o.cert, key: o.key, minVersion: 'TLSv1.2' });

  // TLS is layered by hand so that refusal happens before the handshake, as
  // with a dead or overloaded server, and each connection keeps its script.
  const server = net.createServer((raw) => {
    connections++;
    const script = queue.shift() ?? defaultScript;
    raw.on('error', () => {});
    if (script.refuse) {
      raw.resetAndDestroy();
      return;
    }
    open.add(raw);
    raw.once('close', () => open.delete(raw));
    const client = new tls.TLSSocket(raw, { isServer: true, secureContext });
    client.on('error', () => raw.destroy());
    client.once('secure', () => void handle(client, script));
  });

  async function handle(client: tls.TLSSocket, script: ConnectionScript): Promise<void> {
    client.on('error', () => {});
    open.add(client);
    client.once('close', () => open.delete(client));
    client.pause();
    if (script.connectDelayMs) await sleep(script.connectDelayMs);
    const upstream = tls.connect({ host: o.targetHost ?? '127.0.0.1', port: o.targetPort, ca: o.ca, servername: 'localhost' });
    upstream.on('error', () => {});
    open.add(upstream);
    upstream.once('close', () => open.delete(upstream));
    try {
      await once(upstream, 'secureConnect');
    } catch {
      client.destroy();
      return;
    }
    if (client.destroyed) {
      upstream.destroy();
      return;
    }
    const shutdown = () => {
      client.destroy();
      upstream.destroy();
    };
    client.once('close', () => upstream.destroy());
    upstream.once('close', () => {
      if (!client.destroyed) client.end();
    });

    const replies = (script.replies ?? []).map((r) => ({ ...r, left: r.times ?? Infinity }));
    const commands = (script.commands ?? []).map((r) => ({ ...r, seen: 0, left: r.times ?? Infinity }));
    const imap = o.protocol === 'imap';
    const literalOf = (text: string) => {
      if (!imap) return 0;
      const m = /\{(\d+)\+?\}$/.exec(text);
      return m ? Number(m[1]) : 0;
    };

    // POP3: the server's multi-line replies (message data) must not be matched by rules.
    const pop3Pending: boolean[] = [];
    let pop3Data = false;
    const pop3MultiLine = (cmd: string) => /^(RETR|TOP|CAPA)\b/i.test(cmd) || /^(LIST|UIDL)\s*$/i.test(cmd);

    // server → client
    let sent = 0;
    const toClient = async (data: Buffer) => {
      if (script.dropAfterBytes !== undefined && sent + data.length >= script.dropAfterBytes) {
        await write(client, data.subarray(0, script.dropAfterBytes - sent));
        sent = script.dropAfterBytes;
        shutdown();
        throw new Stop();
      }
      sent += data.length;
      await write(client, data);
    };
    const serverToClient = async () => {
      if (replies.length === 0 && script.dropAfterBytes === undefined) {
        upstream.pipe(client);
        return;
      }
      if (replies.length === 0) {
        for await (const chunk of upstream as AsyncIterable<Buffer>) await toClient(chunk);
        return;
      }
      await pumpLines(
        upstream,
        async (text, raw) => {
          if (!imap) {
            if (/^(\+OK|-ERR)/.test(text)) {
              const multi = pop3Pending.shift() ?? false;
              if (multi && text.startsWith('+OK')) pop3Data = true;
            }
          }
          const rule = replies.find((r) => r.left > 0 && r.match.test(text));
          if (!rule) return toClient(raw);
          rule.left--;
          if (rule.delayMs) await sleep(rule.delayMs);
          let out: string | null = text;
          if (typeof rule.replace === 'string') out = text.replace(rule.match, rule.replace);
          else if (typeof rule.replace === 'function') out = rule.replace(text);
          if (out !== null) await toClient(out === text ? raw : Buffer.concat([Buffer.from(out, 'latin1'), CRLF]));
          for (const extra of rule.append ?? []) await toClient(Buffer.concat([Buffer.from(extra, 'latin1'), CRLF]));
          if (rule.close) {
            client.end();
            upstream.destroy();
            throw new Stop();
          }
        },
        toClient,
        literalOf,
        (text) => {
          if (!pop3Data) return false;
          if (text === '.') pop3Data = false; // the end of a multi-line reply
          return true;
        },
      );
    };

    // client → server
    const clientToServer = async () => {
      if (commands.length === 0 && (imap || replies.length === 0)) {
        client.pipe(upstream);
        client.resume();
        return;
      }
      client.resume();
      await pumpLines(
        client,
        async (text, raw) => {
          if (!imap && /^[A-Za-z]{3,4}(?: |$)/.test(text)) pop3Pending.push(pop3MultiLine(text));
          let rule: (typeof commands)[number] | undefined;
          for (const r of commands) {
            if (r.left <= 0 || !r.match.test(text)) continue;
            r.seen++;
            if (!rule && r.seen >= (r.nth ?? 1)) rule = r;
          }
          if (!rule) return write(upstream, raw);
          rule.left--;
          if (rule.delayMs) await sleep(rule.delayMs);
          if (!rule.reply && !rule.close) return write(upstream, raw);
          const tag = /^(\S+)/.exec(text)?.[1] ?? '*';
          for (const line of rule.reply ?? []) await write(client, Buffer.from(line.replaceAll('{tag}', tag) + '\r\n', 'latin1'));
          if (rule.close) {
            client.end();
            upstream.destroy();
            throw new Stop();
          }
        },
        (d) => write(upstream, d),
        literalOf,
        () => false,
      );
    };

    const run = async (f: () => Promise<void>) => {
      try {
        await f();
      } catch (e) {
        if (!(e instanceof Stop)) shutdown();
      }
    };
    await Promise.all([run(serverToClient), run(clientToServer)]);
  }

  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('fault proxy: no port');

  return {
    port: address.port,
    get connections() {
      return connections;
    },
    next(script) {
      queue.push(script);
    },
    setDefault(script) {
      defaultScript = script;
    },
    async close() {
      const closed = new Promise<void>((r) => server.close(() => r()));
      for (const s of open) s.destroy();
      await closed;
    },
  };
}
