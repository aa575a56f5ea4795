import { Readable } from 'node:stream';
import type { SourceMessage } from '../source.js';
import { downloadMessage } from './download.js';
import type { ImapSession } from './session.js';

/** One message's FETCH metadata. */
interface MessageMeta {
  uid: number;
  size: number;
  internalDate?: Date;
}

/** How a session's batches are cut. */
export interface ImapBatchOptions {
  /** UIDs per metadata FETCH. */
  batchSize: number;
  /** At most this many messages per poll. */
  maxMessages: number;
  /** Messages up to this size are fetched with their group; larger ones stream. */
  prefetchLimitBytes: number;
  /** Stops cutting batches (the poll's stop signal); the generator then throws the abort reason. */
  signal?: AbortSignal;
}

/** Small messages come in one FETCH per ~8 MB group: one round trip for many. */
const PREFETCH_GROUP_BYTES = 8 * 1024 * 1024;

/**
 * The undelivered messages above `lastUid`, oldest first, in batches: UID
 * SEARCH, a metadata FETCH per batch (sizes filter `maxMessageBytes`), then
 * groups whose small bodies are fetched together.
 */
export async function* imapBatches(session: ImapSession, lastUid: number, o: ImapBatchOptions): AsyncGenerator<SourceMessage[]> {
  const uids = await newUids(session, lastUid, o.maxMessages);
  for (let i = 0; i < uids.length; i += o.batchSize) {
    o.signal?.throwIfAborted();
    const wanted = skipOversized(session, await fetchMeta(session, uids.slice(i, i + o.batchSize)));
    if (wanted.length) yield* prefetchGroups(session, wanted, o.prefetchLimitBytes);
  }
}

async function newUids(session: ImapSession, lastUid: number, maxMessages: number): Promise<number[]> {
  try {
    const criteria: Record<string, unknown> = { uid: `${lastUid + 1}:*` };
    if (session.mailbox.since) criteria.since = session.mailbox.since;
    const found = await session.client.search(criteria, { uid: true });
    // "n:*" always matches the highest UID, even below n (RFC 3501 6.4.8).
    return (found || [])
      .filter((u) => u > lastUid)
      .sort((a, b) => a - b)
      .slice(0, maxMessages);
  } catch (e) {
    throw session.fail(e);
  }
}

async function fetchMeta(session: ImapSession, uids: number[]): Promise<MessageMeta[]> {
  const meta: MessageMeta[] = [];
  try {
    for (const m of await session.client.fetchAll(uids.join(','), { uid: true, size: true, internalDate: true }, { uid: true })) {
      meta.push({ uid: m.uid, size: m.size ?? 0, internalDate: m.internalDate instanceof Date ? m.internalDate : undefined });
    }
  } catch (e) {
    throw session.fail(e);
  }
  return meta.sort((a, b) => a.uid - b.uid);
}

/**
 * A size filter is the admin's choice: oversized messages are neither fetched
 * nor post-actioned (they stay in the mailbox), and each poll that passes them says so.
 */
function skipOversized(session: ImapSession, meta: MessageMeta[]): MessageMeta[] {
  const limit = session.mailbox.maxMessageBytes;
  if (!limit) return meta;
  for (const m of meta) {
    if (m.size > limit) session.logger.warn('message over maxMessageBytes not fetched', { mailbox: session.mailbox.address, uid: m.uid, size: m.size, limit });
  }
  return meta.filter((m) => m.size <= limit);
}

async function* prefetchGroups(session: ImapSession, meta: MessageMeta[], prefetchLimit: number): AsyncGenerator<SourceMessage[]> {
  let group: MessageMeta[] = [];
  let bytes = 0;
  for (const m of meta) {
    if (group.length && bytes + Math.min(m.size, prefetchLimit) > PREFETCH_GROUP_BYTES) {
      yield await fetchGroup(session, group, prefetchLimit);
      group = [];
      bytes = 0;
    }
    group.push(m);
    bytes += Math.min(m.size, prefetchLimit);
  }
  if (group.length) yield await fetchGroup(session, group, prefetchLimit);
}

async function fetchGroup(session: ImapSession, group: MessageMeta[], prefetchLimit: number): Promise<SourceMessage[]> {
  const small = group.filter((m) => m.size <= prefetchLimit);
  const sources = new Map<number, Buffer>();
  if (small.length) {
    try {
      for (const m of await session.client.fetchAll(small.map((s) => s.uid).join(','), { uid: true, source: true }, { uid: true })) {
        if (m.source) sources.set(m.uid, m.source);
      }
    } catch (e) {
      throw session.fail(e);
    }
  }
  return group.map((m) => toMessage(session, m, sources));
}

function toMessage(session: ImapSession, m: MessageMeta, sources: Map<number, Buffer>): SourceMessage {
  return {
    id: String(m.uid),
    size: m.size,
    receivedAt: m.internalDate,
    open() {
      const buf = sources.get(m.uid);
      if (!buf) return Promise.resolve(downloadMessage(session, m.uid, m.size));
      sources.delete(m.uid);
      return Promise.resolve(Readable.from([buf]));
    },
  };
}
