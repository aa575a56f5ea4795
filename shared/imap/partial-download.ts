/**
 * Downloads one large message as a series of partial fetches (`UID FETCH n BODY.PEEK[]<off.len>`)
 * kept queued back to back, with windows sized from the link, as a Readable with backpressure.
 *
 * Why not true pipelining: imapflow (2.1.2) keeps one command in flight per connection
 * (`trySend()` sends the next queued command only after the tagged reply of the previous one),
 * and one FETCH cannot carry several `BODY[]<o.l>` ranges of one message through its public API
 * (its response map keys body parts without their origin, so ranges overwrite each other).
 * So every window costs one round trip on the wire. What this module does about it:
 * - several windows are queued in imapflow at once (up to `maxInFlight` bytes requested and not
 *   yet read), so the next FETCH leaves the moment the previous reply ends, never waiting for the
 *   consumer (parser, hash, upload): the consumer works during the round trips;
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
  /** Size of the Buffers handed on (zero-copy slices of a window). Default 64 KiB. */
  piece?: number;
  /** Who the download is for, in errors (e.g. `mailbox a@b (INBOX) via host:993`). */
  subject?: string;
  /** Aborting destroys the stream with the signal's reason. */
  signal?: AbortSignal;
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
  const maxWindow = o.maxWindow ?? 4 * 1024 * 1024;
  const maxInFlight = Math.max(o.maxInFlight ?? 8 * 1024 * 1024, maxWindow);
  const piece = o.piece ?? 64 * 1024;
  let window = Math.min(o.window ?? 512 * 1024, maxWindow);
  let hint = Math.max(1, o.size);
  let next = 0;
  let outstanding = 0;
  let ended = false;
  let destroyed = false;
  let pumping = false;
  let wantMore = true;
  const queue: Window[] = [];
  const sizer = windowSizer(
    () => window,
    (w) => (window = Math.min(maxWindow, w)),
  );

  const request = (start: number, length: number): Window => {
    const issued = performance.now();
    const data = client.fetchOne(String(o.uid), { uid: true, source: { start, maxLength: length } }, { uid: true }).then((msg) => {
      sizer.completed(issued, length);
      // No FETCH response at all: the message was expunged (a window past the end still answers, empty).
      if (!msg) throw new PostroomError('CommandFailed', `message UID ${o.uid} is gone`, { subject: o.subject });
      return msg.source ?? Buffer.alloc(0);
    });
    data.catch(() => undefined); // observed by pump() in order; an unread window must not be an unhandled rejection
    return { start, length, data };
  };

  const issue = () => {
    // Past the size hint only once the window at the hint came back full (the hint was short).
    while (!destroyed && !ended && next < hint && (outstanding + window <= maxInFlight || !queue.length)) {
      // Never clipped to the hint: a last window that comes back short ends the download without
      // one more round trip, and one that comes back full shows the hint was short.
      const length = window;
      queue.push(request(next, length));
      next += length;
      outstanding += length;
    }
  };

  const pump = async () => {
    if (pumping) return;
    pumping = true;
    try {
      while (!destroyed && wantMore && queue.length) {
        const w = queue[0];
        const buf = await w.data;
        queue.shift();
        outstanding -= w.length;
        if (destroyed) return;
        for (let i = 0; i < buf.length; i += piece) wantMore = stream.push(buf.subarray(i, i + piece)) && wantMore;
        if (buf.length < w.length) ended = true;
        else if (!queue.length && next >= hint) hint += window;
        issue();
      }
      if (!destroyed && ended && !queue.length) stream.push(null);
      else if (!destroyed && !queue.length && !ended) {
        hint = Math.max(hint, next + 1);
        issue();
      }
    } catch (e) {
      stream.destroy(e as Error);
    } finally {
      pumping = false;
    }
  };

  const stream = new Readable({
    highWaterMark: piece,
    read() {
      wantMore = true;
      issue();
      void pump();
    },
    destroy(err, cb) {
      destroyed = true;
      o.signal?.removeEventListener('abort', onAbort);
      cb(err);
    },
  });
  const onAbort = () => stream.destroy(o.signal!.reason instanceof Error ? o.signal!.reason : new Error('download aborted'));
  if (o.signal?.aborted) queueMicrotask(onAbort);
  else o.signal?.addEventListener('abort', onAbort, { once: true });
  return stream;
}

/**
 * Grows the window while it is latency-bound: each completed window's service time (from the
 * later of its issue and the previous completion, i.e. the time the link spent on it) per byte
 * is compared with the previous one's; doubling stops once a doubled window costs more than 75%
 * as much per byte, i.e. once transfer time dominates the round trip.
 */
function windowSizer(get: () => number, set: (w: number) => void) {
  let lastDone = 0;
  let lastPerByte = 0;
  let growing = true;
  return {
    completed(issued: number, length: number) {
      const done = performance.now();
      const service = Math.max(0.01, done - Math.max(issued, lastDone));
      lastDone = done;
      const perByte = service / length;
      if (growing && lastPerByte && perByte > 0.75 * lastPerByte) growing = false;
      lastPerByte = perByte;
      if (growing && length >= get()) set(get() * 2);
    },
  };
}
