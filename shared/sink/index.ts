import { createHash } from 'node:crypto';
import { PassThrough, Readable, Transform } from 'node:stream';
import type { ContainerClient } from '@azure/storage-blob';
import type { QueueClient } from '@azure/storage-queue';
import type { MailboxConfig } from '../config/index.js';
import { PostroomError } from '../errors.js';
import type { Logger } from '../logger.js';
import { parseMessage, type AttachmentInfo, type ParsedAddress, type ParsedHeaders, type ParsedMessage } from '../parse/index.js';
import type { SourceMessage } from '../source.js';
import { SINGLE_PUT_LIMIT, writeBlob } from './blob-upload.js';
import { timeStorageWrite } from '../telemetry/index.js';
import { idempotencyKey, MESSAGE_SCHEMA, safeBlobSegment } from './names.js';

export { idempotencyKey, safeBlobSegment, MESSAGE_SCHEMA } from './names.js';

/** Azure queue messages are at most 64 KiB; base64 (as Functions triggers expect) leaves 48 KiB of JSON. */
export const MAX_QUEUE_JSON_BYTES = 49_152;
/** Bodies longer than this (UTF-8 bytes) go to a blob and are referenced. */
export const INLINE_BODY_BYTES = 8 * 1024;

export interface BodyRef {
  content?: string;
  blob?: string;
  bytes: number;
}

export interface AttachmentRef {
  filename: string | null;
  contentType: string;
  contentId: string | null;
  disposition: string | null;
  size: number;
  blob: string;
}

/** The JSON each output queue message carries (docs/message-schema.md). */
export interface OutputMessage {
  schema: typeof MESSAGE_SCHEMA;
  idempotencyKey: string;
  source: { tenantId: string; mailbox: string; protocol: 'imap' | 'pop3'; folder: string; validity: string; id: string };
  resync?: { reason: string; previousValidity?: string };
  receivedAt: string | null;
  ingestedAt: string;
  size: number;
  sha256: string;
  container: string;
  raw: { blob: string; contentType: 'message/rfc822' };
  headers: ParsedHeaders;
  text: BodyRef | null;
  html: BodyRef | null;
  attachments: AttachmentRef[];
  parseError: string | null;
}

/** What the queue carries when the full message JSON would not fit: the JSON is in a blob. */
export interface OverflowPointer {
  schema: typeof MESSAGE_SCHEMA;
  idempotencyKey: string;
  source: OutputMessage['source'];
  overflow: { container: string; blob: string };
}

export interface DeliveryContext {
  mailbox: MailboxConfig;
  session: { folder: string; validity: string; resync?: { reason: string; previousValidity?: string } };
  container: ContainerClient;
  queue: QueueClient;
  now: () => Date;
  logger: Logger;
  signal?: AbortSignal;
}

export interface Delivered {
  idempotencyKey: string;
  size: number;
  subject: string | null;
  from: ParsedAddress[];
  attachments: number;
  parseError: string | null;
  blobPrefix: string;
}

/**
 * Delivers one message durably: raw .eml and each attachment to blobs, long
 * bodies to blobs, then ONE queue message (base64 JSON, always under 64 KiB).
 * Resolves only after the queue write succeeded; a re-delivery of the same
 * message overwrites the same blob names and carries the same key.
 */
export async function deliverMessage(message: SourceMessage, ctx: DeliveryContext): Promise<Delivered> {
  const { mailbox, session, container } = ctx;
  const key = idempotencyKey({ tenantId: mailbox.app.tenantId, mailbox: mailbox.address, folder: session.folder, validity: session.validity, id: message.id });
  const prefix = `${mailbox.key}/${key}`;
  const subject = `${mailbox.address} message ${message.id}`;
  const fail = (what: string, e: unknown): never => {
    if (e instanceof PostroomError) throw e;
    throw new PostroomError('SinkFailed', `${what}: ${(e as Error)?.message ?? e}`, { subject, cause: e });
  };

  const opened = await message.open({ signal: ctx.signal });
  // Most messages are small: read up to the single-Put limit first. When the message ends
  // within it (the usual case), it is hashed, uploaded and parsed from that one buffer,
  // without the stream fan-out a large message needs.
  let head: { chunks: Buffer[]; bytes: number; ended: boolean };
  try {
    head = await readHead(opened, SINGLE_PUT_LIMIT);
  } catch (e) {
    return fail('reading the message failed', e);
  }
  const whole = head.ended ? Buffer.concat(head.chunks, head.bytes) : undefined;

  const attachments: AttachmentRef[] = [];
  const onAttachment = async (info: AttachmentInfo, content: Readable) => {
    const name = `${prefix}/attachments/${String(info.index).padStart(3, '0')}-${safeBlobSegment(info.filename)}`;
    const size = await writeBlob(container, name, content, safeContentType(info.contentType));
    attachments.push({ filename: info.filename, contentType: info.contentType, contentId: info.contentId, disposition: info.disposition, size, blob: name });
  };
  const hash = createHash('sha256');
  let rawUpload: Promise<number>;
  let parsing: Promise<ParsedMessage>;
  if (whole) {
    hash.update(whole);
    rawUpload = writeBlob(container, `${prefix}/message.eml`, whole, 'message/rfc822');
    parsing = parseMessage(Readable.from([whole]), { signal: ctx.signal, onAttachment });
  } else {
    const hasher = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        hash.update(chunk);
        cb(null, chunk);
      },
    });
    const toBlob = new PassThrough();
    const toParser = new PassThrough();
    opened.on('error', (e) => hasher.destroy(e));
    // A sink that gives up must stop the source (and, for POP3, free its connection).
    hasher.on('close', () => opened.destroy());
    hasher.on('error', (e) => {
      toBlob.destroy(e);
      toParser.destroy(e);
    });
    for (const c of head.chunks) hasher.write(c);
    opened.pipe(hasher);
    hasher.pipe(toBlob);
    hasher.pipe(toParser);
    rawUpload = writeBlob(container, `${prefix}/message.eml`, toBlob, 'message/rfc822');
    rawUpload.catch(() => toParser.resume());
    parsing = parseMessage(toParser, { signal: ctx.signal, onAttachment });
  }
  const [rawResult, parsedResult] = await Promise.allSettled([rawUpload, parsing]);
  if (rawResult.status === 'rejected') fail('raw message upload failed', rawResult.reason);
  if (parsedResult.status === 'rejected') fail('attachment upload failed', parsedResult.reason);
  const size = (rawResult as PromiseFulfilledResult<number>).value;
  const parsed = (parsedResult as PromiseFulfilledResult<Awaited<typeof parsing>>).value;
  if (parsed.parseError) ctx.logger.warn('message could not be parsed; delivering it raw', { mailbox: mailbox.address, id: message.id, parseError: parsed.parseError.slice(0, 200) });

  const body = async (content: string | null, name: string, type: string): Promise<BodyRef | null> => {
    if (content === null) return null;
    const bytes = Buffer.byteLength(content, 'utf8');
    if (bytes <= INLINE_BODY_BYTES) return { content, bytes };
    try {
      await writeBlob(container, `${prefix}/${name}`, content, type);
    } catch (e) {
      fail(`${name} upload failed`, e);
    }
    return { blob: `${prefix}/${name}`, bytes };
  };
  attachments.sort((a, b) => a.blob.localeCompare(b.blob));
  const out: OutputMessage = {
    schema: MESSAGE_SCHEMA,
    idempotencyKey: key,
    source: { tenantId: mailbox.app.tenantId, mailbox: mailbox.address, protocol: mailbox.protocol, folder: session.folder, validity: session.validity, id: message.id },
    ...(session.resync ? { resync: session.resync } : {}),
    receivedAt: message.receivedAt ? message.receivedAt.toISOString() : null,
    ingestedAt: ctx.now().toISOString(),
    size,
    sha256: hash.digest('hex'),
    container: container.containerName,
    raw: { blob: `${prefix}/message.eml`, contentType: 'message/rfc822' },
    headers: parsed.headers,
    text: await body(parsed.text, 'body.txt', 'text/plain; charset=utf-8'),
    html: await body(parsed.html, 'body.html', 'text/html; charset=utf-8'),
    attachments,
    parseError: parsed.parseError,
  };

  let json = JSON.stringify(out);
  if (Buffer.byteLength(json, 'utf8') > MAX_QUEUE_JSON_BYTES) {
    const blob = `${prefix}/message.json`;
    try {
      await writeBlob(container, blob, json, 'application/json');
    } catch (e) {
      fail('message.json upload failed', e);
    }
    const pointer: OverflowPointer = { schema: MESSAGE_SCHEMA, idempotencyKey: key, source: out.source, overflow: { container: container.containerName, blob } };
    json = JSON.stringify(pointer);
  }
  try {
    await timeStorageWrite('queue', () => ctx.queue.sendMessage(Buffer.from(json, 'utf8').toString('base64'), { abortSignal: ctx.signal }));
  } catch (e) {
    fail('queue write failed', e);
  }
  return {
    idempotencyKey: key,
    size,
    subject: parsed.headers.subject,
    from: parsed.headers.from,
    attachments: attachments.length,
    parseError: parsed.parseError,
    blobPrefix: prefix,
  };
}

/**
 * Reads chunks as they come ('data' events hand on the source's own chunks; async
 * iteration would concatenate whatever is buffered into one large Buffer) until more
 * than `limit` bytes or the end, then leaves the stream paused.
 */
function readHead(src: Readable, limit: number): Promise<{ chunks: Buffer[]; bytes: number; ended: boolean }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let bytes = 0;
    const done = (ended: boolean) => {
      src.off('data', onData);
      src.off('end', onEnd);
      src.off('error', onError);
      resolve({ chunks, bytes, ended });
    };
    const onData = (c: Buffer | string) => {
      const b = typeof c === 'string' ? Buffer.from(c) : c;
      chunks.push(b);
      bytes += b.length;
      if (bytes > limit) {
        src.pause();
        done(false);
      }
    };
    const onEnd = () => {
      // Everything is read: a late error from the source (a socket closing) changes nothing.
      src.on('error', () => undefined);
      done(true);
    };
    const onError = (e: Error) => {
      src.off('data', onData);
      src.off('end', onEnd);
      reject(e);
    };
    src.on('data', onData);
    src.once('end', onEnd);
    src.once('error', onError);
  });
}

// Content types come from the message: keep only a well-formed type/subtype.
function safeContentType(t: string): string {
  return /^[\w.+-]+\/[\w.+-]+$/.test(t) ? t : 'application/octet-stream';
}
