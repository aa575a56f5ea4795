/**
 * A lean imapflow session start for polling: only what a poll needs before EXAMINE/SELECT.
 *
 * imapflow's `connect()` runs, one round trip each (imapflow 2.1.2, `startSession()` and
 * `commands/select.js`): CAPABILITY (skipped when the greeting carries it), ID, STARTTLS,
 * AUTHENTICATE, a second ID when the first answer was short, NAMESPACE, COMPRESS and ENABLE
 * when offered; then `mailboxOpen()` runs LIST and LSUB for the folder's metadata before
 * EXAMINE. Against Exchange Online (tens of ms away) that is 8 round trips for an idle poll,
 * 4 of them (2nd ID, NAMESPACE, LIST, LSUB) for data a poll never reads:
 * - ID is informational; neither Exchange nor Dovecot requires it. Both IDs are skipped.
 * - NAMESPACE gives the personal namespace prefix, which imapflow prepends to relative folder
 *   paths. Postroom's `folder` setting is the full path (Exchange's prefix is empty), so it is
 *   skipped. imapflow also used NAMESPACE to catch Exchange's "User is authenticated but not
 *   connected"; without it that reply arrives on EXAMINE, where `imap/errors.ts` maps it to
 *   `MailboxNotConnected` already.
 * - LIST/LSUB fill imapflow's folder cache (delimiter, special-use, subscribed), copied into
 *   `mailboxOpen()`'s result only. Seeding the cache with the folder makes select skip them.
 * COMPRESS and ENABLE stay as imapflow decides (`disableCompression`/`disableAutoEnable`).
 *
 * This overrides imapflow internals (`startSession`, `run`, `folders`); `applyLeanSession`
 * checks that they exist and otherwise leaves the client as it is (a full session start), so
 * an imapflow upgrade can cost round trips but never correctness. imapflow is pinned.
 */
import type { ImapFlow } from 'imapflow';

/** Options of {@link applyLeanSession}. */
export interface LeanSessionOptions {
  /** Folders the session will open (e.g. the polled folder): LIST/LSUB are skipped for these. */
  folders: string[];
}

interface ImapFlowInternals {
  startSession?: () => Promise<void>;
  run?: (command: string, ...args: unknown[]) => Promise<unknown>;
  upgradeToSTARTTLS?: () => Promise<unknown>;
  authenticate?: () => Promise<unknown>;
  compress?: () => Promise<unknown>;
  autoEnable?: () => Promise<unknown>;
  folders?: Map<string, unknown>;
  options?: { disableCompression?: boolean; disableAutoEnable?: boolean };
  usable?: boolean;
}

/**
 * Makes `client` start its session without the round trips a poll does not need. Call it
 * after `new ImapFlow(...)` and before `connect()`. Returns false (client untouched) when
 * this imapflow does not have the internals it relies on.
 */
export function applyLeanSession(client: ImapFlow, options: LeanSessionOptions): boolean {
  const c = client as unknown as ImapFlowInternals;
  const needed = [c.startSession, c.run, c.upgradeToSTARTTLS, c.authenticate, c.compress, c.autoEnable];
  if (needed.some((f) => typeof f !== 'function') || !(c.folders instanceof Map)) return false;
  c.startSession = async function leanStartSession(this: ImapFlowInternals) {
    await this.run!('CAPABILITY');
    await this.upgradeToSTARTTLS!();
    await this.authenticate!();
    if (!this.options?.disableCompression) await this.compress!();
    if (!this.options?.disableAutoEnable) await this.autoEnable!();
    this.usable = true;
  };
  for (const path of options.folders) {
    const normalized = path.toUpperCase() === 'INBOX' ? 'INBOX' : path;
    // What LIST would have cached; select copies only delimiter/specialUse/subscribed/listed.
    c.folders.set(normalized, { path: normalized, name: normalized, listed: true, flags: new Set<string>() });
  }
  return true;
}
