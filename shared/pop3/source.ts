import type { Readable } from 'node:stream';
import type { SecureContext } from 'node:tls';
import { isPostroomError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { MailboxConfig } from '../config/index.js';
import { connectSignal, type CreateSource, type MailSession, type MailSource, type SourceDeps, type SourceMessage } from '../source.js';
import { trustContext } from '../tls.js';
import type { StateStore, StateValue } from '../state.js';
import { Pop3Client } from './client.js';
import { packUidlHashes, pruneUidlHashes, uidlHash, unpackUidlHashes } from './uidl-set.js';

/** Options of `createPop3Source`: one POP3 mailbox and where its delivered-UIDL set is kept. */
export interface Pop3SourceOptions {
  /** The mailbox address; goes in XOAUTH2's `user=`. */
  mailbox: string;
  /** POP3 server host name (Exchange Online: `outlook.office365.com`); the certificate must name it. */
  host: string;
  /** POP3 server port (995 for implicit TLS, 110 for STARTTLS). */
  port: number;
  /** `implicit`: TLS from the first byte; `starttls`: plain, then STLS. */
  tls: 'implicit' | 'starttls';
  /** The CA certificates to trust (PEM); undefined: Node's default trust. Ignored when `secureContext` is given. */
  ca?: string | Buffer | readonly string[];
  /** A ready TLS context with the trusted CAs; takes the place of `ca`. `createSource` passes the shared one (shared/tls.ts `trustContext`). */
  secureContext?: SecureContext;
  /** `none`: remember delivered UIDLs; `delete`: DELE delivered messages (committed at QUIT). */
  postAction: 'none' | 'delete';
  /** Token provider; `renew: true` must bypass any cache. */
  getToken: (opts: { renew: boolean; signal?: AbortSignal }) => Promise<string>;
  /** Where the delivered-UIDL set (hashes) is kept between polls, ETag-guarded. */
  state: StateStore;
  /** Partition and key of the UIDL set's row (`createSource` uses the mailbox id and `pop3-uidls`). */
  stateKey: { partition: string; key: string };
  /** Messages per batch. Default 100. */
  batchSize?: number;
  /** When set, larger messages (by LIST size) are skipped with a warning on every poll. Default: no limit. */
  maxMessageBytes?: number;
  /** Gets the session's progress lines and skip warnings (never message content). */
  logger: Logger;
  /** Milliseconds for TCP + TLS + greeting (+ STLS) before connecting fails; default 30000. */
  connectTimeoutMs?: number;
  /** Milliseconds of server silence while a reply is awaited before the command fails; default 60000. */
  commandTimeoutMs?: number;
}

interface Entry {
  readonly msg: number;
  readonly uid: string;
  readonly size: number | undefined;
  readonly hash: bigint;
}

function checkOptions(o: Pop3SourceOptions): void {
  if (!o || typeof o.mailbox !== 'string' || o.mailbox === '') throw new TypeError('mailbox must be a non-empty string');
  if (o.postAction !== 'none' && o.postAction !== 'delete') throw new TypeError("postAction must be 'none' or 'delete'");
  if (typeof o.getToken !== 'function') throw new TypeError('getToken must be a function');
  if (!o.state || !o.stateKey?.partition || !o.stateKey?.key) throw new TypeError('state and stateKey are required');
  if (o.batchSize !== undefined && (!Number.isSafeInteger(o.batchSize) || o.batchSize < 1)) throw new TypeError('batchSize must be a positive integer');
  if (o.maxMessageBytes !== undefined && !(o.maxMessageBytes > 0)) throw new TypeError('maxMessageBytes must be positive');
}

/**
 * A `MailSource` over POP3 (Exchange Online sees the Inbox only). Message
 * ids are UIDLs. Delivered UIDLs are remembered in the state store (as
 * hashes, pruned to what is still on the server) in both modes; with
 * `delete` delivered messages are also DELEd, which the server commits only
 * at QUIT (`close()`): a session lost before that deletes nothing, and the
 * next session deletes them (first thing) instead of delivering them again.
 */
export function createPop3Source(o: Pop3SourceOptions): MailSource {
  checkOptions(o);
  return {
    protocol: 'pop3',
    async open(options = {}): Promise<MailSession> {
      const client = await connect(o, connectSignal(options));
      try {
        const maildrop = await readMaildrop(o, client, options.signal);
        return createSession(o, client, maildrop);
      } catch (e) {
        client.destroy();
        throw e;
      }
    },
  };
}

/**
 * The POP3 adapter behind the `MailSource` seam: the mailbox settings become
 * the POP3 source's own options here, in the protocol's folder.
 */
export const createSource: CreateSource = (mailbox: MailboxConfig, deps: SourceDeps): MailSource =>
  createPop3Source({
    mailbox: mailbox.address,
    host: mailbox.host,
    port: mailbox.port,
    tls: mailbox.tls,
    ...trustContext(deps.ca),
    postAction: mailbox.postAction.kind === 'delete' ? 'delete' : 'none',
    getToken: async (opts) => (await deps.getToken(opts)).token,
    maxMessageBytes: mailbox.maxMessageBytes,
    state: deps.state,
    stateKey: { partition: mailbox.id, key: 'pop3-uidls' },
    batchSize: deps.batchSize,
    logger: deps.logger,
    connectTimeoutMs: deps.connectTimeoutMs,
  });

async function connect(o: Pop3SourceOptions, signal: AbortSignal | undefined): Promise<Pop3Client> {
  for (let attempt = 0; ; attempt++) {
    const client = await Pop3Client.connect({
      host: o.host,
      port: o.port,
      tls: o.tls,
      ca: o.ca,
      secureContext: o.secureContext,
      mailbox: o.mailbox,
      logger: o.logger,
      signal,
      connectTimeoutMs: o.connectTimeoutMs,
      commandTimeoutMs: o.commandTimeoutMs,
    });
    try {
      const token = await o.getToken({ renew: attempt > 0, signal });
      await client.authXoauth2(o.mailbox, token, { signal });
      return client;
    } catch (e) {
      client.destroy();
      // A cached token may have been revoked or have expired early: one retry with a fresh one.
      if (attempt === 0 && (isPostroomError(e, 'AuthenticationFailed') || isPostroomError(e, 'SessionExpired'))) {
        o.logger.warn('pop3 authentication failed; retrying once with a renewed token', { mailbox: o.mailbox, error: e });
        continue;
      }
      throw e;
    }
  }
}

/** What a session starts from: the maildrop's entries and the delivered-UIDL set saved by earlier polls. */
interface Maildrop {
  entries: Entry[];
  delivered: Set<bigint>;
  etag: string | null;
}

async function readMaildrop(o: Pop3SourceOptions, client: Pop3Client, signal: AbortSignal | undefined): Promise<Maildrop> {
  const record = await o.state.get<StateValue>(o.stateKey.partition, o.stateKey.key);
  const uids = await client.uidl({ signal });
  const sizes = new Map((await client.list({ signal })).map((e) => [e.msg, e.size]));
  const entries = uids.map((u) => ({ msg: u.msg, uid: u.uid, size: sizes.get(u.msg), hash: uidlHash(u.uid) })).sort((a, b) => a.msg - b.msg);
  return { entries, delivered: record ? unpackUidlHashes(record.value) : new Set(), etag: record?.etag ?? null };
}

/** Entries not yet delivered and within `maxMessageBytes` (larger ones are skipped with a warning on every poll). */
function pendingEntries(o: Pop3SourceOptions, { entries, delivered }: Maildrop): Entry[] {
  const pending: Entry[] = [];
  for (const e of entries) {
    if (delivered.has(e.hash)) continue;
    if (o.maxMessageBytes !== undefined && e.size !== undefined && e.size > o.maxMessageBytes) {
      o.logger.warn('pop3 message larger than maxMessageBytes skipped', { mailbox: o.mailbox, uidl: e.uid, size: e.size, limit: o.maxMessageBytes });
      continue;
    }
    pending.push(e);
  }
  return pending;
}

function toMessage(client: Pop3Client, e: Entry): SourceMessage {
  let opened = false;
  return {
    id: e.uid,
    ...(e.size !== undefined ? { size: e.size } : {}),
    async open(opts = {}): Promise<Readable> {
      if (opened) throw new TypeError(`message ${e.uid} was already opened`);
      opened = true;
      // One connection carries one RETR at a time (the client's command lock, held
      // until the body ends): concurrent opens queue there. The sink reads a message up
      // to 1 MiB whole as soon as it is open, so the lock passes on and its upload
      // overlaps the next RETR.
      return client.retr(e.msg, { signal: opts.signal });
    },
  };
}

function createSession(o: Pop3SourceOptions, client: Pop3Client, maildrop: Maildrop): MailSession {
  const pending = pendingEntries(o, maildrop);
  const byId = new Map(maildrop.entries.map((e) => [e.uid, e]));
  const batchSize = o.batchSize ?? 100;
  const delivered = new DeliveredSet(o, maildrop);
  let deleted = 0;
  const dele = async (entries: readonly Entry[], signal?: AbortSignal) => {
    for (const e of entries) {
      await client.dele(e.msg, { signal });
      deleted++;
    }
  };
  o.logger.info('pop3 session opened', { mailbox: o.mailbox, messages: maildrop.entries.length, pending: pending.length });
  return {
    folder: 'INBOX',
    validity: 'pop3',
    stats: { messages: maildrop.entries.length, pending: pending.length },
    async *batches(opts = {}) {
      // Delete mode: what an earlier session delivered but could not delete (it died before QUIT) goes first.
      if (o.postAction === 'delete') await dele(delivered.stillOnServer(), opts.signal);
      for (let i = 0; i < pending.length; i += batchSize) {
        opts.signal?.throwIfAborted();
        yield pending.slice(i, i + batchSize).map((e) => toMessage(client, e));
      }
    },
    async acknowledge(messages, opts = {}) {
      const acked = messages.map((m) => byId.get(m.id) ?? notFromSession(m.id));
      if (acked.length === 0) return;
      await delivered.add(acked);
      if (o.postAction === 'delete') await dele(acked, opts.signal);
    },
    async checkpoint(messages) {
      const acked = messages.map((m) => byId.get(m.id) ?? notFromSession(m.id));
      if (acked.length) await delivered.add(acked);
    },
    async close() {
      // Without DELEs to commit a dead connection loses nothing; with them, QUIT must say so.
      if (!client.usable && deleted === 0) return;
      await client.quit();
    },
    abort() {
      client.destroy();
    },
  };
}

/**
 * The delivered-UIDL set of a maildrop (hashes, pruned to what is still on
 * the server), kept in both modes: with `delete` it is what lets a new
 * session delete, instead of deliver again, what a killed one had queued.
 */
class DeliveredSet {
  #set: Set<bigint>;
  #etag: string | null;
  readonly #onServer: Set<bigint>;

  constructor(
    private readonly o: Pop3SourceOptions,
    private readonly maildrop: Maildrop,
  ) {
    this.#set = maildrop.delivered;
    this.#etag = maildrop.etag;
    this.#onServer = new Set(maildrop.entries.map((e) => e.hash));
  }

  /** Entries delivered earlier and still on the server. */
  stillOnServer(): Entry[] {
    return this.maildrop.entries.filter((e) => this.#set.has(e.hash));
  }

  async add(entries: readonly Entry[]): Promise<void> {
    const next = pruneUidlHashes(this.#set, this.#onServer);
    for (const e of entries) next.add(e.hash);
    this.#etag = await this.o.state.put(this.o.stateKey.partition, this.o.stateKey.key, packUidlHashes(next), this.#etag);
    this.#set = next;
  }
}

function notFromSession(id: string): never {
  throw new TypeError(`message ${id} is not from this session`);
}
