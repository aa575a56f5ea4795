/**
 * A small, ETag-guarded key/value store for per-mailbox state (IMAP
 * checkpoints, POP3 delivered-UIDL sets, poll status). Backed by Azure Table
 * storage in `shared/checkpoint/`. Values are plain JSON objects whose
 * properties are strings, numbers, booleans or Uint8Array (one Table entity:
 * at most 1 MB, each property at most 64 KB).
 */
export interface StateRecord<T> {
  readonly value: T;
  /** Opaque version; pass it back to `put` for a conditional write. */
  readonly etag: string;
}

export type StateValue = Record<string, string | number | boolean | Uint8Array | null>;

export interface StateStore {
  get<T extends StateValue>(partition: string, key: string): Promise<StateRecord<T> | undefined>;
  /**
   * Writes `value`. With `etag` the write succeeds only if the record is
   * unchanged since it was read (else a PostroomError `CheckpointConflict`);
   * with `etag: null` only if the record does not exist yet.
   * Returns the new etag.
   */
  put<T extends StateValue>(partition: string, key: string, value: T, etag?: string | null): Promise<string>;
  delete(partition: string, key: string): Promise<void>;
}
