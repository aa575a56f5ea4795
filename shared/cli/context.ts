import type { Writable } from 'node:stream';
import type { PostroomConfig } from '../config/index.js';
import { type PostroomError } from '../errors.js';
import { createLogger, type Logger } from '../logger.js';
import type { Runtime } from '../runtime.js';
import { loadCliConfig, readCliSettings, type CliSettings } from './settings.js';

/** Exit codes of every command. */
export const EXIT = Object.freeze({ ok: 0, failed: 1, usage: 2 } as const);

/** A wrong command line or a missing confirmation: exit code 2, with the usage text. */
export class CliUsageError extends Error {
  override readonly name = 'CliUsageError';
}

/** Where a command writes, and what it runs in (tests pass their own). */
export interface CliIo {
  /** Results and tables (what a script pipes on). */
  readonly stdout: Writable & { isTTY?: boolean };
  /** Errors with their fixes, warnings and (with --verbose) logs. */
  readonly stderr: Writable & { isTTY?: boolean; columns?: number };
  /** Settings environment; a variable set here wins over local.settings.json. */
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Directory that local.settings.json (default or `--settings`) is resolved against. */
  readonly cwd: string;
}

/** What every command gets: its output streams and the settings, loaded on first use. */
export interface CliContext {
  /** The command's streams, environment and directory. */
  readonly io: CliIo;
  /** Validated settings; throws `ConfigInvalid` (exit 2). */
  config(): PostroomConfig;
  /** The process runtime over those settings (the same one the functions use). */
  runtime(): Promise<Runtime>;
  /** Logger to stderr at warn (info with --verbose); error lines only with --verbose, as commands print failures themselves. */
  readonly logger: Logger;
  /** Writes one line (newline added) to stdout; no argument: an empty line. */
  out(line?: string): void;
  /** Writes one line (newline added) to stderr; no argument: an empty line. */
  err(line?: string): void;
}

/** Options of {@link createCliContext}. */
export interface CreateCliContextOptions {
  /** A local.settings.json other than ./local.settings.json. */
  settingsFile?: string;
  /** Log at info (default warn); logs go to stderr. */
  verbose?: boolean;
}

export function createCliContext(io: CliIo, o: CreateCliContextOptions = {}): CliContext {
  let settings: CliSettings | undefined;
  let config: PostroomConfig | undefined;
  let runtime: Promise<Runtime> | undefined;
  // Commands report every failure themselves, with its fix; the library's own error lines would say it twice.
  const sink = (level: string, line: string) => {
    if (level !== 'error' || o.verbose) io.stderr.write(`${level.toUpperCase()} ${line}\n`);
  };
  const logger = createLogger(sink, { level: o.verbose ? 'info' : 'warn', prefix: 'postroom' });
  const ctx: CliContext = {
    io,
    logger,
    config() {
      settings ??= readCliSettings({ env: io.env, cwd: io.cwd, file: o.settingsFile });
      config ??= loadCliConfig(settings);
      return config;
    },
    runtime() {
      runtime ??= (async () => {
        const cfg = ctx.config();
        const { createRuntime, setRuntime } = await import('../runtime.js');
        const rt = createRuntime({ config: cfg, logger });
        setRuntime(rt);
        return rt;
      })();
      return runtime;
    },
    out: (line = '') => void io.stdout.write(`${line}\n`),
    err: (line = '') => void io.stderr.write(`${line}\n`),
  };
  return ctx;
}

/** An error's message without the catalog fix appended to it (printed on its own line instead). */
export function withoutFix(e: PostroomError): string {
  const tail = e.fix ? ` Fix: ${e.fix}` : '';
  return tail && e.message.endsWith(tail) ? e.message.slice(0, -tail.length) : e.message;
}

/** 1.5 KiB, 12.3 MiB. */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(1)} ${units[i]}`;
}

/** 42s, 3m12s, 5h03m, 2d04h. */
export function formatDuration(seconds: number): string {
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  return `${Math.floor(s / 86400)}d${String(Math.floor((s % 86400) / 3600)).padStart(2, '0')}h`;
}

/** A plain text table: columns padded to their widest cell. */
export function renderTable(head: readonly string[], rows: readonly (readonly string[])[]): string[] {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i])))
      .join('  ')
      .trimEnd();
  return [line(head), ...rows.map(line)];
}
