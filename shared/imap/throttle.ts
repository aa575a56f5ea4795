import type { ImapFlow } from 'imapflow';
import { PostroomError } from '../errors.js';

/**
 * A server back-off the session gave up on: longer than the poll had left.
 * `fail()` reports the session's failures as this `Throttled` error.
 */
export interface ThrottleState {
  /** The back-off (ms) that ended the session, once one did. */
  gaveUpMs?: number;
}

interface ThrottleInternals {
  throttleWait?: (delay: number) => Promise<boolean>;
}

/**
 * imapflow waits out Exchange's "Suggested Backoff Time" itself (up to 5
 * minutes, parking the connection) before it rejects or retries a command.
 * A wait longer than `budgetMs()` (the poll's time left) would only run the
 * poll into its deadline: the connection is closed at once instead, and the
 * session fails as `Throttled` with the whole back-off as `retryAfterMs`, so
 * the job goes back on the queue for that long. Shorter waits are imapflow's
 * (Postroom adds none). Overrides imapflow's internal `throttleWait` (2.1.2,
 * used by the reader and by FETCH retries); without it, nothing changes.
 */
export function limitThrottleWaits(client: ImapFlow, budgetMs: () => number, state: ThrottleState): void {
  const c = client as unknown as ThrottleInternals;
  const wait = c.throttleWait?.bind(client);
  if (!wait) return;
  c.throttleWait = async (delay: number) => {
    if (!(delay > budgetMs())) return wait(delay);
    state.gaveUpMs = delay;
    client.close();
    return true; // "aborted": imapflow rejects the command with a connection error
  };
}

/** The error of a session that gave up on a back-off. */
export function throttledError(delayMs: number, subject: string, cause?: unknown): PostroomError {
  return new PostroomError('Throttled', `the server asked to back off ${delayMs} ms, longer than the poll had left`, { subject, retryAfterMs: delayMs, cause });
}
