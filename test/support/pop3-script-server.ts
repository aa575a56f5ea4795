/**
 * A tiny in-process POP3 server for unit tests: each connection runs a
 * script (an async function reading lines and writing replies), over
 * implicit TLS, plain TCP (for STLS) or nothing at all. `maildropScript`
 * is a ready-made script serving a list of messages like a real server.
 */
import { once } from 'node:events';
import { createServer, type Server, type Socket } from 'node:net';
import { TLSSocket } from 'node:tls';

export interface TlsMaterial {
  key: string;
  cert: string;
}

export class ScriptConn {
  socket: Socket;
  /** Every line received on this connection (without CRLF). */
  readonly received: string[] = [];
  private buf = '';
  private waiters: Array<(line: string | null) => void> = [];
  private closed = false;

  constructor(socket: Socket) {
    this.socket = socket;
    this.listen(socket);
  }

  private listen(socket: Socket): void {
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => {
      this.buf += d;
      this.pump();
    });
    socket.on('close', () => {
      this.closed = true;
      this.pump();
    });
    socket.on('error', () => {});
  }

  private pump(): void {
    for (;;) {
      const w = this.waiters[0];
      if (!w) return;
      const nl = this.buf.indexOf('\r\n');
      if (nl === -1) {
        if (this.closed) {
          this.waiters.shift();
          w(null);
          continue;
        }
        return;
      }
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 2);
      this.received.push(line);
      this.waiters.shift();
      w(line);
    }
  }

  /** The next line from the client, or null when it closed the connection. */
  readLine(): Promise<string | null> {
    return new Promise((resolve) => {
      this.waiters.push(resolve);
      this.pump();
    });
  }

  /** Writes and waits for drain when the socket buffer is full. */
  async write(data: string | Buffer): Promise<void> {
    if (this.socket.destroyed) return;
    const socket = this.socket;
    if (!socket.write(typeof data === 'string' ? Buffer.from(data, 'latin1') : data)) {
      await new Promise<void>((resolve) => {
        const done = () => {
          socket.off('drain', done);
          socket.off('close', done);
          resolve();
        };
        socket.on('drain', done);
        socket.on('close', done);
      });
    }
  }

  /** Server side of STLS: after `+OK`, a TLS handshake on the same socket. */
  async upgrade(tls: TlsMaterial): Promise<void> {
    const plain = this.socket;
    plain.removeAllListeners('data');
    plain.removeAllListeners('close');
    const secure = new TLSSocket(plain, { isServer: true, key: tls.key, cert: tls.cert });
    this.socket = secure;
    this.listen(secure);
    await once(secure, 'secure');
  }

  /** Bytes received but not yet read as lines. */
  get unread(): string {
    return this.buf;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  end(): void {
    this.socket.end();
  }
}

export type Script = (conn: ScriptConn) => Promise<void>;

export interface ScriptServer {
  port: number;
  /** Connections in the order they arrived. */
  connections: ScriptConn[];
  /** Errors thrown by scripts. */
  errors: unknown[];
  close(): Promise<void>;
}

/**
 * Starts a server on 127.0.0.1:0. `scripts[i]` serves the i-th connection
 * (the last one serves any later connection). With `tls`, connections are
 * implicit TLS; otherwise plain.
 */
export async function startScriptServer(scripts: Script | Script[], options: { tls?: TlsMaterial } = {}): Promise<ScriptServer> {
  const list = Array.isArray(scripts) ? scripts : [scripts];
  const connections: ScriptConn[] = [];
  const errors: unknown[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((raw) => {
    sockets.add(raw);
    raw.on('close', () => sockets.delete(raw));
    raw.on('error', () => {});
    let socket: Socket = raw;
    if (options.tls) {
      const secure = new TLSSocket(raw, { isServer: true, key: options.tls.key, cert: options.tls.cert });
      secure.on('error', () => {});
      socket = secure;
    }
    const conn = new ScriptConn(socket);
    const script = list[Math.min(connections.length, list.length - 1)];
    connections.push(conn);
    script(conn)
      .catch((e) => errors.push(e))
      .finally(() => {
        if (!conn.isClosed) conn.end();
      });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  if (!address || typeof address === 'string') throw new Error('no address');
  return {
    port: address.port,
    connections,
    errors,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** Dot-stuffs a message for a multi-line reply and appends the terminator. */
export function dotStuff(message: Buffer | string): Buffer {
  const s = typeof message === 'string' ? message : message.toString('latin1');
  const body = s.replace(/(^|\r\n)\./g, '$1..');
  const withEnd = body.length === 0 || body.endsWith('\r\n') ? body : body + '\r\n';
  return Buffer.from(withEnd + '.\r\n', 'latin1');
}

export interface MaildropMessage {
  uid: string;
  body: Buffer | string;
}

export interface MaildropOptions {
  /** Messages in the maildrop, numbered from 1; QUIT removes the DELEd ones from this array. */
  messages: MaildropMessage[];
  /** Accepts an XOAUTH2 blob's decoded `user`/`token`; default: any. */
  accept?: (user: string, token: string) => boolean;
  /** Reply to a refused blob after the error challenge. */
  authError?: string;
  greeting?: string;
}

/** A script behaving like a small POP3 server over a shared, mutable maildrop. */
export function maildropScript(o: MaildropOptions): Script {
  return async (c) => {
    await c.write(`+OK ${o.greeting ?? 'POP3 ready'}\r\n`);
    const deleted = new Set<number>();
    const get = (arg: string | undefined) => {
      const n = Number(arg);
      return Number.isInteger(n) && n >= 1 && n <= o.messages.length && !deleted.has(n) ? n : undefined;
    };
    const size = (n: number) => Buffer.byteLength(o.messages[n - 1].body);
    for (;;) {
      const line = await c.readLine();
      if (line === null) return;
      const [cmd, a, b] = line.split(' ');
      switch (cmd?.toUpperCase()) {
        case 'CAPA':
          await c.write('+OK\r\nTOP\r\nUIDL\r\nSASL PLAIN XOAUTH2\r\nUSER\r\n.\r\n');
          break;
        case 'AUTH': {
          await c.write('+ \r\n');
          const blob = await c.readLine();
          if (blob === null) return;
          const m = /^user=([^\x01]*)\x01auth=Bearer ([^\x01]*)\x01\x01$/.exec(Buffer.from(blob, 'base64').toString('utf8'));
          if (m && (o.accept?.(m[1], m[2]) ?? true)) {
            await c.write('+OK User successfully authenticated.\r\n');
          } else {
            await c.write(`+ ${Buffer.from('{"status":"401","schemes":"bearer"}').toString('base64')}\r\n`);
            if ((await c.readLine()) === null) return;
            await c.write(`-ERR ${o.authError ?? 'Authentication failure: unknown user name or bad password.'}\r\n`);
          }
          break;
        }
        case 'STAT': {
          const live = o.messages.map((_, i) => i + 1).filter((n) => !deleted.has(n));
          await c.write(`+OK ${live.length} ${live.reduce((t, n) => t + size(n), 0)}\r\n`);
          break;
        }
        case 'UIDL':
        case 'LIST': {
          const field = (n: number) => (cmd.toUpperCase() === 'UIDL' ? o.messages[n - 1].uid : String(size(n)));
          if (a !== undefined) {
            const n = get(a);
            await c.write(n ? `+OK ${n} ${field(n)}\r\n` : '-ERR no such message\r\n');
            break;
          }
          let out = '+OK\r\n';
          for (let n = 1; n <= o.messages.length; n++) if (!deleted.has(n)) out += `${n} ${field(n)}\r\n`;
          await c.write(out + '.\r\n');
          break;
        }
        case 'RETR':
        case 'TOP': {
          const n = get(a);
          if (!n) {
            await c.write('-ERR no such message\r\n');
            break;
          }
          let body = o.messages[n - 1].body.toString();
          if (cmd.toUpperCase() === 'TOP') {
            const [head, ...rest] = body.split('\r\n\r\n');
            const lines = rest.join('\r\n\r\n').split('\r\n').slice(0, Number(b));
            body = head + '\r\n\r\n' + lines.join('\r\n');
          }
          await c.write('+OK\r\n');
          await c.write(dotStuff(body));
          break;
        }
        case 'DELE': {
          const n = get(a);
          if (n) deleted.add(n);
          await c.write(n ? '+OK deleted\r\n' : '-ERR no such message\r\n');
          break;
        }
        case 'RSET':
          deleted.clear();
          await c.write('+OK\r\n');
          break;
        case 'NOOP':
          await c.write('+OK\r\n');
          break;
        case 'QUIT': {
          const keep = o.messages.filter((_, i) => !deleted.has(i + 1));
          o.messages.splice(0, o.messages.length, ...keep);
          await c.write('+OK bye\r\n');
          c.end();
          return;
        }
        default:
          await c.write('-ERR unknown command\r\n');
      }
    }
  };
}
