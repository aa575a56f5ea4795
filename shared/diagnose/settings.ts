/**
 * Settings that load but cannot work against Exchange Online: a warning at
 * load (config/index.ts) and a ✗ in the doctor, from one list of rules.
 */
import type { AppConfig, MailboxConfig } from '../config/index.js';
import { isExchangeResource, isGraphResource, tenantKind } from '../auth/claims.js';
import { CLOUDS } from '../config/clouds.js';

/** One setting that will not work, and what to set instead. */
export interface SettingWarning {
  /** `NonExchangeResource`: the token would not be for Exchange Online; `GenericTenant`: `common` or similar instead of a tenant; `AppWithoutMailbox`: no mailbox uses the app. */
  readonly code: 'NonExchangeResource' | 'GenericTenant' | 'AppWithoutMailbox';
  /** The app's settings name. */
  readonly app: string;
  /** What is wrong and what to set, in one line. */
  readonly message: string;
}

/**
 * Warnings for the loaded apps and mailboxes.
 *
 * @example
 * ```ts
 * for (const w of settingWarnings(config.apps, config.mailboxes)) logger.warn(w.message);
 * ```
 */
export function settingWarnings(apps: readonly AppConfig[], mailboxes: readonly MailboxConfig[]): SettingWarning[] {
  const out: SettingWarning[] = [];
  for (const app of apps) {
    const at = `app "${app.name}" (${app.clientId})`;
    if (isGraphResource(app.resource)) {
      out.push({
        code: 'NonExchangeResource',
        app: app.name,
        message: `${at}: resource ${app.resource} is Microsoft Graph; IMAP, POP and SMTP accept only Exchange Online tokens: remove "resource" (scope then ${exchangeScope(app)})`,
      });
    } else if (!isExchangeResource(app.resource)) {
      out.push({
        code: 'NonExchangeResource',
        app: app.name,
        message: `${at}: resource ${app.resource} is not an Exchange Online resource (expected ${exchangeScope(app)}); fine only for a private test stack`,
      });
    }
    if (tenantKind(app.tenantId) === 'generic') {
      out.push({
        code: 'GenericTenant',
        app: app.name,
        message: `${at}: tenantId "${app.tenantId}" names no tenant; app-only tokens need the directory (tenant) id that holds the mailboxes (authority ${app.authorityHost}/<tenant id>)`,
      });
    }
    if (!mailboxes.some((m) => m.app.name === app.name)) {
      out.push({ code: 'AppWithoutMailbox', app: app.name, message: `${at}: no mailbox in POSTROOM_MAILBOXES uses this app; add one ("app": "${app.name}") or remove the app` });
    }
  }
  return out;
}

function exchangeScope(app: AppConfig): string {
  return `${CLOUDS[app.cloud].resource}/.default`;
}
