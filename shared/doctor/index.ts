/**
 * `postroom doctor`: checks the setup layer by layer — settings, Key Vault,
 * token, then per mailbox DNS, TCP, TLS, login and folder, per sender SMTP,
 * then storage — continuing past failures, with the same code the poll
 * runs. Each refused login is narrowed down (cause, confidence, filled-in fix).
 */
import type { MailProtocol } from '../auth/claims.js';
import type { AppConfig, MailboxConfig } from '../config/index.js';
import type { Runtime } from '../runtime.js';
import { selectMailboxes } from '../cli/poll.js';
import { checkSettings } from './settings.js';
import { checkApp } from './credential.js';
import { checkMailbox } from './mailbox.js';
import { checkSender, smtpSenders } from './smtp.js';
import { checkStorage } from './storage.js';
import type { DoctorCheck, DoctorOptions, DoctorReport, DoctorRun, DoctorSummary } from './types.js';

export type { DoctorCheck, DoctorOptions, DoctorReport, DoctorSummary, DoctorLayer, CheckStatus } from './types.js';

/**
 * Runs every check over `runtime`'s settings and returns the report; never
 * throws for a failing check (each is a `fail` entry).
 *
 * @example
 * ```ts
 * const report = await runDoctor(runtime, { protocol: 'imap', onCheck: (c) => console.log(c.status, c.subject) });
 * process.exitCode = report.summary.exitCode;
 * ```
 */
export async function runDoctor(runtime: Runtime, o: DoctorOptions = {}): Promise<DoctorReport> {
  const started = performance.now();
  const checks: DoctorCheck[] = [];
  const run: DoctorRun = {
    timeoutMs: o.timeoutMs ?? 10_000,
    add(c) {
      checks.push(c);
      o.onCheck?.(c);
      return c;
    },
  };
  checkSettings(runtime.config, run);
  const mailboxes = selectMailboxes(runtime.config.mailboxes, o.mailboxes ?? []);
  const polled = o.protocol === 'smtp' ? [] : mailboxes.filter((m) => !o.protocol || m.protocol === o.protocol);
  const senders = smtpSenders(mailboxes, o.protocol === 'smtp' || o.sendTest !== undefined);
  const usable = new Set<string>();
  for (const app of appsOf(polled, senders)) {
    const protocols = protocolsOf(
      app,
      polled,
      senders.some((s) => s.app.name === app.name),
    );
    if (await checkApp(runtime, app, protocols, run)) usable.add(app.name);
  }
  for (const m of polled) await checkMailbox(runtime, m, usable.has(m.app.name), run);
  if (o.protocol === undefined || o.protocol === 'smtp') {
    for (const s of senders) await checkSender(runtime, s, usable.has(s.app.name), o.sendTest, run);
  }
  await checkStorage(runtime, run);
  return { summary: summarize(checks, performance.now() - started), checks };
}

function appsOf(mailboxes: readonly MailboxConfig[], senders: ReadonlyArray<{ app: AppConfig }>): AppConfig[] {
  const apps = new Map<string, AppConfig>();
  for (const x of [...mailboxes, ...senders]) apps.set(x.app.name, x.app);
  return [...apps.values()];
}

function protocolsOf(app: AppConfig, mailboxes: readonly MailboxConfig[], sends: boolean): MailProtocol[] {
  const p = new Set<MailProtocol>(mailboxes.filter((m) => m.app.name === app.name).map((m) => m.protocol));
  if (sends) p.add('smtp');
  return [...p];
}

/** Counts, and the exit code: 1 with any failure, else 0 (warnings included). */
export function summarize(checks: readonly DoctorCheck[], ms: number, settingsInvalid = false): DoctorSummary {
  const count = (s: DoctorCheck['status']) => checks.filter((c) => c.status === s).length;
  const fail = count('fail');
  return { ok: count('ok'), warn: count('warn'), fail, ms: Math.round(ms), exitCode: settingsInvalid ? 2 : fail ? 1 : 0 };
}
