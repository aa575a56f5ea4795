import type { Readable } from 'node:stream';
import { authXoauth2 } from './commands/auth-xoauth2.js';
import { capa, type Pop3Capabilities } from './commands/capa.js';
import { dele } from './commands/dele.js';
import { list, listOne, type Pop3ListEntry } from './commands/list.js';
import { noop } from './commands/noop.js';
import { quit } from './commands/quit.js';
import { retr } from './commands/retr.js';
import { rset } from './commands/rset.js';
import { stat, type Pop3Stat } from './commands/stat.js';
import { top } from './commands/top.js';
import { uidl, uidlOne, type Pop3UidlEntry } from './commands/uidl.js';
import { Pop3Connection, type Pop3CommandOptions, type Pop3ConnectOptions } from './connection.js';

/**
 * A strict, streaming POP3 client (RFC 1939, 2449 CAPA, 2595 STLS, 5034 AUTH
 * with XOAUTH2). Commands run one at a time (later calls wait their turn,
 * a RETR stream's turn lasting until its body has been read or destroyed:
 * don't await another command while holding an unread body).
 * Transport errors, timeouts and aborts close the connection: connect again.
 *
 * @example
 * ```ts
 * const client = await Pop3Client.connect({ host: 'outlook.office365.com', port: 995, tls: 'implicit', mailbox });
 * try {
 *   await client.authXoauth2(mailbox, accessToken);
 *   for (const { msg, uid } of await client.uidl()) {
 *     const body = await client.retr(msg);
 *     await pipeline(body, createWriteStream(`${uid}.eml`));
 *   }
 *   await client.quit();
 * } finally {
 *   client.destroy();
 * }
 * ```
 */
export class Pop3Client {
  /** The server's greeting text (after `+OK`). */
  readonly greeting: string;
  private readonly conn: Pop3Connection;

  private constructor(conn: Pop3Connection, greeting: string) {
    this.conn = conn;
    this.greeting = greeting;
  }

  /** Connects (TLS implicit or via STLS, certificate verified) and reads the greeting. */
  static async connect(options: Pop3ConnectOptions): Promise<Pop3Client> {
    const { connection, greeting } = await Pop3Connection.open(options);
    return new Pop3Client(connection, greeting.text);
  }

  /** Whether the connection can still take commands. */
  get usable(): boolean {
    return this.conn.usable;
  }

  capa(options?: Pop3CommandOptions): Promise<Pop3Capabilities> {
    return capa(this.conn, options);
  }

  /** SASL XOAUTH2 in two steps; `AuthenticationFailed` (with the server's text) when refused. */
  async authXoauth2(user: string, accessToken: string, options?: Pop3CommandOptions): Promise<void> {
    await authXoauth2(this.conn, user, accessToken, options);
    this.conn.markEstablished();
  }

  stat(options?: Pop3CommandOptions): Promise<Pop3Stat> {
    return stat(this.conn, options);
  }

  /** Every message's unique id, in message-number order as the server lists them. */
  uidl(options?: Pop3CommandOptions): Promise<Pop3UidlEntry[]>;
  /** One message's unique id. */
  uidl(msg: number, options?: Pop3CommandOptions): Promise<Pop3UidlEntry>;
  uidl(a?: number | Pop3CommandOptions, b?: Pop3CommandOptions): Promise<Pop3UidlEntry[] | Pop3UidlEntry> {
    return typeof a === 'number' ? uidlOne(this.conn, a, b) : uidl(this.conn, a);
  }

  list(options?: Pop3CommandOptions): Promise<Pop3ListEntry[]>;
  list(msg: number, options?: Pop3CommandOptions): Promise<Pop3ListEntry>;
  list(a?: number | Pop3CommandOptions, b?: Pop3CommandOptions): Promise<Pop3ListEntry[] | Pop3ListEntry> {
    return typeof a === 'number' ? listOne(this.conn, a, b) : list(this.conn, a);
  }

  /** The header and the first `lines` body lines (buffered, capped like every multi-line reply). */
  top(msg: number, lines: number, options?: Pop3CommandOptions): Promise<Buffer> {
    return top(this.conn, msg, lines, options);
  }

  /** The whole message as a byte stream with backpressure (see `retr` in commands/retr.ts). */
  retr(msg: number, options?: Pop3CommandOptions): Promise<Readable> {
    return retr(this.conn, msg, options);
  }

  dele(msg: number, options?: Pop3CommandOptions): Promise<void> {
    return dele(this.conn, msg, options);
  }

  rset(options?: Pop3CommandOptions): Promise<void> {
    return rset(this.conn, options);
  }

  noop(options?: Pop3CommandOptions): Promise<void> {
    return noop(this.conn, options);
  }

  /** Commits DELEs and closes. */
  quit(options?: Pop3CommandOptions): Promise<void> {
    return quit(this.conn, options);
  }

  /** Drops the connection without QUIT (nothing is deleted). Never throws. */
  destroy(): void {
    this.conn.destroy();
  }
}
