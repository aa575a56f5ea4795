import { PostroomError } from '../../shared/errors.js';
import type { StateRecord, StateStore, StateValue } from '../../shared/state.js';

/**
 * An in-memory `StateStore` with the Table store's ETag semantics, for unit
 * tests. Values are deep-copied in and out so callers cannot alias them.
 */
export class MemoryStateStore implements StateStore {
  readonly records = new Map<string, { value: StateValue; etag: string }>();
  private version = 0;
  /** Number of successful `put`s. */
  writes = 0;

  private static id(partition: string, key: string): string {
    return `${partition}\u0000${key}`;
  }

  private static copy<T extends StateValue>(v: T): T {
    const out: StateValue = {};
    for (const [k, x] of Object.entries(v)) out[k] = x instanceof Uint8Array ? new Uint8Array(x) : x;
    return out as T;
  }

  async get<T extends StateValue>(partition: string, key: string): Promise<StateRecord<T> | undefined> {
    const r = this.records.get(MemoryStateStore.id(partition, key));
    return r ? { value: MemoryStateStore.copy(r.value) as T, etag: r.etag } : undefined;
  }

  async put<T extends StateValue>(partition: string, key: string, value: T, etag?: string | null): Promise<string> {
    const id = MemoryStateStore.id(partition, key);
    const current = this.records.get(id);
    if (etag === null && current) throw new PostroomError('CheckpointConflict', `${partition}/${key} already exists`);
    if (typeof etag === 'string' && current?.etag !== etag) throw new PostroomError('CheckpointConflict', `${partition}/${key} changed`);
    const next = `W/"${++this.version}"`;
    this.records.set(id, { value: MemoryStateStore.copy(value), etag: next });
    this.writes++;
    return next;
  }

  async delete(partition: string, key: string): Promise<void> {
    this.records.delete(MemoryStateStore.id(partition, key));
  }
}
