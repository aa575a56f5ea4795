import type { AppConfig, MailboxConfig } from '../config/index.js';
import { fixContextOfMailbox } from '../diagnose/context.js';
import type { Runtime } from '../runtime.js';
import type { CredentialInfo, CredentialKind } from '../auth/credentials.js';
import { ERROR_CATALOG, isPostroomError, type PostroomError, type PostroomErrorCode } from '../errors.js';
import { readStatus, type MailboxStatus } from '../status/index.js';

/** One configured mailbox in the status report. */
export interface MailboxStatusEntry {
  /** The mailbox id, `<protocol>:<address>/<folder>`. */
  id: string;
  /** The mailbox address. */
  address: string;
  /** `imap` or `pop3`. */
  protocol: string;
  /** The polled folder (POP3: `INBOX`). */
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

/** One configured app's credential in the status report: its kind and expiry, never the credential itself. */
export interface AppCredentialEntry {
  /**
   *
   */
  name: string;
  /**
   *
   */
  clientId: string;
  /**
   *
   */
  kind: CredentialKind;
  /** When the secret or certificate expires (Key Vault `exp`; a certificate's notAfter if earlier); null when unknown or it never does (federated). */
  expiresOn: string | null;
  /** Whole days left (negative once expired); null when `expiresOn` is. */
  daysLeft: number | null;
  /** `warning` under 30 days, `error` once expired, `unknown` when not read (yet) in this process. */
  state: 'ok' | 'warning' | 'error' | 'unknown';
  /** What to know or do, in one line. */
  note: string;
  /** Hex SHA-256 thumbprint of the certificate in use (certificate apps, once read). */
  thumbprintSha256?: string;
  /** Whether it expires within 30 days or has expired (rotate it); null when not known. */
  expiring: boolean | null;
}

/** The status function's body when the settings are valid. */
export interface StatusReport {
  /** ISO 8601 time the report was made. */
  generatedAt: string;
  /** One entry per configured mailbox, in settings order. */
  mailboxes: MailboxStatusEntry[];
  /** One entry per configured app: credential kind and expiry. */
  apps: AppCredentialEntry[];
}

/** Options of {@link mailboxStatusReport} and {@link appCredentialReport}. */
export interface StatusReportOptions {
  /**
   * Read each app's credential when this process has not yet (one token
   * request per app, which reads the secret or certificate from Key Vault;
   * cached afterwards). Default true; false reports what is known.
   */
  readCredentials?: boolean;
  /** Stop waiting for those reads after this long; default 10 s (the entry then says unknown). */
  credentialTimeoutMs?: number;
}

const DAY_MS = 86_400_000;
const WARN_DAYS = 30;

/** The status function's body when the settings are invalid: every problem, as loading found them. */
export interface SettingsInvalidReport {
  /** ISO 8601 time the report was made. */
  generatedAt: string;
  /** Always `ConfigInvalid`. */
  code: 'ConfigInvalid';
  /** Every settings problem, one line each, naming the setting and what is wrong. */
  problems: string[];
  /** The catalog's fix for `ConfigInvalid`. */
  fix: string;
}

/** The status function's body: one entry per configured mailbox, one per app. */
export async function mailboxStatusReport(runtime: Runtime, options: StatusReportOptions = {}): Promise<StatusReport> {
  const now = runtime.now();
  const apps = appCredentialReport(runtime, options);
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
  return { generatedAt: now.toISOString(), mailboxes, apps: await apps };
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

/** Every configured app's credential kind and expiry (read first unless `readCredentials` is false). */
export async function appCredentialReport(runtime: Runtime, options: StatusReportOptions = {}): Promise<AppCredentialEntry[]> {
  return Promise.all(
    runtime.config.apps.map(async (app) => {
      const tokens = runtime.tokens(app);
      const needsRead = options.readCredentials !== false && app.credential.kind !== 'federated' && !tokens.credentialInfo().expiresOn;
      const read = needsRead ? await readCredential(() => tokens.getToken({ renew: false }), options.credentialTimeoutMs ?? 10_000) : undefined;
      return credentialEntry(app, tokens.credentialInfo(), runtime.now(), read);
    }),
  );
}

/** How reading a credential for the report went: done, failed (with the code), or still running at the timeout. */
type CredentialRead = { outcome: 'read' } | { outcome: 'failed'; code: string } | { outcome: 'timeout' };

async function readCredential(getToken: () => Promise<unknown>, timeoutMs: number): Promise<CredentialRead> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<CredentialRead>((resolve) => {
    timer = setTimeout(() => resolve({ outcome: 'timeout' }), timeoutMs);
  });
  const read = getToken().then(
    (): CredentialRead => ({ outcome: 'read' }),
    (e: unknown): CredentialRead => ({ outcome: 'failed', code: isPostroomError(e) ? e.code : 'Unknown' }),
  );
  try {
    return await Promise.race([read, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** The entry from what the credential knows: expired → error, under 30 days → warning. */
export function credentialEntry(app: AppConfig, info: CredentialInfo, now: Date, read?: CredentialRead): AppCredentialEntry {
  const entry = credentialState(app, info, now, read);
  return { ...entry, expiring: entry.state === 'unknown' ? null : entry.state !== 'ok' };
}

function credentialState(app: AppConfig, info: CredentialInfo, now: Date, read?: CredentialRead): Omit<AppCredentialEntry, 'expiring'> {
  const base = { name: app.name, clientId: app.clientId, kind: info.kind, ...(info.thumbprintSha256 ? { thumbprintSha256: info.thumbprintSha256 } : {}) };
  if (info.kind === 'federated') return { ...base, expiresOn: null, daysLeft: null, state: 'ok', note: 'federated credential: nothing stored, nothing expires' };
  const failed = read?.outcome === 'failed' ? ` (token request failed: ${read.code})` : '';
  if (!info.expiresOn) {
    if (!read || read.outcome === 'timeout')
      return { ...base, expiresOn: null, daysLeft: null, state: 'unknown', note: read ? 'not read in time: unknown' : 'unknown until first use' };
    if (read.outcome === 'failed') return { ...base, expiresOn: null, daysLeft: null, state: 'unknown', note: `could not be read: ${read.code}` };
    const plain = app.credential.kind === 'secret' && app.credential.secret.kind === 'plain';
    const note = plain
      ? 'plain secret from the settings (sandbox): no expiry known'
      : 'no expiry recorded in Key Vault: set one (az keyvault secret set-attributes --expires) to be warned';
    return { ...base, expiresOn: null, daysLeft: null, state: 'ok', note };
  }
  const left = info.expiresOn.getTime() - now.getTime();
  const daysLeft = Math.floor(left / DAY_MS);
  const entry = { ...base, expiresOn: info.expiresOn.toISOString(), daysLeft };
  if (left <= 0) return { ...entry, state: 'error', note: `the ${info.kind} expired ${Math.floor(-left / DAY_MS)} day(s) ago: polls fail until it is renewed${failed}` };
  if (left < WARN_DAYS * DAY_MS) return { ...entry, state: 'warning', note: `the ${info.kind} expires in ${daysLeft} day(s): renew it${failed}` };
  return { ...entry, state: 'ok', note: `valid for ${daysLeft} more day(s)${failed}` };
}

/** The report for settings that do not load (`ConfigInvalid`): the problem list instead of a failure. */
export function settingsInvalidReport(error: PostroomError, now: Date = new Date()): SettingsInvalidReport {
  const listed = (error as PostroomError & { problems?: unknown }).problems;
  const problems = Array.isArray(listed)
    ? listed.map(String)
    : error.message
        .split('\n')
        .filter((l) => l.startsWith('- '))
        .map((l) => l.slice(2).replace(/\. Fix: .*$/, ''));
  return { generatedAt: now.toISOString(), code: 'ConfigInvalid', problems: problems.length ? problems : [error.message], fix: error.fix };
}
