/**
 * The real ids a fix is filled in with, from the settings: the poll, the
 * sender and the doctor build their `FixContext` here, so every fix names the
 * same app, tenant, mailbox and hosts.
 */
import type { AppConfig, MailboxConfig } from '../config/index.js';
import type { FixContext } from '../errors.js';

/** What a caller knows beyond the app: the mailbox, the From address, the protocol. */
export interface FixContextExtras {
  /** The mailbox address the failure concerns; absent: fixes use a placeholder. */
  mailbox?: string;
  /** The From address a notification was sent as (SMTP send-as fixes). */
  from?: string;
  /** The protocol that failed; fixes that differ per protocol (switches, roles) pick by it. */
  protocol?: 'imap' | 'pop3' | 'smtp';
}

/**
 * The fix context of an app registration (ids, cloud hosts, service
 * principal object id when configured) plus `extras`.
 *
 * @example
 * ```ts
 * throw withContext(err, fixContextOf(app, { mailbox: 'ops@contoso.com', protocol: 'smtp', from }));
 * ```
 */
export function fixContextOf(app: AppConfig, extras: FixContextExtras = {}): FixContext {
  const hp = (e: { host: string; port: number }) => `${e.host}:${e.port}`;
  return {
    appId: app.clientId,
    appName: app.name,
    tenantId: app.tenantId,
    resource: app.resource,
    loginHost: app.authorityHost,
    endpoints: { imap: hp(app.endpoints.imap), pop3: hp(app.endpoints.pop3), smtp: hp(app.endpoints.smtp) },
    ...(app.servicePrincipalObjectId ? { servicePrincipalObjectId: app.servicePrincipalObjectId } : {}),
    ...Object.fromEntries(Object.entries(extras).filter(([, v]) => v !== undefined)),
  };
}

/** The fix context of one configured mailbox (its own host/port override included). */
export function fixContextOfMailbox(mailbox: MailboxConfig, extras: Omit<FixContextExtras, 'mailbox'> = {}): FixContext {
  const base = fixContextOf(mailbox.app, { mailbox: mailbox.address, protocol: mailbox.protocol, ...extras });
  return { ...base, endpoints: { ...base.endpoints, [mailbox.protocol]: `${mailbox.host}:${mailbox.port}` } };
}
