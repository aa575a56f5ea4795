/**
 * The OpenTelemetry implementation: Azure Monitor distro (logs + metrics to
 * Application Insights, Entra auth), Postroom's instruments, and log records
 * whose fields become attributes (customDimensions). Loaded only by
 * ./index.js when the connection string is set.
 */
import { useAzureMonitor, shutdownAzureMonitor, type AzureMonitorOpenTelemetryOptions } from '@azure/monitor-opentelemetry';
import { metrics, trace, ROOT_CONTEXT, TraceFlags, type Attributes, type Context } from '@opentelemetry/api';
import { logs, SeverityNumber } from '@opentelemetry/api-logs';
import type { TokenCredential } from '@azure/core-auth';
import { redact } from '../errors.js';
import type { LogLevel } from '../logger.js';
import { parseAuthenticationString, type PostroomMetrics, type StartTelemetryOptions, type Telemetry } from './index.js';

/** Meter and logger name: the `cloud_RoleName`-independent scope Postroom's telemetry is found under. */
export const INSTRUMENTATION_SCOPE = 'postroom';

const SEVERITY: Record<LogLevel, SeverityNumber> = {
  debug: SeverityNumber.DEBUG,
  info: SeverityNumber.INFO,
  warn: SeverityNumber.WARN,
  error: SeverityNumber.ERROR,
};

/** Builds the exporter credential: ManagedIdentityCredential with the configured client id when the auth string says AAD. */
export async function exporterCredential(options: StartTelemetryOptions & { env: NodeJS.ProcessEnv }): Promise<TokenCredential | undefined> {
  if (options.credential) return options.credential;
  const auth = parseAuthenticationString(options.env.APPLICATIONINSIGHTS_AUTHENTICATION_STRING);
  if (!auth) return undefined;
  const { ManagedIdentityCredential } = await import('@azure/identity');
  return auth.clientId ? new ManagedIdentityCredential({ clientId: auth.clientId }) : new ManagedIdentityCredential();
}

/** Starts the Azure Monitor distro once for this process and returns Postroom's telemetry over it. */
export async function createOtelTelemetry(options: StartTelemetryOptions & { env: NodeJS.ProcessEnv }): Promise<Telemetry> {
  const credential = await exporterCredential(options);
  const config: AzureMonitorOpenTelemetryOptions = {
    azureMonitorExporterOptions: { ...options.exporterOptions, connectionString: options.env.APPLICATIONINSIGHTS_CONNECTION_STRING!.trim(), ...(credential ? { credential } : {}) },
    // Postroom traces nothing itself; the HTTP/Azure SDK auto-instrumentations would add
    // spans (and URLs) for every storage call at a cold-start and per-call cost. Off.
    instrumentationOptions: {
      http: { enabled: false },
      azureSdk: { enabled: false },
      mongoDb: { enabled: false },
      mySql: { enabled: false },
      postgreSql: { enabled: false },
      redis: { enabled: false },
      redis4: { enabled: false },
      bunyan: { enabled: false },
      winston: { enabled: false },
    },
    enableLiveMetrics: false,
    // A log line is never dropped because the host's invocation trace was sampled out.
    enableTraceBasedSamplingForLogs: false,
    metricReaders: options.metricReaders ?? [],
    logRecordProcessors: options.logRecordProcessors ?? [],
  };
  useAzureMonitor(config);
  const logger = logs.getLogger(INSTRUMENTATION_SCOPE);
  return {
    metrics: createInstruments(),
    emitLog(r) {
      logger.emit({
        severityNumber: SEVERITY[r.level],
        severityText: r.level.toUpperCase(),
        body: redact(r.message),
        attributes: toAttributes(r.fields),
        ...(r.traceParent ? { context: contextFromTraceParent(r.traceParent) } : {}),
      });
    },
    async flush() {
      const providers = [metrics.getMeterProvider(), logs.getLoggerProvider()] as { forceFlush?: () => Promise<void> }[];
      await Promise.all(providers.map((p) => p.forceFlush?.() ?? Promise.resolve()));
    },
    async shutdown() {
      await shutdownAzureMonitor();
    },
  };
}

function createInstruments(): PostroomMetrics {
  const meter = metrics.getMeter(INSTRUMENTATION_SCOPE);
  const messages = meter.createCounter('postroom.messages.ingested', { unit: '{message}', description: 'Messages written to blob + queue and acknowledged' });
  const bytes = meter.createCounter('postroom.bytes.ingested', { unit: 'By', description: 'Raw message bytes ingested' });
  const pollDuration = meter.createHistogram('postroom.poll.duration', { unit: 'ms', description: 'Duration of one mailbox poll' });
  const failures = meter.createCounter('postroom.poll.failures', { unit: '{poll}', description: 'Failed polls by error code' });
  const lag = meter.createGauge('postroom.poll.lag', { unit: 'ms', description: 'At poll end: age of the oldest message read but not yet ingested, or 0' });
  const tokens = meter.createCounter('postroom.token.requests', { unit: '{token}', description: 'App tokens handed out (cached: from msal cache)' });
  const storage = meter.createHistogram('postroom.storage.write.duration', { unit: 'ms', description: 'Latency of one blob or queue write' });
  return {
    messageIngested(mailbox, n) {
      messages.add(1, { mailbox });
      bytes.add(n, { mailbox });
    },
    pollFinished(mailbox, o) {
      pollDuration.record(o.durationMs, { mailbox, outcome: o.outcome });
      if (o.outcome === 'failed') failures.add(1, { mailbox, code: o.code ?? 'Unknown' });
      if (o.outcome !== 'leased') lag.record(o.lagMs, { mailbox });
    },
    tokenRequested(app, o = {}) {
      tokens.add(1, { app, cached: o.cached ?? false });
    },
    storageWrite(kind, ms, o = {}) {
      storage.record(ms, { kind, ok: o.ok ?? true });
    },
  };
}

/** Log fields as attributes: scalars as they are, anything else as redacted JSON. */
export function toAttributes(fields: Record<string, unknown>): Attributes {
  const out: Attributes = {};
  for (const [k, v] of Object.entries(fields)) {
    if (v === undefined || v === null) continue;
    if (typeof v === 'string') out[k] = redact(v);
    else if (typeof v === 'number' || typeof v === 'boolean') out[k] = v;
    else out[k] = redact(JSON.stringify(v) ?? typeof v);
  }
  return out;
}

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/** The Functions host's invocation trace as a parent context, so logs share its operation id. */
function contextFromTraceParent(traceParent: string): Context | undefined {
  const m = TRACEPARENT.exec(traceParent.trim());
  if (!m) return undefined;
  return trace.setSpanContext(ROOT_CONTEXT, { traceId: m[1], spanId: m[2], traceFlags: parseInt(m[3], 16) & TraceFlags.SAMPLED, isRemote: true });
}
