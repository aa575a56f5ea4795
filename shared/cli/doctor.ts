import { parseArgs } from 'node:util';
import { isPostroomError } from '../errors.js';
import { settingsInvalidReport } from '../poll/report.js';
import type { DoctorCheck, DoctorReport } from '../doctor/types.js';
import { renderCheck, renderSummary } from '../doctor/render.js';
import { CliUsageError, type CliContext } from './context.js';

export const DOCTOR_USAGE = `postroom doctor [--mailbox <id or address>]... [--protocol imap|pop3|smtp] [--json] [--send-test <to>] [--timeout <seconds>]
  Checks the setup layer by layer with the poll's own code: settings, Key Vault, token, then per mailbox
  DNS, TCP, TLS, XOAUTH2 login and the folder, per notification sender SMTP (EHLO, STARTTLS, AUTH; with
  --send-test one real message), then storage. A refused login is narrowed down (cause, confidence, fix).
  --json prints { summary, checks } instead. Exit 0: all ok or only warnings; 1: failures; 2: bad settings.`;

/** `postroom doctor`. */
export async function doctorCommand(args: string[], ctx: CliContext): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      mailbox: { type: 'string', multiple: true },
      protocol: { type: 'string' },
      json: { type: 'boolean', default: false },
      'send-test': { type: 'string' },
      timeout: { type: 'string', default: '10' },
    },
    strict: true,
  });
  const protocol = values.protocol;
  if (protocol !== undefined && protocol !== 'imap' && protocol !== 'pop3' && protocol !== 'smtp')
    throw new CliUsageError(`--protocol must be imap, pop3 or smtp, not "${protocol}"`);
  const timeout = Number(values.timeout);
  if (!Number.isFinite(timeout) || timeout <= 0) throw new CliUsageError(`--timeout must be a number of seconds, not "${values.timeout}"`);
  const print = (c: DoctorCheck) => {
    if (!values.json) for (const l of renderCheck(c)) ctx.out(l);
  };
  let result = await settingsInvalid(ctx, print);
  if (!result) {
    const { runDoctor } = await import('../doctor/index.js');
    const runtime = await ctx.runtime();
    try {
      result = await runDoctor(runtime, { mailboxes: values.mailbox, protocol, sendTest: values['send-test'], timeoutMs: timeout * 1000, onCheck: print });
    } finally {
      runtime.close();
    }
  }
  ctx.out(values.json ? JSON.stringify(result, null, 2) : renderSummary(result.summary));
  return result.summary.exitCode;
}

/** Settings that do not load: every problem as a ✗ settings check, exit 2; undefined when they load. */
async function settingsInvalid(ctx: CliContext, print: (c: DoctorCheck) => void): Promise<DoctorReport | undefined> {
  try {
    ctx.config();
    return undefined;
  } catch (e) {
    if (!isPostroomError(e, 'ConfigInvalid')) throw e;
    const { summarize } = await import('../doctor/index.js');
    const r = settingsInvalidReport(e);
    const checks = r.problems.map((p): DoctorCheck => ({ layer: 'settings', subject: 'config', status: 'fail', ms: 0, detail: p, code: 'ConfigInvalid', fix: r.fix }));
    checks.forEach(print);
    return { summary: summarize(checks, 0, true), checks };
  }
}
