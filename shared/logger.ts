import { redact } from './errors.js';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type LogFields = Record<string, unknown>;

/** The one logger shape every Postroom module takes (injected, never global). */
export interface Logger {
  debug(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
}

export type LogSink = (level: LogLevel, line: string) => void;

const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

function safeFields(fields: LogFields | undefined): string {
  if (!fields) return '';
  const out: LogFields = {};
  for (const [k, v] of Object.entries(fields)) {
    if (/token|secret|password|assertion|body|html|text$/i.test(k)) continue;
    if (v instanceof Error) {
      const err = v as Error & { code?: unknown };
      out[k] = { name: err.name, code: err.code, message: redact(String(err.message)) };
    } else out[k] = v;
  }
  return ' ' + redact(JSON.stringify(out));
}

/**
 * Creates the package logger. Field values are redacted and keys that look
 * like credentials or message bodies are dropped, so a careless call site
 * cannot leak them.
 */
export function createLogger(sink: LogSink, options: { level?: LogLevel; prefix?: string } = {}): Logger {
  const min = ORDER[options.level ?? 'info'];
  const prefix = options.prefix ? `[${options.prefix}] ` : '';
  const emit = (level: LogLevel) => (message: string, fields?: LogFields) => {
    if (ORDER[level] < min) return;
    sink(level, prefix + redact(message) + safeFields(fields));
  };
  return { debug: emit('debug'), info: emit('info'), warn: emit('warn'), error: emit('error') };
}

/** A logger writing to stderr/stdout, for scripts and the local runner. */
export function consoleLogger(options: { level?: LogLevel; prefix?: string } = {}): Logger {
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
