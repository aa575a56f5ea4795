/**
 * A small, ETag-guarded key/value store for per-mailbox state (IMAP
 * checkpoints, POP3 delivered-UIDL sets, poll status). Backed by Azure Table
 * storage in `shared/checkpoint/`. Values are plain JSON objects whose
 * properties are strings, numbers, booleans or Uint8Array (one Table entity:
 * at most 1 MB, each property at most 64 KB).
 */
export interface StateRecord<T> {
  /** The stored properties, as written (Table storage drops null properties: read them back as absent). */
  readonly value: T;
  /** Opaque version; pass it back to `put` for a conditional write. */
  readonly etag: string;
}

/** One stored record: flat properties only (strings, numbers, booleans, bytes or null), at most 1 MB in all and 64 KB each. */
export type StateValue = Record<string, string | number | boolean | Uint8Array | null>;

/** The per-mailbox state store (partition = mailbox id, key = what is kept, e.g. `imap-checkpoint`). */
export interface StateStore {
  /** The record with its ETag, or undefined when there is none. */
  get<T extends StateValue>(partition: string, key: string): Promise<StateRecord<T> | undefined>;
  /**
   * Writes `value`. With `etag` the write succeeds only if the record is
   * unchanged since it was read (else a PostroomError `CheckpointConflict`);
   * with `etag: null` only if the record does not exist yet.
   * Returns the new etag.
   */
  put<T extends StateValue>(partition: string, key: string, value: T, etag?: string | null): Promise<string>;
  /** Removes the record unconditionally; a record that does not exist is not an error. */
  delete(partition: string, key: string): Promise<void>;
}
