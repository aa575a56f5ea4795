import { redact } from './errors.js';
import { emitTelemetryLog } from './telemetry/index.js';

/** Severity of a log line, lowest first; `POSTROOM_LOG_LEVEL` sets the lowest one written. */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
/** Structured fields of a log line; keys that look like credentials or bodies are dropped and values redacted before output. */
export type LogFields = Record<string, unknown>;

const LEVELS: readonly LogLevel[] = ['debug', 'info', 'warn', 'error'];

/** A POSTROOM_LOG_LEVEL value as a level, or undefined when it is not one (blank means the default, `info`). */
export function parseLogLevel(value: string | undefined): LogLevel | undefined {
  const v = value?.trim().toLowerCase() || 'info';
  return (LEVELS as readonly string[]).includes(v) ? (v as LogLevel) : undefined;
}

/**
 * The one place POSTROOM_LOG_LEVEL is read. Postroom filters its own lines by it;
 * host.json lets every level through for the `Function` category so the host does
 * not drop what this asks for. An invalid value falls back to `info` here (config
 * validation reports it as ConfigInvalid).
 */
export function logLevelFromEnv(env: NodeJS.ProcessEnv = process.env): LogLevel {
  return parseLogLevel(env.POSTROOM_LOG_LEVEL) ?? 'info';
}

/** The one logger shape every Postroom module takes (injected, never global). */
export interface Logger {
  /** Protocol-level detail (commands, state changes), off unless the level is `debug`. */
  debug(message: string, fields?: LogFields): void;
  /** Normal progress: sessions opened, polls finished, jobs enqueued. */
  info(message: string, fields?: LogFields): void;
  /** Something that worked but needs a look (a skipped message, an expiring credential). */
  warn(message: string, fields?: LogFields): void;
  /** A failure (a poll or a send that failed), with its code. */
  error(message: string, fields?: LogFields): void;
}

/** One log call after filtering: the redacted message and the safe fields (structured sinks use these, not `line`). */
export interface LogEntry {
  /** The message, redacted, with the logger's `[prefix] ` in front when it has one. */
  message: string;
  /** The fields, credential-like keys dropped and every string redacted. */
  fields: LogFields;
}

/** Receives each line: `line` is the flat text (message + JSON fields); `entry` the same, structured. */
export type LogSink = (level: LogLevel, line: string, entry: LogEntry) => void;

/** Options of {@link createLogger}. */
export interface CreateLoggerOptions {
  /** Lowest level written; default {@link logLevelFromEnv}. */
  level?: LogLevel;
  /** Category name: written as `[prefix] ` before each line and sent as the telemetry `category`; default none. */
  prefix?: string;
  /** W3C traceparent of the current invocation, put on telemetry log records. */
  traceParent?: string;
}

const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** Fields minus credential- and body-like keys, errors reduced to name/code/redacted message. */
function safeFields(fields: LogFields | undefined): LogFields {
  const out: LogFields = {};
  if (!fields) return out;
  for (const [k, v] of Object.entries(fields)) {
    if (/token|secret|password|assertion|body|html|text$/i.test(k)) continue;
    if (v instanceof Error) {
      const err = v as Error & { code?: unknown };
      out[k] = { name: err.name, code: err.code, message: redact(String(err.message)) };
    } else out[k] = v;
  }
  return out;
}

// Every string anywhere in the fields redacted; the flat JSON once more as a whole (keys too), as before.
function redactDeep(v: unknown, depth = 0): unknown {
  if (typeof v === 'string') return redact(v);
  if (v === null || typeof v !== 'object' || depth > 8) return v;
  if (v instanceof Date) return v.toISOString();
  if (Array.isArray(v)) return v.map((x) => redactDeep(x, depth + 1));
  return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, redactDeep(x, depth + 1)]));
}

function redactFields(fields: LogFields): { json: string; fields: LogFields } {
  return { json: redact(JSON.stringify(fields)), fields: redactDeep(fields) as LogFields };
}

/**
 * Creates the package logger. Field values are redacted and keys that look
 * like credentials or message bodies are dropped, so a careless call site
 * cannot leak them. Each line also goes to telemetry (a no-op unless
 * APPLICATIONINSIGHTS_CONNECTION_STRING is set) with its fields as attributes.
 */
export function createLogger(sink: LogSink, options: CreateLoggerOptions = {}): Logger {
  const min = ORDER[options.level ?? logLevelFromEnv()];
  const prefix = options.prefix ? `[${options.prefix}] ` : '';
  const emit = (level: LogLevel) => (message: string, fields?: LogFields) => {
    if (ORDER[level] < min) return;
    const safe = safeFields(fields);
    const text = redact(message);
    const hasFields = Object.keys(safe).length > 0;
    const { json, fields: redacted } = hasFields ? redactFields(safe) : { json: '', fields: safe };
    sink(level, prefix + text + (hasFields ? ' ' + json : ''), { message: prefix + text, fields: redacted });
    emitTelemetryLog({ level, message: text, fields: options.prefix ? { ...redacted, category: options.prefix } : redacted, traceParent: options.traceParent });
  };
  return { debug: emit('debug'), info: emit('info'), warn: emit('warn'), error: emit('error') };
}

/** A logger writing to stderr/stdout, for scripts and the local runner. */
export function consoleLogger(options: CreateLoggerOptions = {}): Logger {
  return createLogger((level, line) => {
    const stamp = new Date().toISOString();
    (level === 'error' || level === 'warn' ? process.stderr : process.stdout).write(`${stamp} ${level.toUpperCase()} ${line}\n`);
  }, options);
}

export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };

/** A logger that keeps its lines, for tests asserting what was (not) logged. */
export function memoryLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const log = createLogger((level, line) => lines.push(`${level} ${line}`), { level: 'debug' });
  return Object.assign(log, { lines });
}
