import type { z } from 'zod';

/**
 * Azure queue messages are at most 64 KiB, and base64 (as Functions queue
 * triggers expect by default) turns 3 bytes into 4: at most 49,152 bytes of JSON.
 */
export const MAX_QUEUE_JSON_BYTES = 49_152;

/**
 * Queue messages as Azure Functions queue triggers expect them by default:
 * base64 of UTF-8 JSON. `TypeError` when the JSON is over
 * {@link MAX_QUEUE_JSON_BYTES} (callers trim first).
 */
export function encodeQueueJson(value: unknown, what = 'queue message'): string {
  const json = Buffer.from(JSON.stringify(value), 'utf8');
  if (json.length > MAX_QUEUE_JSON_BYTES) throw new TypeError(`${what} is ${json.length} bytes of JSON, over ${MAX_QUEUE_JSON_BYTES}`);
  return json.toString('base64');
}

/**
 * Decodes a queue message as a trigger (an already-decoded object) or the
 * Storage SDK (base64 text) hands it over, and checks it against `schema`.
 * `TypeError` when it is not JSON or not of the schema named `schemaName`: a job nobody could handle.
 */
export function decodeQueueJson<T extends z.ZodType>(raw: unknown, schema: T, schemaName: string): z.infer<T> {
  let v: unknown = raw;
  if (Buffer.isBuffer(v)) v = v.toString('utf8');
  if (typeof v === 'string') {
    const text = v.trim().startsWith('{') ? v : Buffer.from(v, 'base64').toString('utf8');
    try {
      v = JSON.parse(text);
    } catch {
      throw new TypeError(`queue message is not JSON (expected a ${schemaName})`);
    }
  }
  const r = schema.safeParse(v);
  if (!r.success) throw new TypeError(`queue message is not a ${schemaName}: ${r.error.issues.map((i) => `${i.path.join('.') || '(root)'} ${i.message}`).join('; ')}`);
  return r.data;
}
