/**
 * Queue messages as Azure Functions queue triggers expect them by default:
 * base64 of UTF-8 JSON. A trigger hands the handler an already-decoded
 * object; the Storage SDK hands over the base64 text; both are accepted.
 */
export function encodeQueueJson(value: unknown): string {
  return Buffer.from(JSON.stringify(value), 'utf8').toString('base64');
}

/** Decodes a queue message (object, Buffer, JSON text or base64 JSON); `TypeError` when it is none of these. */
export function decodeQueueJson(raw: unknown, what: string): unknown {
  let v: unknown = raw;
  if (Buffer.isBuffer(v)) v = v.toString('utf8');
  if (typeof v !== 'string') return v;
  const text = v.trim().startsWith('{') ? v : Buffer.from(v, 'base64').toString('utf8');
  try {
    return JSON.parse(text);
  } catch {
    throw new TypeError(`${what} is not JSON`);
  }
}
