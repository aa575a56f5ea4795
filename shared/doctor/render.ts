/** The doctor's report as text: one ✓/✗/! line per check, the cause and fix under each failure, a summary. */
import type { DoctorCheck, DoctorSummary } from './types.js';

const MARK = { ok: '✓', fail: '✗', warn: '!' } as const;

/** The lines of one check. */
export function renderCheck(c: DoctorCheck): string[] {
  const lines = [`${MARK[c.status]} ${c.layer.padEnd(8)} ${c.subject}: ${c.code && c.status !== 'ok' ? `${c.code}: ` : ''}${c.detail} (${c.ms} ms)`];
  if (c.cause) lines.push(`    cause (${c.confidence}): ${c.cause}`);
  for (const e of c.evidence ?? []) lines.push(`      seen: ${e}`);
  if (c.fix && c.status !== 'ok') lines.push(`    fix: ${c.fix}`);
  return lines;
}

/** The closing line. */
export function renderSummary(s: DoctorSummary): string {
  const verdict = s.exitCode === 2 ? 'the settings do not load' : s.fail ? 'failures found' : s.warn ? 'working, with warnings' : 'all checks passed';
  return `doctor: ${s.ok} ok, ${s.warn} warning(s), ${s.fail} failure(s) in ${(s.ms / 1000).toFixed(1)} s: ${verdict}`;
}
