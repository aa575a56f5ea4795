import { createHash } from 'node:crypto';
import { PostroomError } from '../errors.js';
import type { StateValue } from '../state.js';

/**
 * The set of UIDLs already delivered, stored compactly in one Azure Table
 * entity (at most 1 MiB, each binary property at most 64 KiB): 8-byte
 * truncated SHA-256 hashes, sorted, packed into `h0`, `h1`, ... properties.
 * UIDLs can be 70 characters; hashes make 50,000 of them fit in 400 KB.
 * Collisions (p ~ n^2 / 2^65, ~7e-11 for 50,000) would only skip a message.
 */

export const UIDL_HASH_BYTES = 8;
/** 64,000 bytes per property: below the 64 KiB binary property limit. */
export const HASHES_PER_PROPERTY = 8_000;
/** 15 x 64,000 bytes leaves room under the 1 MiB entity limit for names and keys. */
export const MAX_HASH_PROPERTIES = 15;
export const MAX_TRACKED_UIDLS = HASHES_PER_PROPERTY * MAX_HASH_PROPERTIES;
const FORMAT = 'sha256-64-sorted';

/** The 8-byte truncated SHA-256 of a UIDL, as an unsigned 64-bit integer. */
export function uidlHash(uid: string): bigint {
  return createHash('sha256').update(uid, 'utf8').digest().readBigUInt64BE(0);
}

/** The state record: `{ format, count, h0, h1, ... }`. */
export interface UidlSetRecord extends StateValue {
  /** Encoding of the hash properties (`sha256-64-sorted`: 8-byte hashes, sorted); any other value is refused as a malformed record. */
  format: string;
  /** Number of UIDL hashes stored across the `h0`, `h1`, ... properties (at most MAX_TRACKED_UIDLS). */
  count: number;
}

/** Packs hashes (any order, duplicates dropped) into a state record. */
export function packUidlHashes(hashes: Iterable<bigint>): UidlSetRecord {
  const sorted = [...new Set(hashes)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  if (sorted.length > MAX_TRACKED_UIDLS) {
    throw new PostroomError(
      'ConfigInvalid',
      `the mailbox keeps ${sorted.length} delivered messages on the POP3 server, more than the ${MAX_TRACKED_UIDLS} the state can track; use the post-action 'delete'`,
    );
  }
  const record: UidlSetRecord = { format: FORMAT, count: sorted.length };
  for (let p = 0; p * HASHES_PER_PROPERTY < sorted.length; p++) {
    const slice = sorted.slice(p * HASHES_PER_PROPERTY, (p + 1) * HASHES_PER_PROPERTY);
    const buf = Buffer.alloc(slice.length * UIDL_HASH_BYTES);
    slice.forEach((h, i) => buf.writeBigUInt64BE(h, i * UIDL_HASH_BYTES));
    record[`h${p}`] = new Uint8Array(buf.buffer, buf.byteOffset, buf.length);
  }
  return record;
}

function corrupt(detail: string): PostroomError {
  return new PostroomError('ConfigInvalid', `the saved POP3 delivered-message set is malformed (${detail}); delete the state record to re-deliver what is on the server`);
}

/** Unpacks a state record; properties beyond `count` (left by an older, larger write) are ignored. */
export function unpackUidlHashes(value: StateValue): Set<bigint> {
  if (value['format'] !== FORMAT) throw corrupt(`format ${JSON.stringify(value['format'])}`);
  const count = value['count'];
  if (typeof count !== 'number' || !Number.isSafeInteger(count) || count < 0 || count > MAX_TRACKED_UIDLS) throw corrupt('count');
  const out = new Set<bigint>();
  for (let p = 0; p * HASHES_PER_PROPERTY < count; p++) {
    const raw = value[`h${p}`];
    const expected = Math.min(HASHES_PER_PROPERTY, count - p * HASHES_PER_PROPERTY) * UIDL_HASH_BYTES;
    if (!(raw instanceof Uint8Array) || raw.length !== expected) throw corrupt(`h${p}`);
    const buf = Buffer.from(raw.buffer, raw.byteOffset, raw.length);
    for (let i = 0; i < raw.length; i += UIDL_HASH_BYTES) out.add(buf.readBigUInt64BE(i));
  }
  return out;
}

/** The hashes of `delivered` still on the server: what the next write keeps. */
export function pruneUidlHashes(delivered: ReadonlySet<bigint>, onServer: ReadonlySet<bigint>): Set<bigint> {
  const kept = new Set<bigint>();
  for (const h of delivered) if (onServer.has(h)) kept.add(h);
  return kept;
}
