/**
 * The end of an invocation: on Flex Consumption an instance may be frozen or
 * stopped as soon as the host has the function's result, so what telemetry
 * buffered (log batches, metrics between periodic exports) is exported before
 * the handler's promise settles. Cheap to import: it loads no OpenTelemetry code.
 */
import { flushTelemetry, telemetryEnabled } from './index.js';

/** Longest wait for the export at the end of an invocation (the host's timeout is not ours to spend). */
export const FLUSH_TIMEOUT_MS = 2_000;

/** Options of {@link flushTelemetryBounded}; the seams exist for tests. */
export interface FlushTelemetryOptions {
  /** Give up waiting after this many ms; default {@link FLUSH_TIMEOUT_MS}. */
  timeoutMs?: number;
  /** Default `process.env` (telemetry is on when APPLICATIONINSIGHTS_CONNECTION_STRING is set). */
  env?: NodeJS.ProcessEnv;
  /** Default {@link flushTelemetry}. */
  flush?: () => Promise<void>;
}

/** How a bounded flush ended. */
export type FlushOutcome = 'off' | 'flushed' | 'timeout' | 'failed';

/**
 * Exports what telemetry buffered, waiting at most `timeoutMs`; does nothing
 * when telemetry is off. Never throws: telemetry must not fail an invocation.
 */
export async function flushTelemetryBounded(o: FlushTelemetryOptions = {}): Promise<FlushOutcome> {
  if (!telemetryEnabled(o.env)) return 'off';
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<FlushOutcome>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), o.timeoutMs ?? FLUSH_TIMEOUT_MS);
  });
  const flushed = (o.flush ?? flushTelemetry)().then(
    (): FlushOutcome => 'flushed',
    (): FlushOutcome => 'failed',
  );
  try {
    return await Promise.race([flushed, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

const FLUSHES = Symbol.for('postroom.telemetry.flushes');

/**
 * Wraps a function handler so that telemetry is flushed (bounded) when it
 * returns or throws; the handler's result or error is passed on unchanged.
 *
 * @example
 * ```ts
 * app.storageQueue('pollMailbox', { queueName: '%POSTROOM_JOBS_QUEUE%', connection: 'POSTROOM_STORAGE', handler: withTelemetryFlush(pollMailbox) });
 * ```
 */
export function withTelemetryFlush<A extends unknown[], R>(handler: (...args: A) => Promise<R>, options: FlushTelemetryOptions = {}): (...args: A) => Promise<R> {
  const wrapped = async (...args: A): Promise<R> => {
    try {
      return await handler(...args);
    } finally {
      await flushTelemetryBounded(options);
    }
  };
  Object.defineProperty(wrapped, 'name', { value: handler.name });
  return Object.assign(wrapped, { [FLUSHES]: true });
}

/** True for a handler made by {@link withTelemetryFlush} (the registration check in tests). */
export function flushesTelemetry(handler: unknown): boolean {
  return typeof handler === 'function' && (handler as unknown as Record<symbol, unknown>)[FLUSHES] === true;
}
