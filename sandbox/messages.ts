/**
 * Sample messages as raw RFC 822 bytes (CRLF line endings), for tests, the
 * benchmarks and the local demo. Each covers a case mail parsers get wrong.
 */
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';

export interface MessageOptions {
  subject?: string;
  from?: string;
  to?: string;
  date?: Date | string;
  messageId?: string;
}

const CRLF = '\r\n';
const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** RFC 5322 date-time in UTC. */
export function rfc2822Date(d: Date): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return (
    `${DAYS[d.getUTCDay()]}, ${p(d.getUTCDate())} ${MONTHS[d.getUTCMonth()]} ${d.getUTCFullYear()} ` + `${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} +0000`
  );
}

function newMessageId(): string {
  return `<${Date.now().toString(36)}.${randomBytes(6).toString('hex')}@sandbox.contoso.test>`;
}

/** Header block (without the blank line); `messageId: null` omits Message-ID. */
function headers(o: MessageOptions, defaults: { subject: string; from?: string }, extra: string[], messageId: string | null = o.messageId ?? newMessageId()): string[] {
  const date = o.date === undefined ? new Date() : o.date;
  return [
    `From: ${o.from ?? defaults.from ?? 'Alice Example <alice@fabrikam.test>'}`,
    `To: ${o.to ?? 'shared-inbox@contoso.test'}`,
    `Subject: ${o.subject ?? defaults.subject}`,
    `Date: ${typeof date === 'string' ? date : rfc2822Date(date)}`,
    ...(messageId === null ? [] : [`Message-ID: ${messageId}`]),
    'MIME-Version: 1.0',
    ...extra,
  ];
}

/** Joins lines with CRLF; any bare LF inside a line is normalised too. */
function crlf(lines: string[]): string {
  return lines.join(CRLF).replace(/\r?\n/g, CRLF);
}

function base64Lines(data: Buffer): string[] {
  const b = data.toString('base64');
  const out: string[] = [];
  for (let i = 0; i < b.length; i += 76) out.push(b.slice(i, i + 76));
  return out;
}

/** A single-part text/plain UTF-8 message. */
export function plainMessage(o: MessageOptions = {}): Buffer {
  const body = ['Hello,', '', 'this is a plain test message from the Postroom sandbox.', '', '-- ', 'Alice'];
  return Buffer.from(
    crlf([...headers(o, { subject: 'Plain test message' }, ['Content-Type: text/plain; charset=utf-8', 'Content-Transfer-Encoding: 7bit']), '', ...body, '']),
    'utf8',
  );
}

/** The hostile attachment name in multipartWithAttachments (path traversal + a BEL control character). */
export const HOSTILE_FILENAME = '../../etc/passwd\u0007.txt';
/** The non-ASCII attachment name in multipartWithAttachments (sent RFC 2231-encoded). */
export const UNICODE_FILENAME = 'Übersicht Q3 – Bericht.pdf';
/** The bytes of the two attachments of multipartWithAttachments, in order. */
export const ATTACHMENT_CONTENTS: readonly Buffer[] = [
  Buffer.from('root:x:0:0:root:/root:/bin/bash\n(not really)\n', 'utf8'),
  Buffer.concat([Buffer.from('%PDF-1.4\n%\xe2\xe3\xcf\xd3\n', 'latin1'), Buffer.from(Array.from({ length: 300 }, (_, i) => (i * 7) & 0xff))]),
];

/**
 * multipart/mixed: multipart/alternative (text + html) and two attachments,
 * one with a hostile file name, one with a non-ASCII RFC 2231 file name.
 */
export function multipartWithAttachments(o: MessageOptions = {}): Buffer {
  const mixed = '----=_Part_mixed_8f3a1c';
  const alt = '----=_Part_alt_27bd90';
  const rfc2231 = encodeURIComponent(UNICODE_FILENAME).replace(/['()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase());
  return Buffer.from(
    crlf([
      ...headers(o, { subject: 'Quarterly report with attachments' }, [`Content-Type: multipart/mixed; boundary="${mixed}"`]),
      '',
      'This is a multi-part message in MIME format.',
      `--${mixed}`,
      `Content-Type: multipart/alternative; boundary="${alt}"`,
      '',
      `--${alt}`,
      'Content-Type: text/plain; charset=utf-8',
      'Content-Transfer-Encoding: quoted-printable',
      '',
      'Hi team,',
      '',
      'please find the Q3 report attached =E2=80=93 grand total =E2=82=AC 1.234,56.',
      '',
      `--${alt}`,
      'Content-Type: text/html; charset=utf-8',
      'Content-Transfer-Encoding: quoted-printable',
      '',
      '<html><body><p>Hi team,</p><p>please find the <b>Q3 report</b> attached =E2=80=93 =',
      'grand total =E2=82=AC 1.234,56.</p><img src=3D"https://tracker.example/p.gif"></body></html>',
      '',
      `--${alt}--`,
      '',
      `--${mixed}`,
      `Content-Type: text/plain; name="${HOSTILE_FILENAME}"`,
      `Content-Disposition: attachment; filename="${HOSTILE_FILENAME}"`,
      'Content-Transfer-Encoding: base64',
      '',
      ...base64Lines(ATTACHMENT_CONTENTS[0]),
      '',
      `--${mixed}`,
      'Content-Type: application/pdf',
      `Content-Disposition: attachment; filename*=UTF-8''${rfc2231}`,
      'Content-Transfer-Encoding: base64',
      '',
      ...base64Lines(ATTACHMENT_CONTENTS[1]),
      '',
      `--${mixed}--`,
      '',
    ]),
    'utf8',
  );
}

/**
 * Non-UTF-8 text: an ISO-8859-1 part, a windows-1252 part (€, curly quotes in
 * 0x80–0x9F) and an ISO-8859-1 Q-encoded subject. Bytes are the legacy charsets'.
 */
export function nonUtf8Message(o: MessageOptions = {}): Buffer {
  const b = '----=_Part_legacy_5e10aa';
  const head = crlf([
    ...headers(o, { subject: '=?ISO-8859-1?Q?Gr=FC=DFe_aus_K=F6ln?=' }, [`Content-Type: multipart/mixed; boundary="${b}"`]),
    '',
    `--${b}`,
    'Content-Type: text/plain; charset=ISO-8859-1',
    'Content-Transfer-Encoding: 8bit',
    '',
    '',
  ]);
  const latin1 = Buffer.from('Grüße aus Köln, schöne Straße. Prix: 12 ½ £.\r\n', 'latin1');
  const mid = crlf(['', `--${b}`, 'Content-Type: text/plain; charset=windows-1252', 'Content-Transfer-Encoding: 8bit', '', '']);
  // windows-1252: 0x80 = €, 0x93/0x94 = “ ”, 0x96 = –
  const cp1252 = Buffer.concat([
    Buffer.from('Price: ', 'latin1'),
    Buffer.from([0x80]),
    Buffer.from(' 5 ', 'latin1'),
    Buffer.from([0x96]),
    Buffer.from(' ', 'latin1'),
    Buffer.from([0x93]),
    Buffer.from('quoted', 'latin1'),
    Buffer.from([0x94]),
    Buffer.from('\r\n', 'latin1'),
  ]);
  const tail = crlf(['', `--${b}--`, '']);
  return Buffer.concat([Buffer.from(head, 'latin1'), latin1, Buffer.from(mid, 'latin1'), cp1252, Buffer.from(tail, 'latin1')]);
}

/** Raw 8-bit UTF-8 in Subject and From (no encoded-words), as some senders do (RFC 6532 style). */
export function eightBitHeadersMessage(o: MessageOptions = {}): Buffer {
  return Buffer.from(
    crlf([
      ...headers(o, { from: 'Jürgen Müller <jürgen@bücher.test>', subject: 'Bestellbestätigung – 注文 №42 ✓' }, [
        'Content-Type: text/plain; charset=utf-8',
        'Content-Transfer-Encoding: 8bit',
      ]),
      '',
      'Vielen Dank für Ihre Bestellung. ご注文ありがとうございます。',
      '',
    ]),
    'utf8',
  );
}

/** A message without a Message-ID header (deduplication must not rely on it). */
export function noMessageIdMessage(o: MessageOptions = {}): Buffer {
  const { messageId: _ignored, ...rest } = o;
  return Buffer.from(
    crlf([...headers(rest, { subject: 'No Message-ID here' }, ['Content-Type: text/plain; charset=us-ascii'], null), '', 'Some old software sends mail without a Message-ID.', '']),
    'utf8',
  );
}

/**
 * Byte `i` of the large attachment is `(i * 31 + (i >>> 11)) & 0xff`: cheap,
 * reproducible, and not a short period (so a shifted or dropped chunk shows).
 */
function fillPayload(buf: Buffer, offset: number): void {
  for (let j = 0; j < buf.length; j++) {
    const i = offset + j;
    buf[j] = (i * 31 + (i >>> 11)) & 0xff;
  }
}

/** The decoded content of the large attachment, `bytes` long (use for ≤ a few tens of MB). */
export function largeAttachmentPayload(bytes: number): Buffer {
  const b = Buffer.allocUnsafe(bytes);
  fillPayload(b, 0);
  return b;
}

/** SHA-256 (hex) of the large attachment's decoded content, computed in chunks. */
export function largeAttachmentSha256(bytes: number): string {
  const h = createHash('sha256');
  const chunk = Buffer.allocUnsafe(1 << 20);
  for (let off = 0; off < bytes; off += chunk.length) {
    const n = Math.min(chunk.length, bytes - off);
    const part = n === chunk.length ? chunk : chunk.subarray(0, n);
    fillPayload(part, off);
    h.update(part);
  }
  return h.digest('hex');
}

/** The file name of the large attachment. */
export const LARGE_ATTACHMENT_FILENAME = 'large-payload.bin';

function largeHead(bytes: number, o: MessageOptions, boundary: string): string {
  return crlf([
    ...headers(o, { subject: `Large attachment (${bytes} bytes)` }, [`Content-Type: multipart/mixed; boundary="${boundary}"`]),
    '',
    `--${boundary}`,
    'Content-Type: text/plain; charset=us-ascii',
    '',
    'See the attached file.',
    '',
    `--${boundary}`,
    'Content-Type: application/octet-stream',
    `Content-Disposition: attachment; filename="${LARGE_ATTACHMENT_FILENAME}"`,
    'Content-Transfer-Encoding: base64',
    '',
    '',
  ]);
}

/**
 * A message with one base64 attachment of `bytes` bytes, generated as a
 * stream (memory use is constant; for 100 MB benchmarks).
 */
export function largeAttachmentStream(bytes: number, o: MessageOptions = {}): Readable {
  if (!Number.isSafeInteger(bytes) || bytes < 0) throw new TypeError('bytes must be a non-negative integer');
  const boundary = '----=_Part_large_0c7e44';
  const RAW_CHUNK = 57 * 4096; // a multiple of 57: each base64 line (76 chars) encodes 57 bytes
  let offset = 0;
  let state: 'head' | 'body' | 'tail' | 'done' = 'head';
  const chunk = Buffer.allocUnsafe(RAW_CHUNK);
  return new Readable({
    read() {
      for (;;) {
        if (state === 'head') {
          state = 'body';
          if (!this.push(Buffer.from(largeHead(bytes, o, boundary), 'ascii'))) return;
        } else if (state === 'body') {
          if (offset >= bytes) {
            state = 'tail';
            continue;
          }
          const n = Math.min(RAW_CHUNK, bytes - offset);
          const part = chunk.subarray(0, n);
          fillPayload(part, offset);
          offset += n;
          const b64 = part.toString('base64');
          let text = '';
          for (let i = 0; i < b64.length; i += 76) text += b64.slice(i, i + 76) + CRLF;
          if (!this.push(Buffer.from(text, 'ascii'))) return;
        } else if (state === 'tail') {
          state = 'done';
          this.push(Buffer.from(`${CRLF}--${boundary}--${CRLF}`, 'ascii'));
        } else {
          this.push(null);
          return;
        }
      }
    },
  });
}

/** The same message as largeAttachmentStream, as one Buffer (fine for 20 MB). */
export async function largeAttachmentMessage(bytes: number, o: MessageOptions = {}): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of largeAttachmentStream(bytes, o)) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

/**
 * `n` varied small messages (plain, multipart with attachments, legacy
 * charsets, 8-bit headers, no Message-ID), with distinct subjects and dates an
 * hour apart, oldest first.
 */
export function sampleMailbox(n: number, start: Date = new Date(Date.UTC(2025, 0, 6, 8, 0, 0))): Buffer[] {
  const senders = ['Alice Example <alice@fabrikam.test>', '"Bob O\'Neil" <bob@northwind.test>', 'billing@wingtip.test', 'Carol Ng <carol@contoso.test>'];
  const kinds = [plainMessage, multipartWithAttachments, nonUtf8Message, eightBitHeadersMessage, noMessageIdMessage];
  const out: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    const kind = kinds[i % kinds.length];
    const date = new Date(start.getTime() + i * 3_600_000);
    const opts: MessageOptions = { date, messageId: `<sample-${i + 1}.${date.getTime().toString(36)}@sandbox.contoso.test>` };
    // Legacy-charset and 8-bit samples keep their own subject and sender (that is what they test).
    if (kind !== nonUtf8Message && kind !== eightBitHeadersMessage) {
      opts.subject = `Sample ${i + 1}: ${kind.name}`;
      opts.from = senders[i % senders.length]!;
    }
    out.push(kind(opts));
  }
  return out;
}
