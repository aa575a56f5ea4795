/**
 * Downloads one large message as a series of partial fetches (`UID FETCH n BODY.PEEK[]<off.len>`)
 * kept queued back to back, with windows sized from the link, as a Readable with backpressure.
 *
 * Why not true pipelining: imapflow (2.1.2) keeps one command in flight per connection
 * (`trySend()` sends the next queued command only after the tagged reply of the previous one),
 * and one FETCH cannot carry several `BODY[]<o.l>` ranges of one message through its public API
 * (its response map keys body parts without their origin, so ranges overwrite each other).
 * So every window costs one round trip on the wire. What this module does about it:
 * - two windows are queued in imapflow at once (and at most `maxInFlight` bytes requested and not
 *   yet read), so the next FETCH leaves the moment the previous reply ends, never waiting for the
 *   consumer (parser, hash, upload): the consumer works during the round trips. More would not
 *   go out sooner (one command on the wire) and only hold finished windows in memory;
 * - the window grows (doubling from `window` to `maxWindow`) while a doubled window costs clearly
 *   less time per byte than the one before, i.e. while the round trip, not the transfer,
 *   dominates. On loopback it stays small; at 40 ms it reaches `maxWindow`, so a 50 MB message
 *   takes ~15 round trips instead of ~96.
 * Memory is bounded by `maxInFlight` (+ one window imapflow assembles), whatever the message size.
 * The size from RFC822.SIZE is a hint: fetching goes on until a window comes back short.
 */
import { Readable } from 'node:stream';
import type { ImapFlow } from 'imapflow';
import { PostroomError } from '../errors.js';

/** Options of {@link partialDownload}. */
export interface PartialDownloadOptions {
  /** The message's UID (the folder is already selected). */
  uid: number;
  /** RFC822.SIZE, a hint: the download ends at the first short window. */
  size: number;
  /** First window, bytes. Default 512 KiB. */
  window?: number;
  /** Largest window, bytes. Default 4 MiB. */
  maxWindow?: number;
  /** Bytes requested but not yet read by the consumer, at most (at least one window). Default 8 MiB. */
  maxInFlight?: number;
  /** Windows requested but not yet read by the consumer, at most. Default 2: one on the wire, one ready or being read. */
  maxQueued?: number;
  /** Size of the Buffers handed on (copied out of a window). Default 64 KiB. */
  piece?: number;
  /** Who the download is for, in errors (e.g. `mailbox a@b (INBOX) via host:993`). */
  subject?: string;
  /** Aborting destroys the stream with the signal's reason. */
  signal?: AbortSignal;
  /** Turns a failed window (a dropped connection, a BYE) into the error the reader sees; default: as it is. */
  mapError?: (e: unknown) => Error;
}

interface Window {
  start: number;
  length: number;
  data: Promise<Buffer>;
}

/** What partialDownload needs of an ImapFlow. */
export type PartialFetchClient = Pick<ImapFlow, 'fetchOne'>;

/**
 * Streams message `uid` in pipelined-as-imapflow-allows partial fetches.
 *
 * @example
 * ```ts
 * const body = partialDownload(client, { uid: 42, size: meta.size, signal });
 * await pipeline(body, sink);
 * ```
 */
export function partialDownload(client: PartialFetchClient, o: PartialDownloadOptions): Readable {
  if (!Number.isInteger(o.uid) || o.uid < 1) throw new TypeError(`partialDownload: uid must be a positive integer, got ${o.uid}`);
  const d = new WindowedDownload(client, o);
  const onAbort = () => d.stream.destroy(o.signal!.reason instanceof Error ? o.signal!.reason : new Error('download aborted'));
  d.stream = new Readable({
    highWaterMark: d.piece,
    read() {
      d.wantMore = true;
      d.issue();
      void d.pump();
    },
    destroy(err, cb) {
      d.destroyed = true;
      o.signal?.removeEventListener('abort', onAbort);
      cb(err);
    },
  });
  if (o.signal?.aborted) queueMicrotask(onAbort);
  else o.signal?.addEventListener('abort', onAbort, { once: true });
  return d.stream;
}

/** The state of one download: windows requested, in flight, and handed on in order. */
class WindowedDownload {
  readonly piece: number;
  readonly #maxWindow: number;
  readonly #maxInFlight: number;
  readonly #maxQueued: number;
  readonly #sizer: ReturnType<typeof windowSizer>;
  readonly #queue: Window[] = [];
  #window: number;
  #hint: number;
  #next = 0;
  #outstanding = 0;
  #ended = false;
  #pumping = false;
  destroyed = false;
  wantMore = true;
  stream!: Readable;

  constructor(
    private readonly client: PartialFetchClient,
    private readonly o: PartialDownloadOptions,
  ) {
    this.#maxWindow = o.maxWindow ?? 4 * 1024 * 1024;
    this.#maxInFlight = Math.max(o.maxInFlight ?? 8 * 1024 * 1024, this.#maxWindow);
    this.#maxQueued = Math.max(1, o.maxQueued ?? 2);
    this.piece = o.piece ?? 64 * 1024;
    this.#window = Math.min(o.window ?? 512 * 1024, this.#maxWindow);
    this.#hint = Math.max(1, o.size);
    this.#sizer = windowSizer(
      () => this.#window,
      (w) => (this.#window = Math.min(this.#maxWindow, w)),
    );
  }

  #request(start: number, length: number): Window {
    const { o } = this;
    const issued = performance.now();
    const data = this.client.fetchOne(String(o.uid), { uid: true, source: { start, maxLength: length } }, { uid: true }).then((msg) => {
      this.#sizer.completed(issued, length);
      // No FETCH response at all: the message was expunged (a window past the end still answers, empty).
      if (!msg) throw new PostroomError('CommandFailed', `message UID ${o.uid} is gone`, { subject: o.subject });
      return msg.source ?? Buffer.alloc(0);
    });
    data.catch(() => undefined); // observed by pump() in order; an unread window must not be an unhandled rejection
    return { start, length, data };
  }

  /** Queues windows while the in-flight budget allows; past the size hint only once the window at the hint came back full. */
  issue(): void {
    while (!this.destroyed && !this.#ended && this.#next < this.#hint && this.#roomFor(this.#window)) {
      // Never clipped to the hint: a last window that comes back short ends the download without
      // one more round trip, and one that comes back full shows the hint was short.
      const length = this.#window;
      this.#queue.push(this.#request(this.#next, length));
      this.#next += length;
      this.#outstanding += length;
    }
  }

  /**
   * Pushes the whole window as pieces. Copies, not views, and all at once: a window kept until its
   * last piece is read (a view, or pieces pushed with backpressure) outlives a few scavenges, is
   * promoted, and windows pile up as external memory until a full GC (bench figure 3: +30 MiB
   * peak RSS). Copies die young downstream; the window dies here.
   */
  #handOn(buf: Buffer): void {
    for (let i = 0; i < buf.length; i += this.piece) this.wantMore = this.stream.push(Buffer.from(buf.subarray(i, i + this.piece))) && this.wantMore;
  }

  #roomFor(length: number): boolean {
    if (!this.#queue.length) return true;
    return this.#queue.length < this.#maxQueued && this.#outstanding + length <= this.#maxInFlight;
  }

  /** Hands windows on in order, in `piece`-sized pieces, as long as the reader wants more. */
  async pump(): Promise<void> {
    if (this.#pumping) return;
    this.#pumping = true;
    try {
      while (!this.destroyed && this.wantMore && this.#queue.length) {
        const w = this.#queue[0];
        const buf = await w.data;
        this.#queue.shift();
        this.#outstanding -= w.length;
        if (this.destroyed) return;
        this.#handOn(buf);
        if (buf.length < w.length) this.#ended = true;
        else if (!this.#queue.length && this.#next >= this.#hint) this.#hint += this.#window;
        this.issue();
      }
      if (this.destroyed || this.#queue.length) return;
      if (this.#ended) this.stream.push(null);
      else {
        this.#hint = Math.max(this.#hint, this.#next + 1);
        this.issue();
      }
    } catch (e) {
      this.stream.destroy(this.o.mapError ? this.o.mapError(e) : (e as Error));
    } finally {
      this.#pumping = false;
    }
  }
}

/**
 * Grows the window while it is latency-bound: each completed window's service time (from the
 * later of its issue and the previous completion, i.e. the time the link spent on it) per byte
 * is compared with that of the last window of a smaller size (windows of one size queued together
 * say nothing about doubling); doubling stops once a doubled window costs more than 60% as much
 * per byte (more than 1.2 times the time of the smaller one), i.e. once transfer time, not the
 * round trip, is what a window waits for. On loopback that is at once (0.7–1.5); at 40 ms, 0.55.
 *
 * @example
 * const sizer = windowSizer(() => w, (next) => (w = next));
 * sizer.completed(issuedAt, w); // after each window's reply
 */
export function windowSizer(get: () => number, set: (w: number) => void, now: () => number = () => performance.now()) {
  let lastDone = 0;
  let measuredLength = 0;
  let measuredPerByte = 0;
  let growing = true;
  return {
    /** Records one window's reply: `issued` is when it was requested, `length` its size. */
    completed(issued: number, length: number) {
      const done = now();
      const service = Math.max(0.01, done - Math.max(issued, lastDone));
      lastDone = done;
      if (!growing || length <= measuredLength) return;
      const perByte = service / length;
      if (measuredPerByte && perByte > 0.6 * measuredPerByte) {
        growing = false;
        return;
      }
      measuredLength = length;
      measuredPerByte = perByte;
      if (length >= get()) set(get() * 2);
    },
  };
}
