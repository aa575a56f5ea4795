import { createHash, type Hash } from 'node:crypto';
import { PassThrough, Readable, Transform } from 'node:stream';
import type { ContainerClient } from '@azure/storage-blob';
import type { QueueClient } from '@azure/storage-queue';
import type { MailboxConfig } from '../config/index.js';
import { PostroomError } from '../errors.js';
import type { Logger } from '../logger.js';
import { parseMessage, type ParseLimit, type ParseMessageOptions, type ParsedAddress, type ParsedHeaders, type ParsedMessage } from '../parse/index.js';
import type { SourceMessage } from '../source.js';
import { SINGLE_PUT_LIMIT, writeBlob } from './blob-upload.js';
import { encodeQueueJson, MAX_QUEUE_JSON_BYTES } from '../queue-json.js';
import { timeStorageWrite } from '../telemetry/index.js';
import { idempotencyKey, MESSAGE_SCHEMA, safeBlobSegment } from './names.js';

export { idempotencyKey, safeBlobSegment, MESSAGE_SCHEMA } from './names.js';

export { MAX_QUEUE_JSON_BYTES } from '../queue-json.js';
/** Bodies longer than this (UTF-8 bytes) go to a blob and are referenced. */
export const INLINE_BODY_BYTES = 8 * 1024;

/** A text or HTML body in the output message: inline when small, else the name of the blob holding it. */
export interface BodyRef {
  /** The body itself (Unicode); present when it is at most INLINE_BODY_BYTES (8 KiB) as UTF-8, else absent. */
  content?: string;
  /** Blob name (in `container`) of the UTF-8 body (`<prefix>/body.txt` or `body.html`); present only when the body is over 8 KiB. */
  blob?: string;
  /** Length of the body in UTF-8 bytes, whether inline or in the blob. */
  bytes: number;
}

/** One attachment of the output message; its decoded content is in its own blob. */
export interface AttachmentRef {
  /** The file name the sender gave (untrusted: escape it before use in HTML, paths or shells), or null when the part has none. */
  filename: string | null;
  /** The part's MIME type as the message states it (e.g. `application/pdf`; `application/octet-stream` when missing); sender-controlled. */
  contentType: string;
  /** The part's Content-ID header (what the HTML body's `cid:` links refer to, for inline images), or null when it has none. */
  contentId: string | null;
  /** The Content-Disposition value (`attachment` or `inline`), or null when the part has no such header. */
  disposition: string | null;
  /** Decoded size in bytes, as written to the blob. */
  size: number;
  /** Blob name in `container`: `<prefix>/attachments/NNN-<sanitised name>`, NNN being the attachment's index. */
  blob: string;
}

/** The JSON each output queue message carries (docs/message-schema.md). */
export interface OutputMessage {
  /** Versioned schema id (`postroom.message.v1`); a breaking change gets a new id. */
  schema: typeof MESSAGE_SCHEMA;
  /** SHA-256 (64 hex) of tenant, mailbox, folder, validity and id: the same for every re-delivery of the message — de-duplicate on it. */
  idempotencyKey: string;
  /** Where the message came from, the inputs of the idempotency key: the app's `tenantId`, the `mailbox` address, `protocol`, IMAP `folder` (POP3: `INBOX`), `validity` (IMAP UIDVALIDITY as a string; POP3: `pop3`) and `id` (IMAP UID as a string, or POP3 UIDL). */
  source: { tenantId: string; mailbox: string; protocol: 'imap' | 'pop3'; folder: string; validity: string; id: string };
  /** Set only when the message was delivered by a UIDVALIDITY resync (docs/uidvalidity.md): `reason` (`UIDVALIDITY changed`) and the `previousValidity`; de-duplicate such messages on `sha256` or `headers.messageId`. */
  resync?: { reason: string; previousValidity?: string };
  /** IMAP INTERNALDATE as an ISO 8601 string; null for POP3 (which has none). */
  receivedAt: string | null;
  /** ISO 8601 time at which Postroom wrote the message. */
  ingestedAt: string;
  /** Size of the raw message in bytes. */
  size: number;
  /** SHA-256 (hex) of the raw message bytes. */
  sha256: string;
  /** Name of the blob container holding the raw message, bodies and attachments. */
  container: string;
  /** The raw message, byte-exact, always written (even when parsing failed): its `blob` name `<prefix>/message.eml` in `container`, content type `message/rfc822`. */
  raw: { blob: string; contentType: 'message/rfc822' };
  /** Decoded headers (sender-controlled: escape before use); only what was read before a parse stopped when `parseError` is set. */
  headers: ParsedHeaders;
  /** The plain-text body, inline or as a blob; null when the message has none. */
  text: BodyRef | null;
  /** The HTML body (sender's markup, not sanitised), inline or as a blob; null when the message has none. */
  html: BodyRef | null;
  /** Every attachment written, in index order; empty when there are none (or the parse stopped before any). */
  attachments: AttachmentRef[];
  /** Why the message could not be (fully) parsed, or null; when set the message is raw-only and `raw` is authoritative. */
  parseError: string | null;
  /** The documented parse limit the message went over (then delivered raw-only), or null. */
  limit: ParseLimit | null;
}

/** What the queue carries when the full message JSON would not fit: the JSON is in a blob. */
export interface OverflowPointer {
  /** Versioned schema id, as in the full message. */
  schema: typeof MESSAGE_SCHEMA;
  /** The message's idempotency key, as in the full message. */
  idempotencyKey: string;
  /** The message's origin, as in the full message. */
  source: OutputMessage['source'];
  /** Where the full message JSON is (`container` and `blob` `<prefix>/message.json`); a consumer checks for this field first. */
  overflow: { container: string; blob: string };
}

/** What `deliverMessage` needs besides the message: where it came from and where it goes. */
export interface DeliveryContext {
  /** The mailbox the message was read from (its app's tenant and its address go into the key and `source`). */
  mailbox: MailboxConfig;
  /** The open folder: `folder` (POP3: `INBOX`) and `validity` (IMAP UIDVALIDITY; POP3: `pop3`) go into the key and `source`; `resync`, set while a UIDVALIDITY change re-reads the folder, is copied to each message. */
  session: { folder: string; validity: string; resync?: { reason: string; previousValidity?: string } };
  /** Blob container for the raw message, long bodies, attachments and overflow JSON. */
  container: ContainerClient;
  /** Output queue that gets one message per delivered mail. */
  queue: QueueClient;
  /** Clock for `ingestedAt` (injectable for tests). */
  now: () => Date;
  /** Logs a message that could not be parsed (never its body). */
  logger: Logger;
  /** Aborts the reads and writes (poll deadline, lost lease); the delivery then rejects with the abort reason. */
  signal?: AbortSignal;
}

/** Summary of one delivered message, for the poll report and notifications (no body). */
export interface Delivered {
  /** The message's idempotency key, as in its queue message. */
  idempotencyKey: string;
  /** Raw size in bytes. */
  size: number;
  /** Decoded Subject header, or null when absent (sender-controlled). */
  subject: string | null;
  /** Decoded From addresses; empty when absent or unparsable. */
  from: ParsedAddress[];
  /** Number of attachments written. */
  attachments: number;
  /** Why parsing failed (message delivered raw-only), or null. */
  parseError: string | null;
  /** Blob prefix `<mailboxKey>/<idempotencyKey>` under which the message's blobs are. */
  blobPrefix: string;
}

/** Names one delivery: its key, its blob prefix, and how errors name it. */
interface DeliveryNames {
  key: string;
  prefix: string;
  subject: string;
}

/** What storing the raw message and parsing it produced. */
interface Stored {
  size: number;
  sha256: string;
  parsed: ParsedMessage;
  attachments: AttachmentRef[];
}

function sinkFailure(names: DeliveryNames, what: string, e: unknown): Error {
  if (e instanceof PostroomError) return e;
  // An abort is the poll's decision, not a storage fault: keep it recognisable as one.
  if ((e as Error)?.name === 'AbortError') return e as Error;
  return new PostroomError('SinkFailed', `${what}: ${(e as Error)?.message ?? e}`, { subject: names.subject, cause: e });
}

/** Runs one storage step, turning its failure into a SinkFailed naming the step. */
async function step<T>(names: DeliveryNames, what: string, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (e) {
    throw sinkFailure(names, what, e);
  }
}

/**
 * Delivers one message durably: raw .eml and each attachment to blobs, long
 * bodies to blobs, then ONE queue message (base64 JSON, always under 64 KiB).
 * Resolves only after the queue write succeeded; a re-delivery of the same
 * message overwrites the same blob names and carries the same key. A message
 * that cannot be parsed, or goes over a parse limit, is delivered all the
 * same (raw kept, `parseError` and `limit` set) in bounded time.
 */
export async function deliverMessage(message: SourceMessage, ctx: DeliveryContext): Promise<Delivered> {
  const { mailbox, session } = ctx;
  const key = idempotencyKey({ tenantId: mailbox.app.tenantId, mailbox: mailbox.address, folder: session.folder, validity: session.validity, id: message.id });
  const names: DeliveryNames = { key, prefix: `${mailbox.key}/${key}`, subject: `${mailbox.address} message ${message.id}` };
  const stored = await storeAndParse(message, ctx, names);
  const { parsed } = stored;
  if (parsed.parseError)
    ctx.logger.warn('message could not be parsed; delivering it raw', {
      mailbox: mailbox.address,
      id: message.id,
      limit: parsed.limit?.name,
      parseError: parsed.parseError.slice(0, 200),
    });
  const out = await outputMessage(message, ctx, names, stored);
  await enqueue(out, ctx, names);
  return {
    idempotencyKey: key,
    size: stored.size,
    subject: parsed.headers.subject,
    from: parsed.headers.from,
    attachments: stored.attachments.length,
    parseError: parsed.parseError,
    blobPrefix: names.prefix,
  };
}

/**
 * Writes the raw message and parses it, at once. Most messages are small: up to
 * the single-Put limit is read first; a message that ends within it is hashed,
 * uploaded and parsed from that one buffer, without the stream fan-out a large
 * message needs.
 */
async function storeAndParse(message: SourceMessage, ctx: DeliveryContext, names: DeliveryNames): Promise<Stored> {
  const opened = await message.open({ signal: ctx.signal });
  const head = await step(names, 'reading the message failed', () => readHead(opened, SINGLE_PUT_LIMIT, ctx.signal));
  const attachments: AttachmentRef[] = [];
  const options: ParseMessageOptions = {
    signal: ctx.signal,
    ...(message.size !== undefined ? { size: message.size } : {}),
    onAttachment: async (info, content, signal) => {
      const name = `${names.prefix}/attachments/${String(info.index).padStart(3, '0')}-${safeBlobSegment(info.filename)}`;
      const size = await writeBlob(ctx.container, name, content, safeContentType(info.contentType), signal);
      attachments.push({ filename: info.filename, contentType: info.contentType, contentId: info.contentId, disposition: info.disposition, size, blob: name });
    },
  };
  const hash = createHash('sha256');
  const { rawUpload, parsing } = head.ended ? fromBuffer(whole(head.chunks, head.bytes), hash, ctx, names, options) : fromStream(opened, head.chunks, hash, ctx, names, options);
  const [rawResult, parsedResult] = await Promise.allSettled([rawUpload, parsing]);
  // Aborted (deadline, lost lease): say so, rather than blame whichever write noticed first.
  ctx.signal?.throwIfAborted();
  if (rawResult.status === 'rejected') throw sinkFailure(names, 'raw message upload failed', rawResult.reason);
  if (parsedResult.status === 'rejected') throw sinkFailure(names, 'attachment upload failed', parsedResult.reason);
  attachments.sort((a, b) => a.blob.localeCompare(b.blob));
  return { size: rawResult.value, sha256: hash.digest('hex'), parsed: parsedResult.value, attachments };
}

/** The chunks as one Buffer; a message that came in one chunk (an IMAP prefetch) is not copied. */
function whole(chunks: Buffer[], bytes: number): Buffer {
  const [first] = chunks;
  return chunks.length === 1 && first ? first : Buffer.concat(chunks, bytes);
}

interface Started {
  rawUpload: Promise<number>;
  parsing: Promise<ParsedMessage>;
}

function fromBuffer(whole: Buffer, hash: Hash, ctx: DeliveryContext, names: DeliveryNames, options: ParseMessageOptions): Started {
  hash.update(whole);
  return {
    rawUpload: writeBlob(ctx.container, `${names.prefix}/message.eml`, whole, 'message/rfc822', ctx.signal),
    parsing: parseMessage(Readable.from([whole]), options),
  };
}

/** Tees the source into the hash, the raw blob and the parser; a failing raw upload stops the source. */
function fromStream(opened: Readable, head: Buffer[], hash: Hash, ctx: DeliveryContext, names: DeliveryNames, options: ParseMessageOptions): Started {
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
  for (const c of head) hasher.write(c);
  opened.pipe(hasher);
  hasher.pipe(toBlob);
  hasher.pipe(toParser);
  const rawUpload = writeBlob(ctx.container, `${names.prefix}/message.eml`, toBlob, 'message/rfc822', ctx.signal);
  // Without the raw blob the delivery fails anyway: end the source and so the parse.
  rawUpload.catch((e) => hasher.destroy(e instanceof Error ? e : new Error(String(e))));
  return { rawUpload, parsing: parseMessage(toParser, options) };
}

/** Bodies up to INLINE_BODY_BYTES inline, longer ones as a blob. */
async function bodyRef(content: string | null, file: string, type: string, ctx: DeliveryContext, names: DeliveryNames): Promise<BodyRef | null> {
  if (content === null) return null;
  const bytes = Buffer.byteLength(content, 'utf8');
  if (bytes <= INLINE_BODY_BYTES) return { content, bytes };
  const blob = `${names.prefix}/${file}`;
  await step(names, `${file} upload failed`, () => writeBlob(ctx.container, blob, content, type, ctx.signal));
  return { blob, bytes };
}

async function outputMessage(message: SourceMessage, ctx: DeliveryContext, names: DeliveryNames, stored: Stored): Promise<OutputMessage> {
  const { mailbox, session, container } = ctx;
  const { parsed } = stored;
  return {
    schema: MESSAGE_SCHEMA,
    idempotencyKey: names.key,
    source: { tenantId: mailbox.app.tenantId, mailbox: mailbox.address, protocol: mailbox.protocol, folder: session.folder, validity: session.validity, id: message.id },
    ...(session.resync ? { resync: session.resync } : {}),
    receivedAt: message.receivedAt ? message.receivedAt.toISOString() : null,
    ingestedAt: ctx.now().toISOString(),
    size: stored.size,
    sha256: stored.sha256,
    container: container.containerName,
    raw: { blob: `${names.prefix}/message.eml`, contentType: 'message/rfc822' },
    headers: parsed.headers,
    text: await bodyRef(parsed.text, 'body.txt', 'text/plain; charset=utf-8', ctx, names),
    html: await bodyRef(parsed.html, 'body.html', 'text/html; charset=utf-8', ctx, names),
    attachments: stored.attachments,
    parseError: parsed.parseError,
    limit: parsed.limit,
  };
}

/** One queue message: the JSON itself, or a pointer to it in a blob when it would not fit. */
async function enqueue(out: OutputMessage, ctx: DeliveryContext, names: DeliveryNames): Promise<void> {
  // Serialised once: the size check, the overflow blob and the queue text share these bytes.
  const json = Buffer.from(JSON.stringify(out), 'utf8');
  let body: string;
  if (json.length > MAX_QUEUE_JSON_BYTES) {
    const blob = `${names.prefix}/message.json`;
    await step(names, 'message.json upload failed', () => writeBlob(ctx.container, blob, json, 'application/json', ctx.signal));
    const pointer: OverflowPointer = { schema: MESSAGE_SCHEMA, idempotencyKey: names.key, source: out.source, overflow: { container: ctx.container.containerName, blob } };
    body = encodeQueueJson(pointer, `message ${names.key}`);
  } else {
    body = json.toString('base64');
  }
  await step(names, 'queue write failed', () => timeStorageWrite('queue', () => ctx.queue.sendMessage(body, { abortSignal: ctx.signal })));
}

/**
 * Reads chunks as they come ('data' events hand on the source's own chunks; async
 * iteration would concatenate whatever is buffered into one large Buffer) until more
 * than `limit` bytes or the end, then leaves the stream paused.
 */
function readHead(src: Readable, limit: number, signal?: AbortSignal): Promise<{ chunks: Buffer[]; bytes: number; ended: boolean }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let bytes = 0;
    const onAbort = () => src.destroy(signal!.reason instanceof Error ? signal!.reason : new Error('aborted'));
    if (signal?.aborted) return reject(signal.reason as Error);
    signal?.addEventListener('abort', onAbort, { once: true });
    const done = (ended: boolean) => {
      src.off('data', onData);
      src.off('end', onEnd);
      src.off('error', onError);
      signal?.removeEventListener('abort', onAbort);
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
      signal?.removeEventListener('abort', onAbort);
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
