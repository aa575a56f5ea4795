import { setMaxListeners } from 'node:events';
import { PostroomError } from '../errors.js';

/** Options of {@link startPollClock}. */
export interface PollClockOptions {
  /** When the poll stops reading new batches (what is in flight is finished and acknowledged). */
  readonly deadlineMs: number;
  /** How long after the deadline everything in flight is aborted. */
  readonly graceMs: number;
  /** Without progress this long, the lease is no longer renewed (a hang lets it expire). */
  readonly stallMs: number;
  /** Aborts the poll from outside (the lease lost, the host shutting down). */
  readonly signals: readonly AbortSignal[];
  /** What the poll is for, in errors. */
  readonly subject: string;
  /** In-flight requests that listen on the signals (a warning above Node's default of 10 is noise). */
  readonly listeners: number;
}

/** The time budget of one poll: a soft deadline, a hard one, and whether it still moves. */
export interface PollClock {
  /** Fires at the deadline: read no new batch. */
  readonly stop: AbortSignal;
  /** Fires at the deadline + grace, or from outside: abort everything. */
  readonly signal: AbortSignal;
  /** Milliseconds left before the soft deadline. */
  remainingMs(): number;
  /** Notes progress (a batch read, a message written, a batch acknowledged). */
  progress(): void;
  /** Whether the lease should still be renewed: before the hard deadline, and progress seen lately. */
  alive(): boolean;
  /** Clears the timers; call once the poll has ended (the signals then stay as they are). */
  dispose(): void;
}

/**
 * Starts a poll's clock. Every await of the poll takes `signal`, so a poll
 * ends by `deadlineMs + graceMs` whatever the servers do; a poll that is
 * stuck anyway stops renewing its lease, so another instance can take over.
 */
export function startPollClock(o: PollClockOptions, now: () => number = Date.now): PollClock {
  const started = now();
  const stopper = new AbortController();
  const hard = new AbortController();
  const deadline = new PostroomError('DeadlineReached', `the poll reached its deadline of ${Math.round(o.deadlineMs / 1000)} s`, { subject: o.subject });
  const softTimer = setTimeout(() => stopper.abort(deadline), o.deadlineMs);
  const hardTimer = setTimeout(() => hard.abort(deadline), o.deadlineMs + o.graceMs);
  const signal = AbortSignal.any([hard.signal, ...o.signals]);
  const stop = AbortSignal.any([stopper.signal, signal]);
  setMaxListeners(Math.max(32, o.listeners), signal, stop);
  let lastProgress = started;
  return {
    stop,
    signal,
    remainingMs: () => Math.max(0, started + o.deadlineMs - now()),
    progress: () => {
      lastProgress = now();
    },
    alive: () => !signal.aborted && now() - lastProgress < o.stallMs,
    dispose: () => {
      clearTimeout(softTimer);
      clearTimeout(hardTimer);
    },
  };
}
