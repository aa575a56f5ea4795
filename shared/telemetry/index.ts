/**
 * Postroom's telemetry seam. This module is cheap to import: OpenTelemetry and the
 * Azure Monitor distro are loaded (from ./otel.js) only when
 * `APPLICATIONINSIGHTS_CONNECTION_STRING` is set, on first use. Without it every
 * call is a no-op and no OpenTelemetry code is ever loaded (cold start).
 */
import type { TokenCredential } from '@azure/core-auth';
import type { LogRecordProcessor } from '@opentelemetry/sdk-logs';
import type { MetricReader } from '@opentelemetry/sdk-metrics';
import type { LogLevel } from '../logger.js';

/** How one poll ended, as recorded in metrics. */
export interface PollFinishedOptions {
  /** Wall time of the whole poll (lease to status), in ms. */
  durationMs: number;
  /** The `outcome` dimension of `postroom.poll.duration`: `leased` when another instance held the mailbox. */
  outcome: 'ok' | 'failed' | 'leased';
  /** The PostroomError code when `outcome` is `failed`. */
  code?: string;
  /** At poll end: now − receivedAt of the oldest message read but not acknowledged, else 0 (see {@link LagTracker}). */
  lagMs: number;
}

/** Per-mailbox metrics; every method is cheap, synchronous and never throws. */
export interface PostroomMetrics {
  /** One message durably written (blob + queue) and acknowledged. */
  messageIngested(mailboxId: string, bytes: number): void;
  /** One poll ended. */
  pollFinished(mailboxId: string, o: PollFinishedOptions): void;
  /** One app token handed out; `cached: false` means the login host was asked. */
  tokenRequested(appName: string, o?: { cached?: boolean }): void;
  /** One storage write took `ms` (success or failure: `ok`). */
  storageWrite(kind: 'blob' | 'queue', ms: number, o?: { ok?: boolean }): void;
}

/** One log line as the logger hands it to telemetry: fields already filtered and redacted. */
export interface TelemetryLogRecord {
  /** Severity; maps to the trace's severity level. */
  level: LogLevel;
  /** The log text, redacted. */
  message: string;
  /** Structured fields, credential-like keys dropped and values redacted (they become `customDimensions`); `category` is the logger's prefix, when it has one. */
  fields: Record<string, unknown>;
  /** W3C traceparent of the Functions invocation, to correlate with the host's request. */
  traceParent?: string;
}

/** A started telemetry pipeline. */
export interface Telemetry {
  /** Records Postroom's metrics (meter `postroom`) to the pipeline. */
  readonly metrics: PostroomMetrics;
  /** Sends one log line as an OpenTelemetry log record (a trace in Application Insights). */
  emitLog(record: TelemetryLogRecord): void;
  /** Exports what is buffered (end of an invocation, tests). */
  flush(): Promise<void>;
  /** Flushes and stops the pipeline; it records nothing afterwards. */
  shutdown(): Promise<void>;
}

/** Options of {@link startTelemetry}; the seams after `env` exist for tests. */
export interface StartTelemetryOptions {
  /** Where APPLICATIONINSIGHTS_CONNECTION_STRING and _AUTHENTICATION_STRING are read; default `process.env`. */
  env?: NodeJS.ProcessEnv;
  /** Replaces the managed identity credential built from APPLICATIONINSIGHTS_AUTHENTICATION_STRING. */
  credential?: TokenCredential;
  /** Extra metric readers (tests: an in-memory exporter), next to Azure Monitor's. */
  metricReaders?: MetricReader[];
  /** Extra log processors (tests: an in-memory exporter), next to Azure Monitor's. */
  logRecordProcessors?: LogRecordProcessor[];
  /** Extra Azure Monitor exporter options (tests: `tlsOptions` for a local HTTPS ingestion endpoint). */
  exporterOptions?: Record<string, unknown>;
}

const noop = (): void => undefined;
/** The implementation used while telemetry is off. */
export const noopMetrics: PostroomMetrics = { messageIngested: noop, pollFinished: noop, tokenRequested: noop, storageWrite: noop };

/** Entra auth for Application Insights, parsed from `Authorization=AAD;ClientId=<id>` (no ClientId: system-assigned identity). */
export interface AppInsightsAuth {
  /** Always true: the string asked for Entra (`Authorization=AAD`) ingestion auth. */
  aad: boolean;
  /** Client id of the user-assigned managed identity to authenticate with; absent: the system-assigned identity. */
  clientId?: string;
}

/** Parses APPLICATIONINSIGHTS_AUTHENTICATION_STRING (keys case-insensitive); undefined when unset or not AAD. */
export function parseAuthenticationString(value: string | undefined): AppInsightsAuth | undefined {
  if (!value?.trim()) return undefined;
  const parts = new Map<string, string>();
  for (const pair of value.split(';')) {
    const i = pair.indexOf('=');
    if (i > 0) parts.set(pair.slice(0, i).trim().toLowerCase(), pair.slice(i + 1).trim());
  }
  if (parts.get('authorization')?.toUpperCase() !== 'AAD') return undefined;
  const clientId = parts.get('clientid');
  return clientId ? { aad: true, clientId } : { aad: true };
}

/** True when this process exports telemetry (the connection string is set). */
export function telemetryEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  return !!env.APPLICATIONINSIGHTS_CONNECTION_STRING?.trim();
}

// Records made before the pipeline is up (the first lines of a cold start) are kept
// and replayed; bounded so a pipeline that never starts cannot grow memory.
const PENDING_MAX = 1000;
let started: Promise<Telemetry | undefined> | undefined;
let current: Telemetry | undefined;
let pending: ((t: Telemetry) => void)[] = [];
let settled = false;

/**
 * Starts the pipeline once per process (later calls return the same promise).
 * Resolves undefined when telemetry is off or could not start; never rejects:
 * telemetry must not stop a poll.
 */
export function startTelemetry(options: StartTelemetryOptions = {}): Promise<Telemetry | undefined> {
  started ??= (async () => {
    const env = options.env ?? process.env;
    if (!telemetryEnabled(env)) return undefined;
    try {
      const { createOtelTelemetry } = await import('./otel.js');
      current = await createOtelTelemetry({ ...options, env });
    } catch (e) {
      process.stderr.write(`postroom: telemetry could not start; continuing without it (${(e as Error)?.message ?? e})\n`);
    }
    settled = true;
    const replay = pending;
    pending = [];
    if (current) for (const r of replay) r(current);
    return current;
  })();
  return started;
}

function whenStarted(record: (t: Telemetry) => void): void {
  if (current) return record(current);
  if (settled) return; // off, or failed to start: drop
  if (pending.length < PENDING_MAX) pending.push(record);
  void startTelemetry();
}

const lazyMetrics: PostroomMetrics = {
  messageIngested: (m, b) => whenStarted((t) => t.metrics.messageIngested(m, b)),
  pollFinished: (m, o) => whenStarted((t) => t.metrics.pollFinished(m, o)),
  tokenRequested: (a, o) => whenStarted((t) => t.metrics.tokenRequested(a, o)),
  storageWrite: (k, ms, o) => whenStarted((t) => t.metrics.storageWrite(k, ms, o)),
};

/** The process's metrics: the no-op implementation when telemetry is off. */
export function getMetrics(): PostroomMetrics {
  if (current) return current.metrics;
  return telemetryEnabled() || started ? lazyMetrics : noopMetrics;
}

/** Hands one (already redacted) log line to telemetry; does nothing when telemetry is off. */
export function emitTelemetryLog(record: TelemetryLogRecord): void {
  if (current) return current.emitLog(record);
  if (telemetryEnabled() || started) whenStarted((t) => t.emitLog(record));
}

/** Exports what is buffered; resolves at once when telemetry is off. */
export async function flushTelemetry(): Promise<void> {
  await (await started)?.flush();
}

/** Stops the pipeline and forgets it (tests, process shutdown). */
export async function shutdownTelemetry(): Promise<void> {
  const t = await started;
  started = undefined;
  current = undefined;
  settled = false;
  pending = [];
  await t?.shutdown();
}

/** Times one storage write into `storageWrite` (success and failure alike). */
export async function timeStorageWrite<T>(kind: 'blob' | 'queue', write: () => Promise<T>): Promise<T> {
  const t0 = performance.now();
  let ok = false;
  try {
    const r = await write();
    ok = true;
    return r;
  } finally {
    getMetrics().storageWrite(kind, performance.now() - t0, { ok });
  }
}

/**
 * Tracks the poll's lag: `seen` each message read, `acknowledged` each batch made
 * durable; `lagMs(now)` is now − receivedAt of the oldest message still pending, or 0.
 * Messages a poll never read (past `maxMessagesPerPoll`) are not known to it.
 */
export interface LagTracker {
  /** Returns the message, so a call site can wrap its argument: `deliver(lag.seen(m))`. */
  seen<M extends { id: string; receivedAt?: Date }>(message: M): M;
  /** Forgets the batch's messages once they are durable (acknowledged), so they no longer count as lag. */
  acknowledged(batch: readonly { id: string }[]): void;
  /** Milliseconds from the oldest pending message's `receivedAt` to `now`; 0 when none is pending or none has a date. */
  lagMs(now: Date): number;
}

export function lagTracker(): LagTracker {
  const pendingAt = new Map<string, number>();
  return {
    seen(m) {
      pendingAt.set(m.id, m.receivedAt?.getTime() ?? Number.NaN);
      return m;
    },
    acknowledged(batch) {
      for (const m of batch) pendingAt.delete(m.id);
    },
    lagMs(now) {
      let oldest = Infinity;
      for (const t of pendingAt.values()) if (Number.isFinite(t) && t < oldest) oldest = t;
      return oldest === Infinity ? 0 : Math.max(0, now.getTime() - oldest);
    },
  };
}
