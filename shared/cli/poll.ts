import { parseArgs } from 'node:util';
import type { MailboxConfig } from '../config/index.js';
import { PostroomError } from '../errors.js';
import { handlePollJob, JOB_SCHEMA, type PollJob } from '../poll/jobs.js';
import type { Runtime } from '../runtime.js';
import type { Delivered } from '../sink/index.js';
import { CliUsageError, EXIT, formatBytes, withoutFix, type CliContext } from './context.js';

export const POLL_USAGE = `postroom poll [--once] [--mailbox <id or address>]... [--every <seconds>]
  Polls the configured mailboxes (or those named) through the same code path as the pollMailbox function,
  then prints a summary. Without --once it polls again every --every seconds (default 300) until Ctrl-C.`;

/** One mailbox's poll as the summary reports it. */
export interface PollSummary {
  /** The mailbox id, `<protocol>:<address>/<folder>`. */
  mailbox: string;
  /** `leased`: another instance was polling it, nothing was done. */
  outcome: 'ok' | 'failed' | 'leased';
  /** Messages ingested. */
  messages: number;
  /** Their raw size in bytes. */
  bytes: number;
  /** Wall time of the poll in milliseconds. */
  durationMs: number;
  /** Why the poll failed (with its fix); absent when it did not. */
  error?: PostroomError;
}

/** `postroom poll`: exit 1 when any mailbox failed. */
export async function pollCommand(args: string[], ctx: CliContext): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { once: { type: 'boolean', default: false }, mailbox: { type: 'string', multiple: true }, every: { type: 'string', default: '300' } },
    strict: true,
  });
  const every = Number(values.every);
  if (!Number.isFinite(every) || every < 1) throw new CliUsageError(`--every must be a number of seconds (1 or more), not "${values.every}"`);
  const mailboxes = selectMailboxes(ctx.config().mailboxes, values.mailbox ?? []);
  const runtime = await ctx.runtime();
  if (values.once) return pollRound(runtime, mailboxes, ctx);
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  process.once('SIGINT', onSignal);
  try {
    let code: number = EXIT.ok;
    while (!stop.signal.aborted) {
      code = await pollRound(runtime, mailboxes, ctx);
      await new Promise<void>((r) => {
        const t = setTimeout(r, every * 1000);
        stop.signal.addEventListener('abort', () => (clearTimeout(t), r()), { once: true });
      });
    }
    return code;
  } finally {
    process.off('SIGINT', onSignal);
  }
}

/** The mailboxes named by id (`imap:a@b/INBOX`) or address; all when none is named. */
export function selectMailboxes(all: readonly MailboxConfig[], names: readonly string[]): MailboxConfig[] {
  if (!names.length) return [...all];
  return names.flatMap((n) => {
    const hit = all.filter((m) => m.id === n || m.address.toLowerCase() === n.toLowerCase());
    if (!hit.length) throw new CliUsageError(`no configured mailbox "${n}" (have: ${all.map((m) => m.id).join(', ') || 'none'})`);
    return hit;
  });
}

async function pollRound(runtime: Runtime, mailboxes: readonly MailboxConfig[], ctx: CliContext): Promise<number> {
  const started = Date.now();
  const results: PollSummary[] = [];
  for (const m of mailboxes) {
    const r = await pollOne(runtime, m, ctx);
    results.push(r);
    printResult(r, ctx);
  }
  const messages = results.reduce((n, r) => n + r.messages, 0);
  const bytes = results.reduce((n, r) => n + r.bytes, 0);
  const ms = Date.now() - started;
  const failed = results.filter((r) => r.outcome === 'failed').length;
  ctx.out(`poll: ${results.length} mailbox(es), ${messages} message(s), ${formatBytes(bytes)} in ${(ms / 1000).toFixed(1)} s (${rate(messages, ms)} msg/s), ${failed} error(s)`);
  return failed ? EXIT.failed : EXIT.ok;
}

async function pollOne(runtime: Runtime, mailbox: MailboxConfig, ctx: CliContext): Promise<PollSummary> {
  const started = Date.now();
  const progress = createProgress(mailbox.id, runtime.config.poll.batchSize, ctx);
  const job: PollJob = { schema: JOB_SCHEMA, mailboxId: mailbox.id, scheduledAt: runtime.now().toISOString() };
  let outcome: PollSummary['outcome'] = 'ok';
  let error: PostroomError | undefined;
  try {
    const result = await handlePollJob(runtime, job, { logger: ctx.logger, beforeAcknowledge: (done) => progress.add(done) });
    outcome = result?.outcome ?? 'ok';
    error = result?.error;
  } catch (e) {
    // A retryable failure is thrown (for the queue to retry); its cause is the poll's error.
    outcome = 'failed';
    error =
      e instanceof PostroomError && e.cause instanceof PostroomError
        ? e.cause
        : e instanceof PostroomError
          ? e
          : new PostroomError('ProtocolError', String((e as Error)?.message ?? e), { subject: mailbox.id, cause: e });
  } finally {
    progress.end();
  }
  return { mailbox: mailbox.id, outcome, messages: progress.messages, bytes: progress.bytes, durationMs: Date.now() - started, error };
}

function printResult(r: PollSummary, ctx: CliContext): void {
  const mark = r.outcome === 'failed' ? '✗' : r.outcome === 'leased' ? '!' : '✓';
  const what =
    r.outcome === 'leased'
      ? 'skipped: another instance holds its lease'
      : `${r.messages} message(s), ${formatBytes(r.bytes)} in ${(r.durationMs / 1000).toFixed(1)} s (${rate(r.messages, r.durationMs)} msg/s)`;
  ctx.out(`${mark} ${r.mailbox}: ${what}`);
  if (!r.error) return;
  ctx.out(`  error: ${r.error.code}: ${withoutFix(r.error)}`);
  if (r.error.fix) ctx.out(`  fix: ${r.error.fix}`);
}

function rate(messages: number, ms: number): string {
  return ms > 0 ? ((messages * 1000) / ms).toFixed(1) : '0.0';
}

/**
 * Counts what each acknowledged batch delivered; on a terminal (stderr) it
 * shows a live line once more than one batch came in, so a short poll stays
 * quiet and a long one shows it is moving.
 */
function createProgress(label: string, batchSize: number, ctx: CliContext) {
  const tty = Boolean(ctx.io.stderr.isTTY);
  const started = Date.now();
  const frames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
  let shown = false;
  let tick = 0;
  const p = {
    messages: 0,
    bytes: 0,
    add(done: readonly Delivered[]) {
      p.messages += done.length;
      p.bytes += done.reduce((n, d) => n + d.size, 0);
      if (!tty || p.messages <= batchSize) return;
      shown = true;
      const width = Math.max(10, Math.min(30, (ctx.io.stderr.columns ?? 80) - 70));
      const filled = tick++ % (width + 1);
      const bar = '='.repeat(filled).padEnd(width, ' ');
      ctx.io.stderr.write(`\r${frames[tick % frames.length]} ${label} [${bar}] ${p.messages} msgs, ${formatBytes(p.bytes)}, ${rate(p.messages, Date.now() - started)} msg/s\x1b[K`);
    },
    end() {
      if (shown) ctx.io.stderr.write('\r\x1b[K');
    },
  };
  return p;
}
