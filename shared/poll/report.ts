import { fixContextOfMailbox } from '../diagnose/context.js';
import type { Runtime } from '../runtime.js';
import { ERROR_CATALOG, type PostroomError, type PostroomErrorCode } from '../errors.js';
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
  /** The admin step that fixes the last error (from the error catalog); null when none. */
  lastErrorFix: string | null;
}

/** The status function's body when the settings are valid. */
export interface StatusReport {
  /** ISO 8601 time the report was made. */
  generatedAt: string;
  /** One entry per configured mailbox, in settings order. */
  mailboxes: MailboxStatusEntry[];
}

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

/** The status function's body: one entry per configured mailbox. */
export async function mailboxStatusReport(runtime: Runtime): Promise<StatusReport> {
  const now = runtime.now();
  const mailboxes = await Promise.all(
    runtime.config.mailboxes.map(async (m): Promise<MailboxStatusEntry> => {
      const status = (await readStatus(runtime.state, m)) ?? null;
      const code = status?.lastErrorCode as PostroomErrorCode | null | undefined;
      return {
        id: m.id,
        address: m.address,
        protocol: m.protocol,
        folder: m.folder,
        status,
        lagSeconds: status?.lastSuccessAt ? Math.max(0, Math.round((now.getTime() - Date.parse(status.lastSuccessAt)) / 1000)) : null,
        lastErrorFix: (code && ERROR_CATALOG[code]?.fix(fixContextOfMailbox(m))) || null,
      };
    }),
  );
  return { generatedAt: now.toISOString(), mailboxes };
}

/** The report for settings that do not load (`ConfigInvalid`): the problem list instead of a failure. */
export function settingsInvalidReport(error: PostroomError, now: Date = new Date()): SettingsInvalidReport {
  const listed = (error as PostroomError & { problems?: unknown }).problems;
  const problems = Array.isArray(listed)
    ? listed.map(String)
    : error.message.split('\n').filter((l) => l.startsWith('- ')).map((l) => l.slice(2).replace(/\. Fix: .*$/, ''));
  return { generatedAt: now.toISOString(), code: 'ConfigInvalid', problems: problems.length ? problems : [error.message], fix: error.fix };
}
