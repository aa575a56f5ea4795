import type { TableClient } from '@azure/data-tables';
import { PostroomError } from '../errors.js';
import type { StateRecord, StateStore, StateValue } from '../state.js';

// Table keys may not hold / \ # ? or control characters; callers pass
// mailbox addresses and folder names, so keys are encoded.
function encodeKey(k: string): string {
  return Buffer.from(k, 'utf8').toString('base64url');
}

const SYSTEM = new Set(['partitionKey', 'rowKey', 'etag', 'timestamp', 'odata.etag', 'odata.metadata']);

/**
 * The StateStore on Azure Table storage, with ETag-conditional writes.
 *
 * @example
 * ```ts
 * const state = createTableStateStore(() => storage.table('postroomstate'));
 * const rec = await state.get<{ lastUid: number }>('imap:box@x', 'INBOX');
 * await state.put('imap:box@x', 'INBOX', { lastUid: 7 }, rec?.etag ?? null);
 * ```
 */
export function createTableStateStore(table: () => Promise<TableClient>): StateStore {
  const conflict = (e: unknown, partition: string, key: string): never => {
    const status = (e as { statusCode?: number }).statusCode;
    if (status === 412 || status === 409) {
      throw new PostroomError('CheckpointConflict', `state ${partition}/${key} was changed by another writer`, { cause: e });
    }
    throw new PostroomError('SinkFailed', `state ${partition}/${key} could not be written (${status ?? (e as Error).message})`, { cause: e });
  };
  return {
    async get<T extends StateValue>(partition: string, key: string): Promise<StateRecord<T> | undefined> {
      const t = await table();
      try {
        const e = await t.getEntity<Record<string, unknown>>(encodeKey(partition), encodeKey(key));
        const value: Record<string, unknown> = {};
        for (const [k, v] of Object.entries(e)) if (!SYSTEM.has(k)) value[k] = v;
        return { value: value as T, etag: e.etag };
      } catch (e) {
        if ((e as { statusCode?: number }).statusCode === 404) return undefined;
        throw new PostroomError('SinkFailed', `state ${partition}/${key} could not be read`, { cause: e });
      }
    },
    async put<T extends StateValue>(partition: string, key: string, value: T, etag?: string | null): Promise<string> {
      const t = await table();
      const entity = { partitionKey: encodeKey(partition), rowKey: encodeKey(key), ...value };
      try {
        if (etag === null) return (await t.createEntity(entity)).etag ?? '';
        if (etag === undefined) return (await t.upsertEntity(entity, 'Replace')).etag ?? '';
        return (await t.updateEntity(entity, 'Replace', { etag })).etag ?? '';
      } catch (e) {
        return conflict(e, partition, key);
      }
    },
    async delete(partition: string, key: string): Promise<void> {
      const t = await table();
      await t.deleteEntity(encodeKey(partition), encodeKey(key)).catch((e: { statusCode?: number }) => {
        if (e.statusCode !== 404) throw e;
      });
    },
  };
}
