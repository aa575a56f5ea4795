import { Transform, type Readable } from 'node:stream';
import type { AddressObject, HeaderValue } from 'mailparser';

/** One mailbox of an address header; members of a group are listed one by one. */
export interface ParsedAddress {
  /** Display name, decoded to Unicode; `''` when the address has none. */
  readonly name: string;
  /** The e-mail address as written (not validated); `''` when the header had only a name. */
  readonly address: string;
}

/** The message's headers, decoded to Unicode (encoded-words, legacy charsets); all values come from the sender. */
export interface ParsedHeaders {
  /** Message-ID header as written (with angle brackets), or null when absent. */
  messageId: string | null;
  /** In-Reply-To header, or null when absent. */
  inReplyTo: string | null;
  /** Message ids of the References header, in order; empty when absent. */
  references: string[];
  /** Date header as an ISO 8601 string; null when absent or unparsable. */
  date: string | null;
  /** Subject header, or null when absent. */
  subject: string | null;
  /** From header addresses; empty when absent. */
  from: ParsedAddress[];
  /** Sender header addresses; empty when absent (the usual case). */
  sender: ParsedAddress[];
  /** To header addresses; empty when absent. */
  to: ParsedAddress[];
  /** Cc header addresses; empty when absent. */
  cc: ParsedAddress[];
  /** Bcc header addresses; usually empty, as senders strip it. */
  bcc: ParsedAddress[];
  /** Reply-To header addresses; empty when absent. */
  replyTo: ParsedAddress[];
}

/** Describes one attachment handed to `onAttachment`, before its content is read. */
export interface AttachmentInfo {
  /** Index in document order, from 0. */
  readonly index: number;
  /** The filename as the sender gave it: untrusted. */
  readonly filename: string | null;
  /** The part's MIME type as the message states it; `application/octet-stream` when missing. Sender-controlled. */
  readonly contentType: string;
  /** The part's Content-ID (what `cid:` links in the HTML refer to), or null. */
  readonly contentId: string | null;
  /** Content-Disposition value (`attachment`, `inline`), or null when the part has none. */
  readonly disposition: string | null;
  /** True when the part belongs to a multipart/related (an inline image of the HTML body) rather than being a separate file. */
  readonly related: boolean;
}

/** The documented limits of parsing (docs/message-schema.md, "Limits"). */
export type ParseLimitName = 'size' | 'parts' | 'nesting' | 'header-size' | 'stall';

/** A documented limit a message went over: it is then delivered raw-only. */
export interface ParseLimit {
  /** Which limit. */
  readonly name: ParseLimitName;
  /** Its value: bytes (`size`, `header-size`), a count (`parts`, `nesting`) or milliseconds (`stall`). */
  readonly max: number;
}

/** Bounds on one parse; every message is delivered, those over a bound raw-only. */
export interface ParseLimits {
  /** Messages larger than this (bytes) are not parsed. */
  size: number;
  /** MIME parts (nodes, the message itself included) per message. */
  parts: number;
  /** Depth of nested parts (multipart or message/rfc822 inside one another). */
  nesting: number;
  /** Bytes of one part's header block. */
  headerSize: number;
  /** A parse with no progress (no input read, no attachment byte written) for this long is abandoned. */
  stallMs: number;
}

/** Above Exchange Online's 150 MB message size, 250 attachments and any nesting real mail uses. */
export const PARSE_LIMITS: Readonly<ParseLimits> = { size: 200 * 1024 * 1024, parts: 1000, nesting: 100, headerSize: 1024 * 1024, stallMs: 60_000 };

/** What one parse produced; a failed or limited parse returns what it read before it stopped. */
export interface ParsedMessage {
  /** Decoded headers; empty values when the parse stopped before the header block was read. */
  headers: ParsedHeaders;
  /** Plain-text body, decoded to Unicode; null when the message has none. */
  text: string | null;
  /** HTML body as sent (not sanitised), decoded to Unicode; null when the message has none. */
  html: string | null;
  /** What went wrong parsing; the raw message is delivered all the same. */
  parseError: string | null;
  /** Set when a documented limit stopped the parse (then `parseError` names it too). */
  limit: ParseLimit | null;
}

/** Options of `parseMessage`: where attachments go, and its bounds. */
export interface ParseMessageOptions {
  /**
   * Receives each attachment's decoded bytes as a stream, in order; must
   * consume it fully (e.g. upload it) before resolving, and give up when
   * `signal` aborts (the parse was abandoned or the poll aborted). Memory
   * stays bounded because the parser waits for it.
   */
  onAttachment(info: AttachmentInfo, content: Readable, signal: AbortSignal): Promise<void>;
  /** Aborts the parse (poll deadline, lost lease): open attachment streams end and `parseMessage` rejects with the reason. */
  signal?: AbortSignal;
  /** The message size when known beforehand (a message over `limits.size` is not parsed at all). */
  size?: number;
  /** Overrides of PARSE_LIMITS (tests). */
  limits?: Partial<ParseLimits>;
}

function addresses(v: AddressObject | AddressObject[] | undefined): ParsedAddress[] {
  if (!v) return [];
  const out: ParsedAddress[] = [];
  const walk = (list: { name?: string; address?: string; group?: unknown[] }[]) => {
    for (const a of list) {
      if (Array.isArray(a.group)) walk(a.group as typeof list);
      else out.push({ name: a.name ?? '', address: a.address ?? '' });
    }
  };
  for (const o of Array.isArray(v) ? v : [v]) walk(o.value ?? []);
  return out;
}

function str(v: HeaderValue | undefined): string | null {
  if (v === undefined || v === null) return null;
  if (typeof v === 'string') return v;
  if (v instanceof Date) return Number.isNaN(v.getTime()) ? null : v.toISOString();
  return null;
}

function readHeaders(out: ParsedHeaders, h: Map<string, HeaderValue>): void {
  const get = (k: string) => h.get(k);
  out.messageId = str(get('message-id'));
  out.inReplyTo = str(get('in-reply-to'));
  const refs = get('references');
  out.references = Array.isArray(refs) ? (refs as string[]) : typeof refs === 'string' ? refs.split(/\s+/).filter(Boolean) : [];
  out.date = str(get('date'));
  out.subject = str(get('subject'));
  out.from = addresses(get('from') as AddressObject);
  out.sender = addresses(get('sender') as AddressObject);
  out.to = addresses(get('to') as AddressObject);
  out.cc = addresses(get('cc') as AddressObject);
  out.bcc = addresses(get('bcc') as AddressObject);
  out.replyTo = addresses(get('reply-to') as AddressObject);
}

function emptyResult(): ParsedMessage {
  return {
    headers: { messageId: null, inReplyTo: null, references: [], date: null, subject: null, from: [], sender: [], to: [], cc: [], bcc: [], replyTo: [] },
    text: null,
    html: null,
    parseError: null,
    limit: null,
  };
}

/** The parseError text of a limit: names it, so that a reader of the JSON alone knows which. */
export function limitMessage(limit: ParseLimit): string {
  const what: Record<ParseLimitName, string> = {
    size: `the message is larger than ${limit.max} bytes`,
    parts: `the message has more than ${limit.max} MIME parts`,
    nesting: `the message nests parts more than ${limit.max} deep`,
    'header-size': `a header block is larger than ${limit.max} bytes`,
    stall: `parsing made no progress for ${limit.max} ms`,
  };
  return `${what[limit.name]} (limit "${limit.name}"); delivered raw-only`;
}

/**
 * Parses one message from a byte stream with mailparser's streaming parser.
 * Attachments are handed out as streams (never buffered here); text and HTML
 * bodies are returned. A parser failure does not throw: it is reported in
 * `parseError` (and `limit`, for a documented limit) so that the raw message
 * can still be delivered. Resolves in bounded time whatever the input: on a
 * failure every open attachment stream is ended and its consumer aborted.
 * Rejects only when `signal` aborts or an attachment consumer fails for its
 * own reasons (storage).
 */
export async function parseMessage(raw: Readable, options: ParseMessageOptions): Promise<ParsedMessage> {
  options.signal?.throwIfAborted();
  const limits: ParseLimits = { ...PARSE_LIMITS, ...options.limits };
  if (options.size !== undefined && options.size > limits.size) {
    raw.resume();
    const result = emptyResult();
    result.limit = { name: 'size', max: limits.size };
    result.parseError = limitMessage(result.limit);
    return result;
  }
  const { MailParser } = await import('mailparser');
  const parser = new MailParser({
    skipImageLinks: true,
    skipTextLinks: true,
    skipTextToHtml: true,
    // Postroom hashes the raw message itself; a per-attachment MD5 was ~5% of a large message's CPU.
    checksumAlgo: false,
    // Pinned here so that the limits are ours to document.
    maxChildNodes: limits.parts,
    maxHeadSize: limits.headerSize,
  });
  return new ParseRun(raw, parser, options, limits).run();
}

type ParserData =
  | { type: 'attachment'; content: Readable; release: () => void; filename?: string; contentType: string; contentId?: string; contentDisposition?: string; related?: boolean }
  | { type: 'text'; text?: string; html?: string | false };

interface MimeNodeLike {
  parentNode?: MimeNodeLike | false;
}

/** Thrown into streams and uploads that a failed parse leaves behind. */
class ParseAbandoned extends Error {
  override name = 'ParseAbandoned';
}

/** One parse: wires the parser, tracks open attachments, and tears everything down on a failure. */
class ParseRun {
  private readonly result = emptyResult();
  private readonly stopper = new AbortController();
  /** Aborts on the poll's signal or when this parse is abandoned; handed to every attachment consumer. */
  private readonly signal: AbortSignal;
  private readonly open = new Set<Readable>();
  private readonly pending: Promise<void>[] = [];
  private storageError: Error | undefined;
  private stopped = false;
  private index = 0;
  private bytes = 0;
  private stall: NodeJS.Timeout | undefined;
  private finish: () => void = () => undefined;

  constructor(
    private readonly raw: Readable,
    private readonly parser: Transform,
    private readonly options: ParseMessageOptions,
    private readonly limits: ParseLimits,
  ) {
    this.signal = options.signal ? AbortSignal.any([options.signal, this.stopper.signal]) : this.stopper.signal;
  }

  async run(): Promise<ParsedMessage> {
    const parsed = new Promise<void>((resolve) => (this.finish = resolve));
    const onAbort = () => this.stop();
    this.options.signal?.addEventListener('abort', onAbort, { once: true });
    this.stall = setTimeout(() => this.fail(undefined, { name: 'stall', max: this.limits.stallMs }), this.limits.stallMs);
    try {
      this.wire();
      await parsed;
      // Bounded: a consumer that hangs is aborted by the stall timer, which keeps running.
      await Promise.allSettled(this.pending);
    } finally {
      clearTimeout(this.stall);
      // One poll parses thousands of messages under one signal: never leave a listener behind.
      this.options.signal?.removeEventListener('abort', onAbort);
    }
    this.options.signal?.throwIfAborted();
    if (this.storageError !== undefined) throw this.storageError;
    return this.result;
  }

  private wire(): void {
    const { parser, raw } = this;
    parser.on('headers', (h: Map<string, HeaderValue>) => readHeaders(this.result.headers, h));
    parser.on('data', (d: ParserData) => this.onData(d));
    parser.once('end', () => this.finish());
    // Stays attached: a torn-down parser may still emit errors, which must not crash the process.
    parser.on('error', (e: Error) => this.fail(e));
    raw.once('error', (e) => this.fail(e));
    this.watchNesting();
    raw.pipe(parser);
    raw.on('data', (c: Buffer | string) => this.onInput(c.length));
  }

  private onInput(n: number): void {
    this.touch();
    this.bytes += n;
    if (this.bytes > this.limits.size) this.fail(undefined, { name: 'size', max: this.limits.size });
  }

  private touch(): void {
    if (!this.stopped) this.stall?.refresh();
  }

  private onData(d: ParserData): void {
    if (d.type === 'text') {
      this.result.text = d.text ?? null;
      this.result.html = typeof d.html === 'string' ? d.html : null;
      return;
    }
    if (this.stopped) {
      d.content.resume();
      d.release();
      return;
    }
    this.attach(d);
  }

  private attach(d: Extract<ParserData, { type: 'attachment' }>): void {
    const info: AttachmentInfo = {
      index: this.index++,
      filename: d.filename ?? null,
      contentType: d.contentType || 'application/octet-stream',
      contentId: d.contentId ?? null,
      disposition: d.contentDisposition ?? null,
      related: Boolean(d.related),
    };
    // Every decoded byte counts as progress for the stall timer.
    const counted = new Transform({
      transform: (c, _enc, cb) => {
        this.touch();
        cb(null, c);
      },
    });
    let decodeError: unknown;
    d.content.on('error', (e) => {
      decodeError ??= e;
      counted.destroy(e);
    });
    // The consumer learns of an error by reading; an unread stream destroyed by stop() must not crash the process.
    counted.on('error', () => undefined);
    d.content.pipe(counted);
    this.open.add(d.content).add(counted);
    const p = this.options
      .onAttachment(info, counted, this.signal)
      .catch((e) => {
        d.content.unpipe(counted);
        d.content.resume();
        this.attachmentFailed(info, e, decodeError);
      })
      .finally(() => {
        this.open.delete(d.content);
        this.open.delete(counted);
        d.release();
        this.touch();
      });
    this.pending.push(p);
  }

  private attachmentFailed(info: AttachmentInfo, e: unknown, decodeError: unknown): void {
    // Abandoned or aborted: the parse outcome (or the abort) already says why.
    if (this.signal.aborted) return;
    if (decodeError !== undefined) return this.fail(new Error(`attachment ${info.index} could not be decoded: ${(decodeError as Error)?.message ?? decodeError}`));
    // A storage failure is not a parse error: it fails the delivery.
    this.storageError = e instanceof Error ? e : new Error(String(e));
    this.stop();
  }

  /** Records the first failure (a limit, or what the parser said) and stops. */
  private fail(e: unknown, limit?: ParseLimit): void {
    if (this.stopped) return;
    const known = limit ?? this.limitOf(e);
    this.result.limit = known ?? null;
    this.result.parseError = known ? limitMessage(known) : e instanceof Error ? e.message : String(e);
    this.stop();
  }

  /** mailsplit's own limit errors, told apart by their text (they carry no code). */
  private limitOf(e: unknown): ParseLimit | undefined {
    const m = e instanceof Error ? e.message : '';
    if (/max allowed child nodes/i.test(m)) return { name: 'parts', max: this.limits.parts };
    if (/max header size/i.test(m)) return { name: 'header-size', max: this.limits.headerSize };
    return undefined;
  }

  /** Ends the parse: no more input, every open attachment stream ended, every consumer aborted. */
  private stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    const why = new ParseAbandoned(this.result.parseError ?? 'the parse was stopped');
    this.stopper.abort(why);
    this.raw.unpipe(this.parser);
    // Keep the source flowing so that whoever else reads it (the raw blob upload) finishes.
    this.raw.resume();
    for (const s of this.open) s.destroy(why);
    this.parser.destroy();
    this.finish();
  }

  /** mailparser has no depth limit: count each new part's ancestors as it is created. */
  private watchNesting(): void {
    const p = this.parser as unknown as { createNode?: (node: MimeNodeLike) => unknown };
    if (typeof p.createNode !== 'function') return;
    const create = p.createNode.bind(this.parser);
    p.createNode = (node: MimeNodeLike) => {
      let depth = 0;
      for (let n = node.parentNode; n && depth <= this.limits.nesting; n = n.parentNode) depth++;
      if (depth > this.limits.nesting) this.fail(undefined, { name: 'nesting', max: this.limits.nesting });
      return create(node);
    };
  }
}
