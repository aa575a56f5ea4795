import type { AppConfig, MailboxConfig } from '../config/index.js';
import { fixContextOfMailbox } from '../diagnose/context.js';
import type { Runtime } from '../runtime.js';
import { ERROR_CATALOG, type PostroomError, type PostroomErrorCode } from '../errors.js';
import { readStatus, type MailboxStatus } from '../status/index.js';

/** One configured mailbox in the status report. */
export interface MailboxStatusEntry {
  id: string;
  address: string;
  protocol: string;
  folder: string;
  /** The last recorded poll; null when the mailbox was never polled. */
  status: MailboxStatus | null;
  /** Seconds since the last successful poll; null when there was none. */
  lagSeconds: number | null;
  /** The admin step that fixes the last error (the diagnosis' when it made that error, else the error catalog's); null when none. */
  lastErrorFix: string | null;
  /** The last refused login narrowed down (shared/diagnose); null when none was made. */
  lastDiagnosis: { code: string; cause: string; fix: string; confidence: string; at: string } | null;
}

/** One configured app's credential, as far as this process has read it. */
export interface AppStatusEntry {
  name: string;
  clientId: string;
  tenantId: string;
  /** `secret`, `certificate` or `federated`. */
  credential: string;
  /** When the secret or certificate expires; null until this process has read it, and for federated credentials. */
  expiresOn: string | null;
  /** Whether it expires within 30 days (rotate it); null when not known. */
  expiring: boolean | null;
}

/** The status function's body when the settings are valid. */
export interface StatusReport {
  generatedAt: string;
  mailboxes: MailboxStatusEntry[];
  apps: AppStatusEntry[];
}

/** The status function's body when the settings are invalid: every problem, as loading found them. */
export interface SettingsInvalidReport {
  generatedAt: string;
  code: 'ConfigInvalid';
  problems: string[];
  fix: string;
}

/** The status function's body: one entry per configured mailbox, and each app's credential expiry. */
export async function mailboxStatusReport(runtime: Runtime): Promise<StatusReport> {
  const now = runtime.now();
  const mailboxes = await Promise.all(
    runtime.config.mailboxes.map(async (m): Promise<MailboxStatusEntry> => {
      const status = (await readStatus(runtime.state, m)) ?? null;
      return {
        id: m.id,
        address: m.address,
        protocol: m.protocol,
        folder: m.folder,
        status,
        lagSeconds: status?.lastSuccessAt ? Math.max(0, Math.round((now.getTime() - Date.parse(status.lastSuccessAt)) / 1000)) : null,
        lastErrorFix: lastErrorFix(m, status),
        lastDiagnosis: lastDiagnosis(status),
      };
    }),
  );
  return { generatedAt: now.toISOString(), mailboxes, apps: runtime.config.apps.map((a) => appEntry(runtime, a)) };
}

function lastErrorFix(m: MailboxConfig, status: MailboxStatus | null): string | null {
  const code = status?.lastErrorCode as PostroomErrorCode | null | undefined;
  if (code && status?.lastDiagnosisFix && status.lastDiagnosisCode === code) return status.lastDiagnosisFix;
  return (code && ERROR_CATALOG[code]?.fix(fixContextOfMailbox(m))) || null;
}

function lastDiagnosis(s: MailboxStatus | null): MailboxStatusEntry['lastDiagnosis'] {
  if (!s?.lastDiagnosisCode) return null;
  return { code: s.lastDiagnosisCode, cause: s.lastDiagnosisCause ?? '', fix: s.lastDiagnosisFix ?? '', confidence: s.lastDiagnosisConfidence ?? '', at: s.lastDiagnosisAt ?? '' };
}

function appEntry(runtime: Runtime, app: AppConfig): AppStatusEntry {
  const info = runtime.tokens(app).credentialInfo();
  return {
    name: app.name,
    clientId: app.clientId,
    tenantId: app.tenantId,
    credential: info.kind,
    expiresOn: info.expiresOn?.toISOString() ?? null,
    expiring: info.expiresOn ? info.expiring === true : null,
  };
}

/** The report for settings that do not load (`ConfigInvalid`): the problem list instead of a failure. */
export function settingsInvalidReport(error: PostroomError, now: Date = new Date()): SettingsInvalidReport {
  const listed = (error as PostroomError & { problems?: unknown }).problems;
  const problems = Array.isArray(listed)
    ? listed.map(String)
    : error.message.split('\n').filter((l) => l.startsWith('- ')).map((l) => l.slice(2).replace(/\. Fix: .*$/, ''));
  return { generatedAt: now.toISOString(), code: 'ConfigInvalid', problems: problems.length ? problems : [error.message], fix: error.fix };
}
