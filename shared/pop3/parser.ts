import { PostroomError } from '../errors.js';

/**
 * The POP3 reply parser: a pure state machine with no socket in sight, fed
 * arbitrary chunks (a whole reply, one byte at a time, anything between) and
 * returning events. The connection tells it what shape of reply comes next
 * (`expect`), because POP3 replies do not say whether a body follows.
 */

/** Status of a reply line: `+OK`, `-ERR`, or a SASL continuation `+` (RFC 5034). */
export type Pop3Status = '+OK' | '-ERR' | '+';

/** The first line of every POP3 reply. */
export interface Pop3StatusLine {
  /** `+OK` (success), `-ERR` (refused; the text says why) or `+` (a SASL challenge awaiting the client's answer). */
  readonly status: Pop3Status;
  /** The text after the status indicator (for `+`, the base64 challenge, possibly empty). */
  readonly text: string;
}

/** A whole `single` or `multi` reply: its status line and, for a multi-line `+OK`, its body lines. */
export interface Pop3Reply extends Pop3StatusLine {
  /** Dot-unstuffed body lines (without CRLF) of a buffered multi-line `+OK` reply. */
  readonly lines?: readonly Buffer[];
}

/**
 * `single`: one status line. `multi`: status line, then (after `+OK` only) lines up to
 * `.CRLF`, buffered. `stream`: like `multi`, but the body is emitted as unstuffed bytes.
 */
export type ReplyKind = 'single' | 'multi' | 'stream';

/** What feeding the parser yields: whole replies (`single`, `multi`), or a streamed body's status, data and end (`stream`). */
export type ParserEvent =
  | { readonly type: 'reply'; readonly reply: Pop3Reply }
  /** `stream` only: the status line; a body follows when it is `+OK`. */
  | { readonly type: 'status'; readonly status: Pop3StatusLine }
  /** `stream` only: body bytes, dot-unstuffed, CRLFs kept. Slices of the input: do not mutate. */
  | { readonly type: 'data'; readonly chunk: Buffer }
  /** `stream` only: the terminating `.CRLF` was seen. */
  | { readonly type: 'end' };

/** Bounds of the parser, so that a hostile or broken server cannot make it buffer without end. */
export interface ParserLimits {
  /** Longest line (without CRLF) outside a streamed body. RFC 2449 says 512 octets; servers exceed it. */
  maxLineBytes?: number;
  /** Most bytes a buffered multi-line reply may hold. */
  maxBufferedBytes?: number;
  /** The mailbox, for the errors' `subject`. */
  subject?: string;
}

export const DEFAULT_MAX_LINE_BYTES = 64 * 1024;
export const DEFAULT_MAX_BUFFERED_BYTES = 16 * 1024 * 1024;

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;
const CR_BYTE = [CR];

/** Body-scanning states. `bol`: at the start of a line; `dot`: saw `.` there; `dotCr`: saw `.CR`. */
type BodyState = 'bol' | 'mid' | 'dot' | 'dotCr';

type Phase =
  | { kind: 'idle' }
  | { kind: 'status'; reply: ReplyKind }
  | { kind: 'lines'; lines: Buffer[]; bytes: number; status: Pop3StatusLine }
  | { kind: 'body'; state: BodyState; prevCr: boolean };

function protocolError(detail: string, subject?: string): PostroomError {
  return new PostroomError('ProtocolError', detail, { subject });
}

/** Parses one status line (without CRLF); throws `ProtocolError` when it is neither `+OK`, `-ERR` nor `+`. */
export function parseStatusLine(line: Buffer, subject?: string): Pop3StatusLine {
  // Server text is 7-bit in practice; latin1 never throws and keeps one char per octet.
  const s = line.toString('latin1');
  const m = /^(\+OK|-ERR)(?: (.*)|)$/is.exec(s);
  if (m) return { status: m[1].toUpperCase() === '+OK' ? '+OK' : '-ERR', text: m[2] ?? '' };
  const c = /^\+(?: (.*)|)$/s.exec(s);
  if (c) return { status: '+', text: (c[1] ?? '').trim() };
  throw protocolError(`malformed status line ${JSON.stringify(s.slice(0, 80))}`, subject);
}

export class Pop3ReplyParser {
  private phase: Phase = { kind: 'idle' };
  /** Bytes of an unfinished line (status or buffered body), or unsolicited bytes while idle. */
  private partial: Buffer[] = [];
  private partialBytes = 0;
  private readonly maxLine: number;
  private readonly maxBuffered: number;
  private readonly subject: string | undefined;

  constructor(limits: ParserLimits = {}) {
    this.subject = limits.subject;
    this.maxLine = limits.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES;
    this.maxBuffered = limits.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED_BYTES;
  }

  /** Whether a reply is being waited for. */
  get busy(): boolean {
    return this.phase.kind !== 'idle';
  }

  /** Whether bytes were received that no reply has claimed yet. */
  get hasPending(): boolean {
    return this.partialBytes > 0;
  }

  /**
   * Announces the next reply's shape and returns the events that bytes
   * already received (and held while idle) produce.
   */
  expect(kind: ReplyKind): ParserEvent[] {
    if (this.phase.kind !== 'idle') throw new TypeError('a reply is already expected');
    this.phase = { kind: 'status', reply: kind };
    if (this.partialBytes === 0) return [];
    const held = Buffer.concat(this.partial, this.partialBytes);
    this.partial = [];
    this.partialBytes = 0;
    return this.push(held);
  }

  /** Feeds received bytes; returns the events they complete. Throws `ProtocolError` on a malformed reply. */
  push(chunk: Buffer): ParserEvent[] {
    const events: ParserEvent[] = [];
    let i = 0;
    while (i < chunk.length) {
      const phase = this.phase;
      if (phase.kind === 'idle') {
        // Unsolicited bytes: keep them for the next reply, but never without bound.
        this.hold(chunk.subarray(i));
        return events;
      }
      if (phase.kind === 'body') {
        i = this.scanBody(phase, chunk, i, events);
        continue;
      }
      const nl = chunk.indexOf(LF, i);
      if (nl === -1) {
        this.hold(chunk.subarray(i));
        return events;
      }
      const line = this.takeLine(chunk.subarray(i, nl));
      i = nl + 1;
      if (phase.kind === 'status') this.onStatus(phase.reply, line, events);
      else this.onBodyLine(phase, line, events);
    }
    return events;
  }

  private hold(bytes: Buffer): void {
    if (bytes.length === 0) return;
    this.partialBytes += bytes.length;
    if (this.partialBytes > this.maxLine + 1) {
      throw protocolError(`a line is longer than ${this.maxLine} bytes`, this.subject);
    }
    this.partial.push(bytes);
  }

  /** Joins held bytes with the line's rest; strips the CR of CRLF. */
  private takeLine(rest: Buffer): Buffer {
    let line = rest;
    if (this.partialBytes > 0) {
      this.partial.push(rest);
      line = Buffer.concat(this.partial, this.partialBytes + rest.length);
      this.partial = [];
      this.partialBytes = 0;
    }
    if (line.length > 0 && line[line.length - 1] === CR) line = line.subarray(0, line.length - 1);
    if (line.length > this.maxLine) throw protocolError(`a line is longer than ${this.maxLine} bytes`, this.subject);
    return line;
  }

  private onStatus(kind: ReplyKind, line: Buffer, events: ParserEvent[]): void {
    const status = parseStatusLine(line, this.subject);
    if (status.status !== '+OK' || kind === 'single') {
      this.phase = { kind: 'idle' };
      if (kind === 'stream') events.push({ type: 'status', status });
      else events.push({ type: 'reply', reply: status });
      return;
    }
    if (kind === 'multi') {
      this.phase = { kind: 'lines', lines: [], bytes: 0, status };
    } else {
      this.phase = { kind: 'body', state: 'bol', prevCr: false };
      events.push({ type: 'status', status });
    }
  }

  private onBodyLine(phase: Extract<Phase, { kind: 'lines' }>, line: Buffer, events: ParserEvent[]): void {
    if (line.length > 0 && line[0] === DOT) {
      if (line.length === 1) {
        this.phase = { kind: 'idle' };
        events.push({ type: 'reply', reply: { ...phase.status, lines: phase.lines } });
        return;
      }
      line = line.subarray(1);
    }
    phase.bytes += line.length + 2;
    if (phase.bytes > this.maxBuffered) {
      throw protocolError(`a multi-line reply is larger than ${this.maxBuffered} bytes`, this.subject);
    }
    // Copy: the line may be a slice of a large socket chunk we must not pin.
    phase.lines.push(Buffer.from(line));
  }

  /**
   * Streams body bytes from `chunk[i..]`, removing the stuffed dot at the
   * start of a line (RFC 1939 §3) and stopping after `CRLF.CRLF`. A line
   * starts after CRLF only; emitted data are slices of `chunk`.
   */
  private scanBody(phase: Extract<Phase, { kind: 'body' }>, chunk: Buffer, i: number, events: ParserEvent[]): number {
    const len = chunk.length;
    let seg = phase.state === 'bol' || phase.state === 'mid' ? i : -1;
    const flush = (end: number) => {
      if (seg !== -1 && end > seg) events.push({ type: 'data', chunk: chunk.subarray(seg, end) });
      seg = -1;
    };
    while (i < len) {
      switch (phase.state) {
        case 'bol':
          if (chunk[i] === DOT) {
            flush(i);
            phase.state = 'dot';
            i++;
          } else {
            phase.state = 'mid';
            phase.prevCr = false;
          }
          break;
        case 'dot':
          if (chunk[i] === CR) {
            phase.state = 'dotCr';
            i++;
          } else {
            // A stuffed dot: drop it, the line's content starts here.
            phase.state = 'mid';
            phase.prevCr = false;
            seg = i;
          }
          break;
        case 'dotCr':
          if (chunk[i] === LF) {
            this.phase = { kind: 'idle' };
            events.push({ type: 'end' });
            return i + 1;
          }
          // ".CR" then not LF: a line "." + more characters, so the dot was stuffing.
          events.push({ type: 'data', chunk: Buffer.from(CR_BYTE) });
          phase.state = 'mid';
          phase.prevCr = true;
          seg = i;
          break;
        case 'mid':
          if (seg === -1) seg = i;
          i = toLineEnd(phase, chunk, i);
          break;
      }
    }
    flush(len);
    return len;
  }

  /** Forgets everything (after the connection is gone). */
  reset(): void {
    this.phase = { kind: 'idle' };
    this.partial = [];
    this.partialBytes = 0;
  }
}

/** Skips to just past the next LF of a body line; a CRLF makes the next byte a line start (a bare LF does not). */
function toLineEnd(phase: { state: string; prevCr: boolean }, chunk: Buffer, i: number): number {
  const nl = chunk.indexOf(LF, i);
  if (nl === -1) {
    phase.prevCr = chunk[chunk.length - 1] === CR;
    return chunk.length;
  }
  const crlf = nl > i ? chunk[nl - 1] === CR : phase.prevCr;
  if (crlf) phase.state = 'bol';
  else phase.prevCr = false;
  return nl + 1;
}
