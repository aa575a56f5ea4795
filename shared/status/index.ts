import type { MailboxConfig } from '../config/index.js';
import type { StateStore } from '../state.js';

export const STATUS_KEY = 'poll-status';

/** Per-mailbox poll status (Table row): written by the poll, read by notifications and the status report. */
export interface MailboxStatus extends Record<string, string | number | boolean | Uint8Array | null> {
  /** The mailbox's address (the row's partition is the mailbox id). */
  mailbox: string;
  /** `imap` or `pop3`. */
  protocol: string;
  /** The polled folder (POP3: `INBOX`). */
  folder: string;
  /** ISO 8601 time the last poll finished. */
  lastPollAt: string;
  /** Outcome of the last poll; `ok` also when it stopped early (see `lastStopCode`). */
  lastResult: 'ok' | 'failed';
  /** Messages the last poll delivered (also those before a failure). */
  lastDelivered: number;
  /** Wall time of the last poll in milliseconds. */
  lastDurationMs: number;
  /** Messages delivered since the row was created, across all polls. */
  totalDelivered: number;
  /** Polls in a row that failed; 0 after a successful one. */
  consecutiveFailures: number;
  /** PostroomError code of the last failure; kept after a later success, null if the mailbox never failed. */
  lastErrorCode: string | null;
  /** Message of the last failure (at most 2000 characters); kept after a later success, null if none. */
  lastError: string | null;
  /** ISO 8601 time of the last successful poll; null until one succeeds. */
  lastSuccessAt: string | null;
  /** Why the last poll ended early without failing (its deadline, a long server back-off), or null. */
  lastStopCode: string | null;
  /** Message of that early stop (at most 2000 characters), or null. */
  lastStop: string | null;
  /** The last refused login narrowed down (shared/diagnose): its code, cause, filled-in fix, confidence and time; null when none was made. */
  lastDiagnosisCode: string | null;
  /**
   *
   */
  lastDiagnosisCause: string | null;
  /**
   *
   */
  lastDiagnosisFix: string | null;
  /**
   *
   */
  lastDiagnosisConfidence: string | null;
  /**
   *
   */
  lastDiagnosisAt: string | null;
}

/** A refusal narrowed down, as the status records it. */
export interface StatusDiagnosis {
  /**
   *
   */
  code: string;
  /**
   *
   */
  cause: string;
  /**
   *
   */
  fix: string;
  /**
   *
   */
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
export async function recordStatus(state: StateStore, mailbox: MailboxConfig, at: Date, outcome: PollStatusOutcome): Promise<MailboxStatus> {
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
function diagnosisFields(
  prev: MailboxStatus | undefined,
  at: Date,
  d: StatusDiagnosis | undefined,
): Pick<MailboxStatus, 'lastDiagnosisCode' | 'lastDiagnosisCause' | 'lastDiagnosisFix' | 'lastDiagnosisConfidence' | 'lastDiagnosisAt'> {
  if (!d) {
    return {
      lastDiagnosisCode: prev?.lastDiagnosisCode ?? null,
      lastDiagnosisCause: prev?.lastDiagnosisCause ?? null,
      lastDiagnosisFix: prev?.lastDiagnosisFix ?? null,
      lastDiagnosisConfidence: prev?.lastDiagnosisConfidence ?? null,
      lastDiagnosisAt: prev?.lastDiagnosisAt ?? null,
    };
  }
  return {
    lastDiagnosisCode: d.code,
    lastDiagnosisCause: d.cause.slice(0, 2000),
    lastDiagnosisFix: d.fix.slice(0, 4000),
    lastDiagnosisConfidence: d.confidence,
    lastDiagnosisAt: at.toISOString(),
  };
}
