import type { MailboxConfig } from '../config/index.js';
import type { StateStore } from '../state.js';

export const STATUS_KEY = 'poll-status';

/** Per-mailbox poll status (Table row): written by the poll, read by notifications and the status report. */
export interface MailboxStatus extends Record<string, string | number | boolean | Uint8Array | null> {
  mailbox: string;
  protocol: string;
  folder: string;
  lastPollAt: string;
  lastResult: 'ok' | 'failed';
  lastDelivered: number;
  lastDurationMs: number;
  totalDelivered: number;
  consecutiveFailures: number;
  lastErrorCode: string | null;
  lastError: string | null;
  lastSuccessAt: string | null;
  /** Why the last poll ended early without failing (its deadline, a long server back-off), or null. */
  lastStopCode: string | null;
  lastStop: string | null;
  /** The last refused login narrowed down (shared/diagnose): its code, cause, filled-in fix, confidence and time; null when none was made. */
  lastDiagnosisCode: string | null;
  lastDiagnosisCause: string | null;
  lastDiagnosisFix: string | null;
  lastDiagnosisConfidence: string | null;
  lastDiagnosisAt: string | null;
}

/** A refusal narrowed down, as the status records it. */
export interface StatusDiagnosis {
  code: string;
  cause: string;
  fix: string;
  confidence: string;
}

/** A poll's outcome as the status records it. */
export type PollStatusOutcome =
  | { ok: true; delivered: number; durationMs: number; stoppedCode?: string; stoppedMessage?: string }
  | { ok: false; delivered: number; durationMs: number; code: string; message: string; diagnosis?: StatusDiagnosis };

export async function readStatus(state: StateStore, mailbox: MailboxConfig): Promise<MailboxStatus | undefined> {
  return (await state.get<MailboxStatus>(mailbox.id, STATUS_KEY))?.value;
}

/** Records a poll's outcome; last writer wins (only the lease holder writes). */
export async function recordStatus(
  state: StateStore,
  mailbox: MailboxConfig,
  at: Date,
  outcome: PollStatusOutcome,
): Promise<MailboxStatus> {
  const prev = await readStatus(state, mailbox);
  const next: MailboxStatus = {
    mailbox: mailbox.address,
    protocol: mailbox.protocol,
    folder: mailbox.folder,
    lastPollAt: at.toISOString(),
    lastResult: outcome.ok ? 'ok' : 'failed',
    lastDelivered: outcome.delivered,
    lastDurationMs: outcome.durationMs,
    totalDelivered: (prev?.totalDelivered ?? 0) + outcome.delivered,
    consecutiveFailures: outcome.ok ? 0 : (prev?.consecutiveFailures ?? 0) + 1,
    lastErrorCode: outcome.ok ? (prev?.lastErrorCode ?? null) : outcome.code,
    lastError: outcome.ok ? (prev?.lastError ?? null) : outcome.message.slice(0, 2000),
    lastSuccessAt: outcome.ok ? at.toISOString() : (prev?.lastSuccessAt ?? null),
    lastStopCode: outcome.ok ? (outcome.stoppedCode ?? null) : null,
    lastStop: outcome.ok ? (outcome.stoppedMessage?.slice(0, 2000) ?? null) : null,
    ...diagnosisFields(prev, at, outcome.ok ? undefined : outcome.diagnosis),
  };
  await state.put(mailbox.id, STATUS_KEY, next);
  return next;
}

/** A new diagnosis replaces the last one; without one the last is kept (with its time). */
function diagnosisFields(prev: MailboxStatus | undefined, at: Date, d: StatusDiagnosis | undefined): Pick<MailboxStatus, 'lastDiagnosisCode' | 'lastDiagnosisCause' | 'lastDiagnosisFix' | 'lastDiagnosisConfidence' | 'lastDiagnosisAt'> {
  if (!d) {
    return {
      lastDiagnosisCode: prev?.lastDiagnosisCode ?? null,
      lastDiagnosisCause: prev?.lastDiagnosisCause ?? null,
      lastDiagnosisFix: prev?.lastDiagnosisFix ?? null,
      lastDiagnosisConfidence: prev?.lastDiagnosisConfidence ?? null,
      lastDiagnosisAt: prev?.lastDiagnosisAt ?? null,
    };
  }
  return { lastDiagnosisCode: d.code, lastDiagnosisCause: d.cause.slice(0, 2000), lastDiagnosisFix: d.fix.slice(0, 4000), lastDiagnosisConfidence: d.confidence, lastDiagnosisAt: at.toISOString() };
}
