/**
 * A sliding-window limiter: at most `limit` acquisitions in any `windowMs`,
 * plus a hold (`pause`) after the server asked to back off. Exchange Online
 * allows 30 messages a minute per sender mailbox; this paces one process.
 */
export interface RateLimiter {
  /** Resolves when a send may start; rejects if `signal` aborts first. */
  acquire(signal?: AbortSignal): Promise<void>;
  /** No acquisition before `ms` from now (after a 432 4.3.2). */
  pause(ms: number): void;
  /** Milliseconds until the next acquisition could start (0 = now). */
  waitMs(): number;
}

/** Options of `createRateLimiter`. */
export interface RateLimiterOptions {
  /** Acquisitions allowed in any window; at least 1 (the SMTP sender uses 30). */
  limit: number;
  /** Length of the sliding window in milliseconds (the SMTP sender uses 60000). */
  windowMs: number;
  /** Clock in epoch milliseconds; default `Date.now` (tests inject one). */
  now?: () => number;
}

export function createRateLimiter(o: RateLimiterOptions): RateLimiter {
  if (!(o.limit >= 1) || !(o.windowMs > 0)) throw new TypeError('limit must be >= 1 and windowMs > 0');
  const now = o.now ?? Date.now;
  const starts: number[] = [];
  let pausedUntil = 0;
  // Waiters are served in order so that a burst cannot starve an early caller.
  let chain: Promise<void> = Promise.resolve();

  const waitMs = (): number => {
    const t = now();
    while (starts.length && starts[0] <= t - o.windowMs) starts.shift();
    const byWindow = starts.length < o.limit ? 0 : starts[0] + o.windowMs - t;
    return Math.max(0, byWindow, pausedUntil - t);
  };

  const sleep = (ms: number, signal?: AbortSignal) =>
    new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason as Error);
      const timer = setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      const onAbort = () => {
        clearTimeout(timer);
        reject(signal!.reason as Error);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
    });

  return {
    acquire(signal) {
      const turn = chain.then(async () => {
        for (let w = waitMs(); w > 0; w = waitMs()) await sleep(w, signal);
        starts.push(now());
      });
      // A rejected (aborted) waiter must not block those behind it.
      chain = turn.catch(() => undefined);
      return turn;
    },
    pause(ms) {
      pausedUntil = Math.max(pausedUntil, now() + ms);
    },
    waitMs,
  };
}
