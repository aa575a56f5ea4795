import { parseArgs } from 'node:util';
import { mailboxStatusReport, type AppCredentialEntry, type MailboxStatusEntry } from '../poll/report.js';
import { EXIT, formatDuration, renderTable, type CliContext } from './context.js';

export const STATUS_USAGE = `postroom status [--json]
  Every configured mailbox: last poll, result, lag since the last success, counts, last error and its fix;
  every app: credential kind and expiry (warning under 30 days, error once expired).`;

/** `postroom status`: exit 1 when any mailbox's last poll failed or any app's credential has expired. */
export async function statusCommand(args: string[], ctx: CliContext): Promise<number> {
  const { values } = parseArgs({ args, options: { json: { type: 'boolean', default: false } }, strict: true });
  const report = await mailboxStatusReport(await ctx.runtime());
  const failed = report.mailboxes.filter((m) => m.status?.lastResult === 'failed');
  const expired = report.apps.filter((a) => a.state === 'error');
  if (values.json) ctx.out(JSON.stringify(report, null, 2));
  else {
    printStatus(report.mailboxes, ctx);
    printCredentials(report.apps, ctx);
  }
  return failed.length || expired.length ? EXIT.failed : EXIT.ok;
}

function printStatus(mailboxes: readonly MailboxStatusEntry[], ctx: CliContext): void {
  const rows = mailboxes.map((m) => {
    const s = m.status;
    return [
      m.id,
      s ? s.lastPollAt.replace(/\.\d+Z$/, 'Z') : 'never',
      s ? s.lastResult : '-',
      m.lagSeconds === null ? '-' : formatDuration(m.lagSeconds),
      s ? String(s.lastDelivered) : '-',
      s ? String(s.totalDelivered) : '-',
      s ? String(s.consecutiveFailures) : '-',
      s?.lastResult === 'failed' ? (s.lastErrorCode ?? '') : '',
    ];
  });
  for (const l of renderTable(['MAILBOX', 'LAST POLL', 'RESULT', 'LAG', 'LAST', 'TOTAL', 'FAILS', 'LAST ERROR'], rows)) ctx.out(l);
  for (const m of mailboxes.filter((x) => x.status?.lastResult === 'failed')) {
    ctx.out();
    const fix = m.lastErrorFix ? ` Fix: ${m.lastErrorFix}` : '';
    const message = fix && m.status!.lastError?.endsWith(fix) ? m.status!.lastError.slice(0, -fix.length) : m.status!.lastError;
    ctx.out(`${m.id}: ${m.status!.lastErrorCode}: ${message}`);
    const d = m.lastDiagnosis;
    if (d) ctx.out(`  diagnosis (${d.at.replace(/\.\d+Z$/, 'Z')}): ${d.code} (${d.confidence}): ${d.cause}`);
    if (m.lastErrorFix) ctx.out(`  fix: ${m.lastErrorFix}`);
  }
  if (!mailboxes.length) ctx.out('(no mailboxes configured)');
}

const STATE_LABEL: Record<AppCredentialEntry['state'], string> = { ok: 'ok', warning: 'WARNING', error: 'ERROR', unknown: 'unknown' };

function printCredentials(apps: readonly AppCredentialEntry[], ctx: CliContext): void {
  if (!apps.length) return;
  ctx.out();
  const rows = apps.map((a) => [a.name, a.kind, a.expiresOn ? a.expiresOn.replace(/\.\d+Z$/, 'Z') : '-', STATE_LABEL[a.state], a.note]);
  for (const l of renderTable(['APP', 'CREDENTIAL', 'EXPIRES', 'STATE', 'NOTE'], rows)) ctx.out(l);
}
