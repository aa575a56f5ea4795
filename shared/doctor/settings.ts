/**
 * The settings layer: what loaded, and what loads but cannot work against
 * Exchange Online (a ✗: Graph resource, common/organizations tenant, an app
 * without mailbox) or deserves a look (a !: every other load warning).
 */
import type { AppConfig, PostroomConfig } from '../config/index.js';
import { CLOUDS } from '../config/clouds.js';
import { settingWarnings, type SettingWarning } from '../diagnose/settings.js';
import { describeStorageCredential } from '../storage.js';
import type { DoctorCheck, DoctorRun } from './types.js';

/** Adds the settings checks; returns whether any failed. */
export function checkSettings(config: PostroomConfig, run: DoctorRun): boolean {
  const storage = config.storage.connectionString ? 'a connection string' : `service URIs with ${describeStorageCredential(config.storage)}`;
  run.add({
    layer: 'settings',
    subject: 'config',
    status: 'ok',
    ms: 0,
    detail: `${config.apps.length} app(s), ${config.mailboxes.length} mailbox(es), storage by ${storage}${config.caFile ? `, extra CA ${config.caFile}` : ''}`,
  });
  const hard = settingWarnings(config.apps, config.mailboxes);
  const apps = new Map(config.apps.map((a) => [a.name, a]));
  for (const w of hard) run.add(settingFailure(w, apps.get(w.app)!));
  const hardMessages = new Set(hard.map((w) => w.message));
  // A plain secret is what the sandbox is for: the Key Vault line says it is in use.
  const expected = (m: string) => config.sandbox && /uses a plain secret value/.test(m);
  for (const w of config.warnings.filter((m) => !hardMessages.has(m) && !expected(m)))
    run.add({ layer: 'settings', subject: 'config', status: 'warn', ms: 0, detail: w, code: 'SettingWarning' });
  return hard.length > 0;
}

function settingFailure(w: SettingWarning, app: AppConfig): DoctorCheck {
  const fix: Record<SettingWarning['code'], string> = {
    NonExchangeResource: `Remove "resource" from app "${app.name}" in POSTROOM_APPS: the scope is then ${CLOUDS[app.cloud].resource}/.default, the Exchange Online resource IMAP, POP and SMTP accept.`,
    GenericTenant: `Set "tenantId" of app "${app.name}" to the directory (tenant) id that holds the mailboxes (az account show --query tenantId -o tsv, signed in to that tenant); app-only tokens cannot be had from ${app.tenantId}.`,
    AppWithoutMailbox: `Add a mailbox with "app": "${app.name}" to POSTROOM_MAILBOXES, or remove app "${app.name}" from POSTROOM_APPS.`,
  };
  return { layer: 'settings', subject: `app ${app.name} (${app.clientId})`, status: 'fail', ms: 0, detail: w.message, code: w.code, fix: fix[w.code] };
}
