import type { Readable } from 'node:stream';
import type { TokenGetter } from './auth/token.js';
import type { MailboxConfig } from './config/index.js';
import type { Logger } from './logger.js';
import type { StateStore } from './state.js';

/** Options of {@link MailSource.open}. */
export interface OpenSourceOptions {
  /** Aborts the connection attempt, and later the session's pending commands (the poll's hard deadline). */
  signal?: AbortSignal;
  /** Aborts the connection attempt only (the poll's soft deadline: a session not open by then is not worth opening). */
  openBy?: AbortSignal;
  /** How long a server back-off may be waited (the poll's time left); a longer one ends the session as `Throttled` at once. */
  backoffBudgetMs?: () => number;
}

/** The signal that bounds a connection attempt: the session's own, ended earlier by `openBy`. */
export function connectSignal(options: OpenSourceOptions): AbortSignal | undefined {
  const { signal, openBy } = options;
  return signal && openBy ? AbortSignal.any([signal, openBy]) : (openBy ?? signal);
}

/**
 * The seam between the pipeline and a mail protocol. IMAP and POP3 both
 * implement it; the pipeline (fetch -> parse -> blob/queue -> acknowledge)
 * knows nothing else about them.
 *
 * Order of calls for one poll:
 * `open()` -> for each batch of `batches()`: deliver every message durably,
 * then `acknowledge(batch)` -> `close()`. On any failure the pipeline calls
 * `abort()` instead of `close()`, which must commit nothing further (a POP3
 * session dropped before QUIT deletes nothing).
 */
export interface MailSource {
  /** Which protocol it speaks. */
  readonly protocol: 'imap' | 'pop3';
  /** Connects, authenticates and selects; reads the source's saved state. */
  open(options?: OpenSourceOptions): Promise<MailSession>;
}

/** One open session on a mailbox folder: what it holds and how to acknowledge it. */
export interface MailSession {
  /**
   * What scopes the message ids: the folder and its validity
   * (IMAP: the UIDVALIDITY; POP3: the literal 'pop3').
   * Part of every idempotency key.
   */
  readonly folder: string;
  /** IMAP: the folder's UIDVALIDITY as a decimal string; POP3: the literal `pop3`. */
  readonly validity: string;
  /** Set when the source had to resync (e.g. UIDVALIDITY changed); carried on every message delivered. */
  readonly resync?: { readonly reason: string; readonly previousValidity?: string };
  /** What the server said about the folder when it was opened (the doctor prints it). */
  readonly stats?: FolderStats;
  /** Undelivered messages, oldest first, in bounded batches. */
  batches(options?: { signal?: AbortSignal }): AsyncIterable<SourceMessage[]>;
  /**
   * Called only after every message of `messages` is durably in the sink:
   * advances the saved state, then applies the mailbox's post-action.
   * The order, so that every post-action happens eventually: record the
   * messages as delivered with their post-action pending (state store), apply
   * it (mailbox), clear the pending mark. A session that dies in between
   * leaves the mark; the next `open()` applies it first.
   */
  acknowledge(messages: readonly SourceMessage[], options?: { signal?: AbortSignal }): Promise<void>;
  /**
   * Records `messages` (durably in the sink) as delivered with their
   * post-action pending, touching only the state store: it works after the
   * connection is gone, so a dropped session never re-delivers what was
   * already written. The next session's `open()` applies the post-action.
   */
  checkpoint(messages: readonly SourceMessage[]): Promise<void>;
  /** Ends the session normally (IMAP LOGOUT; POP3 QUIT, which commits DELEs). */
  close(): Promise<void>;
  /** Drops the connection, committing nothing further. Never throws. */
  abort(): void;
}

/** A folder's status at open. */
export interface FolderStats {
  /** Messages in the folder (IMAP EXISTS; POP3 the maildrop's count). */
  readonly messages: number;
  /** IMAP UIDNEXT, when the server sent it. */
  readonly uidNext?: number;
  /** Messages this source has not delivered yet (POP3: by UIDL; IMAP: not counted, undefined). */
  readonly pending?: number;
}

/** One message a session offers, opened on demand. */
export interface SourceMessage {
  /** IMAP UID (decimal) or POP3 UIDL. Unique within (folder, validity). */
  readonly id: string;
  /** Size in octets as the server reports it, when known. */
  readonly size?: number;
  /** IMAP INTERNALDATE, when known. */
  readonly receivedAt?: Date;
  /**
   * The raw RFC 5322 message as a byte stream. Call once, and consume or
   * destroy the stream. Several messages may be opened at once (the
   * pipeline delivers up to `concurrency` in parallel); a source whose
   * connection carries one transfer at a time queues the opens itself.
   */
  open(options?: { signal?: AbortSignal }): Promise<Readable>;
}

/** What every protocol's `createSource` is given besides the mailbox (built by the runtime). */
export interface SourceDeps {
  /** The app's token getter, already checked for the protocol's role. */
  readonly getToken: TokenGetter;
  /** Checkpoints and delivered-id sets. */
  readonly state: StateStore;
  /** Logger of the poll the source serves. */
  readonly logger: Logger;
  /** Extra CA (PEM) added to the default trust; undefined: the default trust only. */
  readonly ca?: string;
  /** Messages per batch. */
  readonly batchSize: number;
  /** At most this many messages per poll; the rest wait for the next poll. */
  readonly maxMessages: number;
  /** Timeout for TCP connect, TLS handshake and greeting. */
  readonly connectTimeoutMs: number;
  /** Counts every protocol command sent (benchmarks: idle-poll cost). */
  readonly onCommand?: (command: string) => void;
}

/** The one factory shape each protocol folder's entry exports (`imap/index.ts`, `pop3/index.ts`). */
export type CreateSource = (mailbox: MailboxConfig, deps: SourceDeps) => MailSource;
