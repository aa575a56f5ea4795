/**
 * Runs poller-child.js in a child process and follows its JSON events, so a
 * test can SIGKILL a real poll at a chosen moment (nothing of the poll's
 * `finally` blocks runs: the lease stays held until it expires).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';

const CHILD = fileURLToPath(new URL('./poller-child.js', import.meta.url));

/** One event of the child (see poller-child.ts). */
export interface PollerEvent {
  e: 'leased' | 'session' | 'ack' | 'done' | 'crash';
  n?: number;
  outcome?: string;
  delivered?: number;
  code?: string;
  message?: string;
  stopped?: string;
  durationMs?: number;
  /** Milliseconds since the child was spawned (added by the parent). */
  at: number;
}

/** A running poller process. */
export interface PollerProcess {
  readonly child: ChildProcess;
  /** Events so far, in order. */
  readonly events: PollerEvent[];
  /** Resolves with the first event matching `pred` (or undefined when the child exits first). */
  waitFor(pred: (e: PollerEvent) => boolean): Promise<PollerEvent | undefined>;
  /** SIGKILL; resolves once the process is gone. */
  kill(): Promise<void>;
  /** Resolves when the process has exited, with its exit code or signal. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** The child's log lines (stderr), for failure messages. */
  stderr(): string;
}

/** Starts a poller over `env` (the `POSTROOM_*` settings; the parent's PATH etc. are kept). */
export function startPollerProcess(env: Record<string, string>): PollerProcess {
  const started = Date.now();
  const child = spawn(process.execPath, [CHILD], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const events: PollerEvent[] = [];
  const waiters: Array<{ pred: (e: PollerEvent) => boolean; resolve: (e: PollerEvent | undefined) => void }> = [];
  let err = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    err = (err + d).slice(-20_000);
  });
  createInterface({ input: child.stdout }).on('line', (line) => {
    let ev: PollerEvent;
    try {
      ev = { ...(JSON.parse(line) as PollerEvent), at: Date.now() - started };
    } catch {
      return;
    }
    events.push(ev);
    for (const w of waiters.splice(0)) {
      if (w.pred(ev)) w.resolve(ev);
      else waiters.push(w);
    }
  });
  // 'close', not 'exit': by then every line the child wrote has been read, so a kill that came too late shows its 'done'.
  const exited = once(child, 'close').then(([code, signal]) => {
    for (const w of waiters.splice(0)) w.resolve(undefined);
    return { code: code as number | null, signal: signal as NodeJS.Signals | null };
  });
  return {
    child,
    events,
    exited,
    waitFor(pred) {
      const seen = events.find(pred);
      if (seen) return Promise.resolve(seen);
      if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(undefined);
      return new Promise((resolve) => waiters.push({ pred, resolve }));
    },
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
    stderr: () => err,
  };
}

export { seededRandom } from './seeded-random.js';
