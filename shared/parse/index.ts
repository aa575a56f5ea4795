import type { Readable } from 'node:stream';
import type { AddressObject, Attachment, HeaderValue } from 'mailparser';

export interface ParsedAddress {
  readonly name: string;
  readonly address: string;
}

export interface ParsedHeaders {
  messageId: string | null;
  inReplyTo: string | null;
  references: string[];
  date: string | null;
  subject: string | null;
  from: ParsedAddress[];
  sender: ParsedAddress[];
  to: ParsedAddress[];
  cc: ParsedAddress[];
  bcc: ParsedAddress[];
  replyTo: ParsedAddress[];
}

export interface AttachmentInfo {
  /** Index in document order, from 0. */
  readonly index: number;
  /** The filename as the sender gave it: untrusted. */
  readonly filename: string | null;
  readonly contentType: string;
  readonly contentId: string | null;
  readonly disposition: string | null;
  readonly related: boolean;
}

export interface ParsedMessage {
  headers: ParsedHeaders;
  text: string | null;
  html: string | null;
  /** What went wrong parsing; the raw message is delivered all the same. */
  parseError: string | null;
}

export interface ParseMessageOptions {
  /**
   * Receives each attachment's decoded bytes as a stream, in order; must
   * consume it fully (e.g. upload it) before resolving. Memory stays
   * bounded because the parser waits for it.
   */
  onAttachment(info: AttachmentInfo, content: Readable): Promise<void>;
  signal?: AbortSignal;
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

/**
 * Parses one message from a byte stream with mailparser's streaming parser.
 * Attachments are handed out as streams (never buffered here); text and HTML
 * bodies are returned. A parser failure does not throw: it is reported in
 * `parseError` so that the raw message can still be delivered.
 */
export async function parseMessage(raw: Readable, options: ParseMessageOptions): Promise<ParsedMessage> {
  const { MailParser } = await import('mailparser');
  const parser = new MailParser({ skipImageLinks: true, skipTextLinks: true, skipTextToHtml: true, keepCidLinks: true });
  const result: ParsedMessage = {
    headers: { messageId: null, inReplyTo: null, references: [], date: null, subject: null, from: [], sender: [], to: [], cc: [], bcc: [], replyTo: [] },
    text: null,
    html: null,
    parseError: null,
  };
  let index = 0;
  const pending: Promise<void>[] = [];

  await new Promise<void>((resolve) => {
    let settled = false;
    const done = (err?: unknown) => {
      if (settled) return;
      settled = true;
      if (err) {
        result.parseError = err instanceof Error ? err.message : String(err);
        raw.unpipe(parser);
        // keep the source flowing so that whoever else reads it (the raw blob upload) finishes
        raw.resume();
      }
      resolve();
    };
    parser.on('headers', (h: Map<string, HeaderValue>) => {
      const get = (k: string) => h.get(k);
      result.headers.messageId = str(get('message-id'));
      result.headers.inReplyTo = str(get('in-reply-to'));
      const refs = get('references');
      result.headers.references = Array.isArray(refs) ? (refs as string[]) : typeof refs === 'string' ? refs.split(/\s+/).filter(Boolean) : [];
      result.headers.date = str(get('date'));
      result.headers.subject = str(get('subject'));
      result.headers.from = addresses(get('from') as AddressObject);
      result.headers.sender = addresses(get('sender') as AddressObject);
      result.headers.to = addresses(get('to') as AddressObject);
      result.headers.cc = addresses(get('cc') as AddressObject);
      result.headers.bcc = addresses(get('bcc') as AddressObject);
      result.headers.replyTo = addresses(get('reply-to') as AddressObject);
    });
    parser.on('data', (data: (Attachment & { type: 'attachment'; content: Readable; release: () => void }) | { type: 'text'; text?: string; html?: string | false }) => {
      if (data.type === 'text') {
        result.text = data.text ?? null;
        result.html = typeof data.html === 'string' ? data.html : null;
        return;
      }
      const info: AttachmentInfo = {
        index: index++,
        filename: data.filename ?? null,
        contentType: data.contentType || 'application/octet-stream',
        contentId: data.contentId ?? null,
        disposition: data.contentDisposition ?? null,
        related: Boolean(data.related),
      };
      const p = options
        .onAttachment(info, data.content)
        .catch((e) => {
          data.content.resume();
          throw e;
        })
        .finally(() => data.release());
      pending.push(p);
      p.catch(() => undefined);
    });
    parser.once('end', () => done());
    parser.once('error', (e: Error) => done(e));
    const onAbort = () => done(options.signal?.reason);
    options.signal?.addEventListener('abort', onAbort, { once: true });
    // One poll parses thousands of messages under one signal: never leave a listener behind.
    parser.once('close', () => options.signal?.removeEventListener('abort', onAbort));
    parser.once('end', () => options.signal?.removeEventListener('abort', onAbort));
    parser.once('error', () => options.signal?.removeEventListener('abort', onAbort));
    raw.once('error', (e) => done(e));
    raw.pipe(parser);
  });
  // An attachment upload failure is a storage failure, not a parse error: it propagates.
  await Promise.all(pending);
  return result;
}
