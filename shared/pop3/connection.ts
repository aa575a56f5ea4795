import { isIP, connect as netConnect, type Socket } from 'node:net';
import { Readable } from 'node:stream';
import { connect as tlsConnect, type ConnectionOptions, type SecureContext, type TLSSocket } from 'node:tls';
import { droppedAfterLogin } from '../diagnose/connection.js';
import { PostroomError } from '../errors.js';
import { silentLogger, type Logger } from '../logger.js';
import { errorFromSocket } from './errors.js';
import { Pop3ReplyParser, type ParserEvent, type Pop3Reply, type Pop3StatusLine, type ReplyKind } from './parser.js';

/** Options of `Pop3Client.connect`. */
export interface Pop3ConnectOptions {
  /** POP3 server host name, or an IP address (then `servername` or the certificate must name the IP). */
  host: string;
  /** TCP port: usually 995 (implicit TLS) or 110 (STARTTLS). */
  port: number;
  /** `implicit`: TLS from the first byte (port 995). `starttls`: plain, then STLS (RFC 2595). */
  tls: 'implicit' | 'starttls';
  /** The CA certificates to trust; they replace Node's default. Ignored when `secureContext` is given (Postroom's sources pass that: shared/tls.ts). */
  ca?: string | Buffer | readonly string[];
  /** A ready TLS context holding the trusted CAs (shared/tls.ts `trustContext`: built once per CA and process); takes the place of `ca`. */
  secureContext?: SecureContext;
  /** SNI and certificate name; defaults to `host` when it is a name. */
  servername?: string;
  /** Lowest TLS version; Exchange Online requires TLS 1.2 or later. */
  minVersion?: 'TLSv1.2' | 'TLSv1.3';
  /** Budget for TCP + TLS + greeting (+ STLS). Default 30 s. */
  connectTimeoutMs?: number;
  /** Longest silence while a reply is awaited. Default 60 s. */
  commandTimeoutMs?: number;
  /** Aborts connecting (each command takes its own signal). */
  signal?: AbortSignal;
  /** The mailbox address: the `subject` of errors. */
  mailbox?: string;
  /** Gets protocol-level debug lines (commands with secrets replaced); default: silent. */
  logger?: Logger;
  /** Longest line outside a RETR body. Default 64 KiB. */
  maxLineBytes?: number;
  /** Largest buffered multi-line reply (UIDL, LIST, TOP, CAPA). Default 16 MiB. */
  maxBufferedBytes?: number;
}

/** Options every command takes. */
export interface Pop3CommandOptions {
  /** Aborts the command; the connection is then unusable and is closed. */
  signal?: AbortSignal;
  /** Overrides the connection's command timeout for this command. */
  timeoutMs?: number;
}

/** One locked exchange: the AUTH dialogue needs several round trips with nothing in between. */
export interface Pop3Exchange {
  /**
   * Sends `line` (CRLF added) and reads a reply of the given shape.
   * `logAs` replaces the line in logs and errors (secrets).
   */
  send(line: string, kind: Exclude<ReplyKind, 'stream'>, logAs?: string): Promise<Pop3Reply>;
}

type Op =
  | { kind: 'reply'; resolve: (r: Pop3Reply) => void; reject: (e: Error) => void }
  | {
      kind: 'stream';
      resolveStatus: (s: Pop3StatusLine, stream: Readable | undefined) => void;
      reject: (e: Error) => void;
      stream?: Readable;
      ended: boolean;
      /** Called once when the body has ended or the connection failed. */
      onDone?: () => void;
    };

const DEFAULT_CONNECT_TIMEOUT_MS = 30_000;
const DEFAULT_COMMAND_TIMEOUT_MS = 60_000;
const STREAM_HIGH_WATER_MARK = 64 * 1024;

function aborted(signal: AbortSignal | undefined, subject: string | undefined, what: string): PostroomError {
  return new PostroomError('Aborted', what, { subject, cause: signal?.reason });
}

function checkOptions(o: Pop3ConnectOptions): void {
  if (!o || typeof o.host !== 'string' || o.host === '') throw new TypeError('host must be a non-empty string');
  if (!Number.isInteger(o.port) || o.port < 1 || o.port > 65535) throw new TypeError('port must be an integer 1-65535');
  if (o.tls !== 'implicit' && o.tls !== 'starttls') throw new TypeError("tls must be 'implicit' or 'starttls'");
  for (const k of ['connectTimeoutMs', 'commandTimeoutMs', 'maxLineBytes', 'maxBufferedBytes'] as const) {
    const v = o[k];
    if (v !== undefined && (!Number.isFinite(v) || v <= 0)) throw new TypeError(`${k} must be a positive number`);
  }
}

/**
 * A POP3 connection: socket, TLS, the reply parser, the command lock,
 * timeouts and aborts. Commands (in `commands/`) build on `exchange` and
 * `stream`. Any transport failure, timeout or abort closes it for good.
 */
export class Pop3Connection {
  readonly subject: string | undefined;
  private socket: Socket | TLSSocket;
  private readonly parser: Pop3ReplyParser;
  private readonly log: Logger;
  private readonly tlsOptions: ConnectionOptions;
  private readonly commandTimeoutMs: number;
  private op: Op | undefined;
  private tail: Promise<void> = Promise.resolve();
  private failure: PostroomError | undefined;
  private closing = false;
  /** Set once logged in: a broken connection is then a dropped session (ConnectionLost), not an unreachable server. */
  private established = false;
  private timer: NodeJS.Timeout | undefined;
  private timerMs = 0;
  private backpressured = false;
  private streaming = false;
  private readonly onData = (chunk: Buffer) => this.receive(chunk);
  private readonly onError = (e: Error) => this.fail(errorFromSocket(e, this.subject, 'connection'));
  private readonly onClose = () => {
    if (!this.closing) this.fail(new PostroomError('ConnectionFailed', 'the server closed the connection', { subject: this.subject }));
  };

  private constructor(socket: Socket | TLSSocket, o: Pop3ConnectOptions, tlsOptions: ConnectionOptions) {
    this.socket = socket;
    this.subject = o.mailbox;
    this.log = o.logger ?? silentLogger;
    this.tlsOptions = tlsOptions;
    this.commandTimeoutMs = o.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
    this.parser = new Pop3ReplyParser({ maxLineBytes: o.maxLineBytes, maxBufferedBytes: o.maxBufferedBytes, subject: o.mailbox });
    this.attach(socket);
  }

  /** Connects, negotiates TLS (implicit or STLS) and reads the greeting. */
  static async open(o: Pop3ConnectOptions): Promise<{ connection: Pop3Connection; greeting: Pop3StatusLine }> {
    checkOptions(o);
    const subject = o.mailbox;
    const signal = o.signal;
    if (signal?.aborted) throw aborted(signal, subject, 'connect aborted');
    const tlsOptions = connectionTlsOptions(o);
    const log = o.logger ?? silentLogger;
    const socket: Socket | TLSSocket = o.tls === 'implicit' ? tlsConnect(tlsOptions) : netConnect({ host: o.host, port: o.port });
    let conn: Pop3Connection | undefined;
    let deadlineHit: PostroomError | undefined;
    const timeoutMs = o.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    const deadline = setTimeout(() => {
      deadlineHit = new PostroomError('Timeout', `connecting to ${o.host}:${o.port} took longer than ${timeoutMs} ms`, { subject });
      if (conn) conn.fail(deadlineHit);
      else socket.destroy(deadlineHit);
    }, timeoutMs);
    const onAbort = () => {
      const e = aborted(signal, subject, 'connect aborted');
      if (conn) conn.fail(e);
      else socket.destroy(e);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      await socketReady(socket, o);
      conn = new Pop3Connection(socket, o, tlsOptions);
      log.debug('pop3 connected', { host: o.host, port: o.port, tls: o.tls });
      // The greeting and STLS fall under the connect budget, not the command timeout.
      const greeting = await conn.readGreeting(timeoutMs);
      if (o.tls === 'starttls') await conn.startTls(timeoutMs);
      return { connection: conn, greeting };
    } catch (e) {
      const err = deadlineHit ?? (e instanceof PostroomError ? e : errorFromSocket(e, subject, 'connect'));
      if (conn) conn.fail(err);
      else socket.destroy();
      throw err;
    } finally {
      clearTimeout(deadline);
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /** Whether the connection can take commands. */
  get usable(): boolean {
    return this.failure === undefined && !this.closing;
  }

  private attach(socket: Socket | TLSSocket): void {
    socket.on('data', this.onData);
    socket.on('error', this.onError);
    socket.on('close', this.onClose);
  }

  private detach(socket: Socket | TLSSocket): void {
    socket.off('data', this.onData);
    socket.off('error', this.onError);
    socket.off('close', this.onClose);
  }

  private readGreeting(timeoutMs: number): Promise<Pop3StatusLine> {
    return this.locked({ timeoutMs }, 'greeting', async () => {
      const reply = await this.await('single', undefined);
      if (reply.status !== '+OK') {
        throw new PostroomError('CommandFailed', `greeting: ${reply.text}`, { subject: this.subject, responseText: reply.text });
      }
      return reply;
    });
  }

  /** STLS (RFC 2595), then a TLS handshake on the same socket. */
  private async startTls(timeoutMs: number): Promise<void> {
    await this.locked({ timeoutMs }, 'STLS', async () => {
      const reply = await this.await('single', 'STLS');
      if (reply.status !== '+OK') {
        throw new PostroomError('TlsFailed', `the server refused STLS: ${reply.text}`, { subject: this.subject, responseText: reply.text });
      }
      // Bytes after the STLS reply would be plaintext injected ahead of the handshake.
      if (this.parser.hasPending) throw new PostroomError('ProtocolError', 'data received after the STLS reply', { subject: this.subject });
      const plain = this.socket;
      this.detach(plain);
      const secure = tlsConnect({ ...this.tlsOptions, socket: plain });
      this.socket = secure;
      secure.on('error', () => {}); // reported through the promise below, then by fail()
      try {
        await new Promise<void>((resolve, reject) => {
          const onClose = () => reject(new Error('the connection closed during the TLS handshake'));
          secure.once('secureConnect', () => {
            secure.off('error', reject);
            secure.off('close', onClose);
            resolve();
          });
          secure.once('error', reject);
          secure.once('close', onClose);
        });
      } catch (e) {
        plain.destroy();
        throw errorFromSocket(e, this.subject, 'STLS handshake');
      }
      this.attach(secure);
    });
  }

  /** Runs `fn` holding the command lock; `signal` aborts the connection. */
  private async locked<T>(opts: Pop3CommandOptions, what: string, fn: () => Promise<T>, keepUntil?: (release: () => void) => boolean): Promise<T> {
    // A command issued while a RETR body streams waits for the lock (the body's end), so
    // several messages can be opened at once; only a dead connection fails at once.
    this.assertOpen();
    const signal = opts.signal;
    if (signal?.aborted) throw aborted(signal, this.subject, `${what} aborted`);
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const prev = this.tail;
    this.tail = prev.then(() => mine);
    let onAbort: (() => void) | undefined;
    let released = false;
    const releaseOnce = () => {
      if (released) return;
      released = true;
      if (onAbort) signal?.removeEventListener('abort', onAbort);
      release();
    };
    const abortPromise = new Promise<never>((_, reject) => {
      onAbort = () => {
        const e = aborted(signal, this.subject, `${what} aborted`);
        reject(e);
        this.fail(e);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
    });
    abortPromise.catch(() => {});
    let handedOff = false;
    try {
      await Promise.race([prev, abortPromise]);
      this.assertUsable();
      this.timerMs = opts.timeoutMs ?? this.commandTimeoutMs;
      const result = await Promise.race([fn(), abortPromise]);
      handedOff = keepUntil ? keepUntil(releaseOnce) : false;
      return result;
    } finally {
      if (!handedOff) {
        this.stopTimer();
        releaseOnce();
      }
    }
  }

  /** Runs a locked exchange of one or more commands. */
  exchange<T>(what: string, opts: Pop3CommandOptions, fn: (io: Pop3Exchange) => Promise<T>): Promise<T> {
    return this.locked(opts, what, () => fn({ send: (line, kind, logAs) => this.roundTrip(line, kind, logAs) }));
  }

  /**
   * Sends `line` and returns its body as a byte stream when the reply is
   * `+OK`. The lock is held until the body's end; destroying the stream
   * before that closes the connection (the rest of the body cannot be
   * skipped without reading it).
   */
  stream(line: string, opts: Pop3CommandOptions): Promise<{ status: Pop3StatusLine; body?: Readable }> {
    let streamOp: Extract<Op, { kind: 'stream' }> | undefined;
    return this.locked(
      opts,
      line.split(' ')[0] ?? line,
      () =>
        new Promise<{ status: Pop3StatusLine; body?: Readable }>((resolve, reject) => {
          streamOp = {
            kind: 'stream',
            ended: false,
            reject,
            resolveStatus: (status, body) => resolve({ status, body }),
          };
          this.send(line, streamOp, 'stream');
        }),
      (release) => {
        const op = streamOp;
        if (!op?.stream || op.ended || this.failure) return false;
        // The body is still arriving: keep the lock (and the abort listener) until it ends.
        op.onDone = release;
        return true;
      },
    );
  }

  private roundTrip(line: string, kind: Exclude<ReplyKind, 'stream'>, logAs?: string): Promise<Pop3Reply> {
    return this.await(kind, line, logAs);
  }

  private await(kind: Exclude<ReplyKind, 'stream'>, line: string | undefined, logAs?: string): Promise<Pop3Reply> {
    this.assertUsable();
    return new Promise<Pop3Reply>((resolve, reject) => {
      const op: Op = { kind: 'reply', resolve, reject };
      if (line === undefined) this.begin(op, kind);
      else this.send(line, op, kind, logAs);
    });
  }

  private send(line: string, op: Op, kind: ReplyKind, logAs?: string): void {
    if (/[\r\n]/.test(line)) throw new TypeError('a POP3 command must not contain CR or LF');
    this.log.debug('pop3 command', { command: logAs ?? line });
    this.socket.write(line + '\r\n');
    this.begin(op, kind);
  }

  private begin(op: Op, kind: ReplyKind): void {
    this.op = op;
    this.startTimer();
    let events: ParserEvent[];
    try {
      events = this.parser.expect(kind);
    } catch (e) {
      this.fail(e instanceof PostroomError ? e : new PostroomError('ProtocolError', String(e), { subject: this.subject }));
      return;
    }
    this.dispatch(events);
  }

  private receive(chunk: Buffer): void {
    if (this.failure) return;
    if (this.op && !this.backpressured) this.startTimer();
    let events: ParserEvent[];
    try {
      events = this.parser.push(chunk);
    } catch (e) {
      this.fail(e instanceof PostroomError ? e : new PostroomError('ProtocolError', String(e), { subject: this.subject, cause: e }));
      return;
    }
    this.dispatch(events);
  }

  private dispatch(events: ParserEvent[]): void {
    for (const ev of events) {
      const op = this.op;
      if (!op) {
        this.fail(new PostroomError('ProtocolError', 'unexpected reply', { subject: this.subject }));
        return;
      }
      if (ev.type === 'reply') {
        if (op.kind !== 'reply') continue;
        this.op = undefined;
        this.stopTimer();
        op.resolve(ev.reply);
      } else if (op.kind === 'stream') {
        if (ev.type === 'status') {
          if (ev.status.status !== '+OK') {
            this.op = undefined;
            this.stopTimer();
            op.resolveStatus(ev.status, undefined);
          } else {
            op.stream = this.createBodyStream(op);
            this.streaming = true;
            op.resolveStatus(ev.status, op.stream);
          }
        } else if (ev.type === 'data') {
          if (!op.stream!.push(ev.chunk)) this.applyBackpressure();
        } else {
          op.ended = true;
          this.op = undefined;
          this.streaming = false;
          this.stopTimer();
          this.releaseBackpressure();
          op.stream!.push(null);
          op.onDone?.();
        }
      }
    }
  }

  private createBodyStream(op: Extract<Op, { kind: 'stream' }>): Readable {
    return new Readable({
      highWaterMark: STREAM_HIGH_WATER_MARK,
      read: () => this.releaseBackpressure(),
      destroy: (err, cb) => {
        if (!op.ended && !this.failure) {
          this.fail(
            err instanceof PostroomError
              ? err
              : new PostroomError('Aborted', 'the message stream was destroyed before its end; the connection is closed', { subject: this.subject, cause: err ?? undefined }),
          );
        }
        cb(err);
      },
    });
  }

  private applyBackpressure(): void {
    if (this.backpressured) return;
    this.backpressured = true;
    // A slow consumer is not a silent server: no idle timeout while paused.
    this.stopTimer();
    this.socket.pause();
  }

  private releaseBackpressure(): void {
    if (!this.backpressured) return;
    this.backpressured = false;
    if (this.op) this.startTimer();
    if (!this.failure) this.socket.resume();
  }

  private startTimer(): void {
    this.stopTimer();
    const ms = this.timerMs || this.commandTimeoutMs;
    this.timer = setTimeout(() => {
      this.fail(new PostroomError('Timeout', `no reply from the server within ${ms} ms`, { subject: this.subject }));
    }, ms);
  }

  private stopTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private assertUsable(): void {
    if (this.streaming) throw new TypeError('a RETR stream is still open: consume or destroy it before the next command');
    this.assertOpen();
  }

  private assertOpen(): void {
    const established = this.established;
    if (this.failure) {
      throw droppedAfterLogin(new PostroomError('ConnectionFailed', 'the connection is closed', { subject: this.subject, cause: this.failure }), { established });
    }
    if (this.closing) throw new PostroomError('ConnectionFailed', 'the connection is closed', { subject: this.subject });
  }

  /** Notes a successful login (AUTH): later connection failures are reported as `ConnectionLost`. */
  markEstablished(): void {
    this.established = true;
  }

  /** Closes the connection for good after an error; the current command (or body stream) gets `err`. */
  fail(err: PostroomError): void {
    if (this.failure) return;
    err = droppedAfterLogin(err, { established: this.established });
    this.failure = err;
    this.stopTimer();
    this.streaming = false;
    this.parser.reset();
    const op = this.op;
    this.op = undefined;
    this.socket.destroy();
    if (op?.kind === 'stream' && op.stream) {
      if (!op.ended && !op.stream.destroyed) op.stream.destroy(err);
      op.onDone?.();
    } else op?.reject(err);
    this.log.debug('pop3 connection closed', { code: err.code });
  }

  /** Ends the session after QUIT's reply: a half-close, then the socket is released. */
  end(): void {
    if (this.failure || this.closing) return;
    this.closing = true;
    this.stopTimer();
    const socket = this.socket;
    socket.end();
    // The server closes after QUIT; do not let a server that does not keep us around.
    setTimeout(() => socket.destroy(), 2_000).unref();
  }

  /** Drops the socket without QUIT. Never throws. */
  destroy(): void {
    this.closing = true;
    if (!this.failure) this.fail(new PostroomError('Aborted', 'the connection was destroyed', { subject: this.subject }));
  }
}

/** The TLS options of a connection: verified, TLS 1.2+, SNI unless the host is an IP address. */
function connectionTlsOptions(o: Pop3ConnectOptions): ConnectionOptions {
  return {
    host: o.host,
    port: o.port,
    // Node refuses an IP address as SNI; the certificate is then checked against the IP.
    servername: o.servername ?? (isIP(o.host) ? undefined : o.host),
    minVersion: o.minVersion ?? 'TLSv1.2',
    rejectUnauthorized: true,
    ...(o.secureContext ? { secureContext: o.secureContext } : o.ca !== undefined ? { ca: typeof o.ca === 'string' || Buffer.isBuffer(o.ca) ? o.ca : [...o.ca] } : {}),
  };
}

/** Resolves once the socket is connected (and, for implicit TLS, the handshake is done); a socket error is a coded error. */
function socketReady(socket: Socket | TLSSocket, o: Pop3ConnectOptions): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const ready = o.tls === 'implicit' ? 'secureConnect' : 'connect';
    const onErr = (e: Error) => {
      socket.off(ready, onReady);
      socket.on('error', () => {});
      reject(e instanceof PostroomError ? e : errorFromSocket(e, o.mailbox, `connecting to ${o.host}:${o.port}`));
    };
    const onReady = () => {
      socket.off('error', onErr);
      resolve();
    };
    socket.once('error', onErr);
    socket.once(ready, onReady);
  });
}
