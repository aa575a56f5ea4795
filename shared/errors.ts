/**
 * One error base for Postroom, with a union of codes and a central catalog
 * (in the manner of nodemailer): every code says what to do about it, and
 * every Exchange Online / Entra failure maps to the admin step that fixes it.
 */

/** Every `PostroomError.code`; each has an entry in ERROR_CATALOG with its summary, fix and retryability. Stable: match on these. */
export type PostroomErrorCode =
  | 'ConfigInvalid'
  | 'SecretUnavailable'
  | 'KeyVaultUnreachable'
  | 'InvalidClientSecret'
  | 'ClientSecretExpired'
  | 'SecretExpired'
  | 'CertificateUnavailable'
  | 'CertificateExpired'
  | 'InvalidClientCertificate'
  | 'ManagedIdentityUnavailable'
  | 'FederatedCredentialMismatch'
  | 'CredentialExpiring'
  | 'AppNotFound'
  | 'ResourceNotFound'
  | 'TokenRequestFailed'
  | 'MissingRole'
  | 'AuthenticationFailed'
  | 'MailboxNotConnected'
  | 'SessionExpired'
  | 'Throttled'
  | 'ConnectionFailed'
  | 'TlsFailed'
  | 'ProtocolError'
  | 'CommandFailed'
  | 'Timeout'
  | 'Aborted'
  | 'FolderNotFound'
  | 'LeaseHeld'
  | 'CheckpointConflict'
  | 'SinkFailed'
  | 'StorageUnavailable'
  | 'DeadlineReached'
  | 'SmtpAuthDisabled'
  | 'SendAsDenied'
  | 'SmtpConcurrencyLimit'
  | 'SendFailed'
  // Precise diagnosis (issue 12): the app token's claims, the server refusal narrowed down, a dropped session.
  | 'WrongTenant'
  | 'WrongAudience'
  | 'TokenExpired'
  | 'ClockSkew'
  | 'NotAppToken'
  | 'ServicePrincipalNotRegistered'
  | 'ProtocolDisabled'
  | 'ConnectionLost';

/**
 * What a fix is filled in with: the real ids instead of placeholders. Every
 * field is optional (an error raised deep in a client may know only the
 * mailbox); `withContext` adds what a caller learns later.
 */
export interface FixContext {
  /** Application (client) id of the app registration. */
  readonly appId?: string;
  /** Settings name of the app (POSTROOM_APPS[].name). */
  readonly appName?: string;
  /** Directory (tenant) id or verified domain, as configured. */
  readonly tenantId?: string;
  /** The mailbox the app authenticates as (XOAUTH2 `user=`). */
  readonly mailbox?: string;
  /** The From address a notification was sent with (SMTP). */
  readonly from?: string;
  /** The protocol in use when it failed. */
  readonly protocol?: 'imap' | 'pop3' | 'smtp';
  /** Exchange resource of the app's cloud, e.g. `https://outlook.office365.com`. */
  readonly resource?: string;
  /** Login host, e.g. `https://login.microsoftonline.com`. */
  readonly loginHost?: string;
  /** `host:port` per protocol. */
  readonly endpoints?: { readonly imap?: string; readonly pop3?: string; readonly smtp?: string };
  /** The Enterprise application's (service principal's) object id, when configured. */
  readonly servicePrincipalObjectId?: string;
}

/** What the catalog says about one error code. */
export interface CatalogEntry {
  /** What went wrong, in one line. */
  readonly summary: string;
  /** The step (usually an admin's) that fixes it, filled in from what is known; empty when there is none to take. */
  readonly fix: (ctx: FixContext) => string;
  /** Whether trying again later (same input) may succeed. */
  readonly retryable: boolean;
}

const ROLES = { imap: 'IMAP.AccessAsApp', pop3: 'POP.AccessAsApp', smtp: 'SMTP.SendAsApp' } as const;
/** Exchange Online's app role ids (application permissions of resource 00000002-0000-0ff1-ce00-000000000000). */
const ROLE_IDS = { imap: '5e5addcd-3e8d-4e90-baf5-964efab2b20a', pop3: 'cb842b43-da6e-4506-86fe-bb12199c656d', smtp: '7146a1f0-8703-45b3-9eae-527a64c00995' } as const;
const EXCHANGE_API = '00000002-0000-0ff1-ce00-000000000000';
const PROTOCOL_NAMES = { imap: 'IMAP', pop3: 'POP', smtp: 'SMTP' } as const;
const PROPAGATION = 'Exchange applies permission changes after 15-30 minutes.';

/** The context's values, with a plain description where a value is unknown. */
function ids(c: FixContext) {
  const appId = c.appId ?? '<application (client) id>';
  return {
    appId,
    tenant: c.tenantId ?? '<tenant id>',
    mailbox: c.mailbox ?? '<mailbox>',
    resource: c.resource ?? 'https://outlook.office365.com',
    loginHost: c.loginHost ?? 'https://login.microsoftonline.com',
    // Unknown object id: a PowerShell sub-expression that prints it, so the command still runs as is.
    sp: c.servicePrincipalObjectId ?? `(az ad sp show --id ${appId} --query id -o tsv)`,
  };
}

/** Why the object id matters, said once per fix, only when it is not configured. */
function spNote(c: FixContext): string {
  if (c.servicePrincipalObjectId) return '';
  return (
    ` — the -ObjectId/-User value is the Enterprise application's object id, which az ad sp show --id ${ids(c).appId} --query id -o tsv prints; ` +
    "the object id shown under App registrations is the application object's, not the service principal's that Exchange matches against the token's oid " +
    "(set servicePrincipalObjectId in the app's settings to have the id written here)"
  );
}

const registerSp = (c: FixContext) => `New-ServicePrincipal -AppId ${ids(c).appId} -ObjectId ${ids(c).sp}`;
const fullAccess = (c: FixContext) => `Add-MailboxPermission -Identity ${ids(c).mailbox} -User ${ids(c).sp} -AccessRights FullAccess`;
const smtpAuthOn = (c: FixContext) => `Set-CASMailbox -Identity ${ids(c).mailbox} -SmtpClientAuthenticationDisabled $false`;

function protocolSwitch(c: FixContext, p: 'imap' | 'pop3'): string {
  return `Set-CASMailbox -Identity ${ids(c).mailbox} -${p === 'imap' ? 'ImapEnabled' : 'PopEnabled'} $true`;
}

function addRole(c: FixContext, p: 'imap' | 'pop3' | 'smtp' | undefined): string {
  const { appId, tenant } = ids(c);
  const roles = p ? [p] : (['imap', 'pop3', 'smtp'] as const);
  const names = roles.map((r) => ROLES[r]).join(' / ');
  const perms = roles.map((r) => `${ROLE_IDS[r]}=Role`).join(' ');
  return (
    `In Entra (tenant ${tenant}): App registrations -> ${appId} -> API permissions -> Add a permission -> APIs my organization uses -> ` +
    `Office 365 Exchange Online -> Application permissions -> ${names} -> Grant admin consent; or ` +
    `az ad app permission add --id ${appId} --api ${EXCHANGE_API} --api-permissions ${perms} && az ad app permission admin-consent --id ${appId}.`
  );
}

function authFailedFix(c: FixContext): string {
  const { mailbox } = ids(c);
  if (c.protocol === 'smtp') {
    return (
      `Exchange gives no reason for 535 5.7.3. Check, in order: SMTP AUTH is enabled for ${mailbox} (${smtpAuthOn(c)}); ` +
      `the service principal is registered (${registerSp(c)})${spNote(c)}; it may act for ${mailbox} (${fullAccess(c)}); ` +
      `SMTP.SendAsApp is consented for app ${ids(c).appId}. ${PROPAGATION}`
    );
  }
  const switches = c.protocol ? protocolSwitch(c, c.protocol) : `Set-CASMailbox -Identity ${mailbox} -ImapEnabled $true -PopEnabled $true`;
  return (
    `Exchange gives no reason for this refusal. Check, in order: the service principal is registered (${registerSp(c)})${spNote(c)}; ` +
    `it has FullAccess on ${mailbox} (${fullAccess(c)}); ${c.protocol ? PROTOCOL_NAMES[c.protocol] : 'IMAP/POP'} is enabled for ${mailbox} (${switches}). ` +
    `Probing the other protocols with the same token tells these apart (shared/diagnose). ${PROPAGATION}`
  );
}

function sendAsFix(c: FixContext): string {
  const { mailbox } = ids(c);
  const from = c.from ?? '<From address>';
  if (c.from !== undefined && c.mailbox !== undefined && c.from.toLowerCase() === c.mailbox.toLowerCase()) {
    return (
      `The message was sent with From ${from}, the same mailbox the app authenticated as, so no SendAs grant for another address is missing: ` +
      `the service principal may not act for ${mailbox} itself. Grant it (${fullAccess(c)})${spNote(c)}. ${PROPAGATION}`
    );
  }
  return (
    `The message was sent with From ${from} while the app authenticated as ${mailbox}: ` +
    `Add-RecipientPermission -Identity ${from} -Trustee ${mailbox} -AccessRights SendAs, or send from ${mailbox} (notify.from). ${PROPAGATION}`
  );
}

function protocolDisabledFix(c: FixContext): string {
  const { mailbox } = ids(c);
  if (c.protocol === 'smtp') return `${smtpAuthOn(c)} (verify: Get-CASMailbox -Identity ${mailbox} | fl SmtpClientAuthenticationDisabled). ${PROPAGATION}`;
  const p = c.protocol ?? 'imap';
  const field = p === 'imap' ? 'ImapEnabled' : 'PopEnabled';
  return `${protocolSwitch(c, p)} (verify: Get-CASMailbox -Identity ${mailbox} | fl ${field}). ${PROPAGATION}`;
}

const s = (text: string) => () => text;
const none = s('');

export const ERROR_CATALOG: Readonly<Record<PostroomErrorCode, CatalogEntry>> = Object.freeze({
  ConfigInvalid: { summary: 'settings are invalid', fix: s('Correct the settings listed and restart.'), retryable: false },
  SecretUnavailable: {
    summary: 'the client secret could not be read from Key Vault',
    fix: s('Give the Function App\'s managed identity "get" on secrets in the vault (Key Vault Secrets User role) and check the vault URL and secret name.'),
    retryable: true,
  },
  KeyVaultUnreachable: {
    summary: 'Key Vault did not answer (network failure or timeout)',
    fix: s(
      'Nothing to grant: the vault was not reached, so permissions were not checked. Check that the vault URL is right, that its host resolves and answers from the Function App ' +
        "(the vault's Networking: public access allowed from the app, or a private endpoint with its privatelink.vaultcore.azure.net DNS zone linked to the app's network; outbound 443), " +
        'and the Azure status page. The secret is read again at the next poll.',
    ),
    retryable: true,
  },
  InvalidClientSecret: {
    summary: 'Entra rejected the client secret (AADSTS7000215)',
    fix: (c) => `Store the client secret's Value (not its Secret ID) in Key Vault; check it belongs to app ${ids(c).appId} (az ad app credential list --id ${ids(c).appId}).`,
    retryable: false,
  },
  ClientSecretExpired: {
    summary: 'the client secret has expired (AADSTS7000222)',
    fix: (c) => `Create a new client secret (az ad app credential reset --id ${ids(c).appId} --append) and store its Value in Key Vault.`,
    retryable: false,
  },
  SecretExpired: {
    summary: 'the client secret in Key Vault is past its expiry date',
    fix: (c) =>
      `Create a new client secret (az ad app credential reset --id ${ids(c).appId} --append), store its Value in Key Vault as a new version with its expiry date (az keyvault secret set --expires), or move the app to a certificate or a federated credential.`,
    retryable: false,
  },
  CertificateUnavailable: {
    summary: 'the app certificate could not be read from Key Vault',
    fix: s(
      'Give the Function App\'s managed identity the "Key Vault Secrets User" role on the vault (the key is read through the certificate\'s secret), check the vault URL and certificate name, and create the certificate with content type PEM (application/x-pem-file) so its secret holds the private key and the certificate.',
    ),
    retryable: true,
  },
  CertificateExpired: {
    summary: 'the app certificate in Key Vault has expired',
    fix: (c) =>
      `Renew the certificate in Key Vault (or import a new one under the same name) and upload its public part to app registration ${ids(c).appId} (Certificates & secrets -> Certificates, or az ad app credential reset --id ${ids(c).appId} --cert @cert.pem --append).`,
    retryable: false,
  },
  InvalidClientCertificate: {
    summary: 'Entra rejected the client certificate assertion (AADSTS700027)',
    fix: (c) =>
      `Upload the certificate that is in Key Vault (its public .cer) to app registration ${ids(c).appId} under Certificates & secrets -> Certificates; the SHA-256 thumbprint must match. A renewed certificate must be uploaded again.`,
    retryable: false,
  },
  ManagedIdentityUnavailable: {
    summary: 'the managed identity token for the federated credential could not be obtained',
    fix: s(
      'Assign the user-assigned managed identity to the Function App and set its client id in the app\'s "federated.clientId"; outside Azure there is no managed identity (use a secret or a certificate).',
    ),
    retryable: true,
  },
  FederatedCredentialMismatch: {
    summary: 'Entra found no federated identity credential matching the managed identity token (AADSTS700211/700212/700213)',
    fix: (c) =>
      `On app registration ${ids(c).appId} add a federated credential (az ad app federated-credential create --id ${ids(c).appId}) with issuer ${ids(c).loginHost}/${ids(c).tenant}/v2.0, ` +
      "subject = the managed identity's principal (object) id (the template's output identityPrincipalId) and audience api://AzureADTokenExchange.",
    retryable: false,
  },
  CredentialExpiring: {
    summary: 'the app credential expires in less than 30 days (a warning, not a failure)',
    fix: (c) =>
      `Rotate it before it expires: add a new client secret or certificate to app registration ${ids(c).appId}, store it in Key Vault, and remove the old one afterwards; or move to a federated credential (no expiry).`,
    retryable: true,
  },
  AppNotFound: {
    summary: 'the application was not found in the tenant (AADSTS700016)',
    fix: (c) =>
      `Check the client id (${ids(c).appId}), the tenant id (${ids(c).tenant}) and the cloud (login host ${ids(c).loginHost}); the app must be registered (or consented) in that tenant.`,
    retryable: false,
  },
  ResourceNotFound: {
    summary: 'the Exchange resource was not found in the tenant (AADSTS500011)',
    fix: (c) => `Use the Exchange scope of the tenant's cloud (${ids(c).resource}/.default) and make sure tenant ${ids(c).tenant} has Exchange Online.`,
    retryable: false,
  },
  TokenRequestFailed: {
    summary: 'the token request failed',
    fix: (c) => `Check the tenant id (${ids(c).tenant}), client id (${ids(c).appId}), cloud and network reachability of ${ids(c).loginHost}.`,
    retryable: true,
  },
  MissingRole: { summary: 'the app token lacks the role this protocol needs', fix: (c) => addRole(c, c.protocol), retryable: false },
  AuthenticationFailed: { summary: 'the mail server refused the app token', fix: authFailedFix, retryable: false },
  MailboxNotConnected: {
    summary: 'the app authenticated but the mailbox could not be opened',
    fix: (c) => `Grant the service principal FullAccess on exactly ${ids(c).mailbox} (${fullAccess(c)})${spNote(c)} and check the address. ${PROPAGATION}`,
    retryable: false,
  },
  SessionExpired: { summary: 'the server ended the session because the access token expired', fix: none, retryable: true },
  Throttled: { summary: 'the server is throttling this client', fix: s('Poll less often or fewer mailboxes at once.'), retryable: true },
  ConnectionFailed: {
    summary: 'the mail server could not be reached',
    fix: (c) => {
      const e = c.endpoints ?? {};
      const hosts = e.imap || e.pop3 || e.smtp ? ` (${[e.imap, e.pop3, e.smtp].filter(Boolean).join(', ')})` : '';
      return `Check the host and port for the cloud${hosts}, DNS and outbound firewall rules (IMAP 993, POP3 995, SMTP 587).`;
    },
    retryable: true,
  },
  TlsFailed: {
    summary: 'the TLS handshake failed',
    fix: s('The server must offer TLS 1.2 or later with a certificate trusted by this host (or one signed by the CA file named in the settings).'),
    retryable: false,
  },
  ProtocolError: { summary: 'the server sent a reply this client does not understand', fix: none, retryable: true },
  CommandFailed: { summary: 'the server refused a command', fix: none, retryable: true },
  Timeout: { summary: 'the operation timed out', fix: none, retryable: true },
  Aborted: { summary: 'the operation was aborted', fix: none, retryable: true },
  FolderNotFound: {
    summary: 'the folder does not exist',
    fix: (c) => `Check the folder name in the settings of ${ids(c).mailbox} (names are case-sensitive except INBOX).`,
    retryable: false,
  },
  LeaseHeld: { summary: 'another instance is polling this mailbox', fix: none, retryable: false },
  CheckpointConflict: { summary: 'the checkpoint was changed by another writer', fix: none, retryable: true },
  SinkFailed: { summary: 'the message could not be written to storage', fix: s('Check the storage connection setting and that the account is reachable.'), retryable: true },
  StorageUnavailable: {
    summary: 'the storage account did not answer',
    fix: s(
      'Check the POSTROOM_STORAGE settings (connection string, or service URIs and identity), that the account exists and is reachable from the Function App, and that the identity has the Blob, Queue and Table data roles.',
    ),
    retryable: true,
  },
  DeadlineReached: {
    summary: 'the poll stopped at its deadline',
    fix: s(
      "Nothing is lost: what was written is acknowledged and the next poll goes on from there. If this repeats, raise POSTROOM_POLL_DEADLINE_SECONDS (within the host's functionTimeout) or lower POSTROOM_MAX_MESSAGES_PER_POLL.",
    ),
    retryable: false,
  },
  SmtpAuthDisabled: {
    summary: 'SMTP AUTH is disabled for the tenant or mailbox (535 5.7.139)',
    fix: (c) => `OAuth SMTP needs SMTP AUTH on: per mailbox ${smtpAuthOn(c)}, or for the tenant Set-TransportConfig -SmtpClientAuthenticationDisabled $false. ${PROPAGATION}`,
    retryable: false,
  },
  SendAsDenied: { summary: 'Exchange refused the From address (SendAsDenied)', fix: sendAsFix, retryable: false },
  SmtpConcurrencyLimit: { summary: 'more than 3 concurrent SMTP connections for the mailbox (432 4.3.2)', fix: none, retryable: true },
  SendFailed: { summary: 'the SMTP server refused the message', fix: none, retryable: true },
  WrongTenant: {
    summary: 'the app token was issued by another tenant than the one configured',
    fix: (c) =>
      `Set tenantId of app ${c.appName ?? ids(c).appId} to the directory (tenant) id that holds the mailboxes (configured: ${ids(c).tenant}; never common or organizations), ` +
      `and have an admin of that tenant consent to app ${ids(c).appId}: ${ids(c).loginHost}/${ids(c).tenant}/adminconsent?client_id=${ids(c).appId}.`,
    retryable: false,
  },
  WrongAudience: {
    summary: 'the app token is not for Exchange Online',
    fix: (c) =>
      `Ask for the Exchange scope of the cloud, ${ids(c).resource}/.default (remove the app's "resource" override or set it to ${ids(c).resource}). ` +
      `A Microsoft Graph token (https://graph.microsoft.com, 00000003-0000-0000-c000-000000000000) is never accepted over IMAP, POP or SMTP, and Graph's Mail.* permissions do not apply: ${addRole(c, c.protocol)}`,
    retryable: false,
  },
  TokenExpired: {
    summary: 'the app token has expired',
    fix: s("None if it happens once: a new token is asked for. If fresh tokens are expired too, this host's clock is wrong: turn on time synchronisation (NTP)."),
    retryable: true,
  },
  ClockSkew: {
    summary: "this host's clock disagrees with the login host's",
    fix: s(
      "Turn on time synchronisation (Linux: timedatectl set-ntp true; Windows: w32tm /resync). Exchange checks the token's nbf/exp with its own clock; a skewed host sees valid tokens as expired or not yet valid.",
    ),
    retryable: true,
  },
  NotAppToken: {
    summary: 'the token is not an app-only token',
    fix: (c) =>
      `Use the client credentials flow (app ${ids(c).appId}'s secret or certificate, scope ${ids(c).resource}/.default): IMAP/POP/SMTP for unattended mailboxes need application permissions, not delegated ones. ${addRole(c, c.protocol)}`,
    retryable: false,
  },
  ServicePrincipalNotRegistered: {
    summary: "Exchange does not know the app's service principal",
    fix: (c) =>
      `Connect-ExchangeOnline -Organization ${ids(c).tenant}; ${registerSp(c)}${spNote(c)}; then ${fullAccess(c)}. ` +
      `Check with Get-ServicePrincipal -Identity ${ids(c).appId} | fl AppId,ObjectId (a service principal registered with the App registration's object id must be removed and registered again). ${PROPAGATION}`,
    retryable: false,
  },
  ProtocolDisabled: { summary: 'the protocol is disabled for this mailbox', fix: protocolDisabledFix, retryable: false },
  ConnectionLost: {
    summary: 'the connection dropped after the session was established',
    fix: (c) =>
      `The server was reached and the session was open, so DNS and firewall are fine: it is retried. If it repeats, look for an idle timeout in a proxy or NAT between this host and ${c.endpoints?.[c.protocol ?? 'imap'] ?? 'the server'}, and for throttling of ${ids(c).mailbox}.`,
    retryable: true,
  },
});

/** Options of the `PostroomError` constructor: whom it concerns, what the server said, and the cause. */
export interface PostroomErrorOptions {
  /** Whom it happened for: a mailbox address, an app (tenant/client), a queue. */
  subject?: string;
  /** The server's reply text, with anything secret removed. */
  responseText?: string;
  /** The server's bracketed/enhanced response code, e.g. `AUTHENTICATIONFAILED` or `5.7.3`. */
  serverResponseCode?: string;
  /** A back-off the server asked for, in milliseconds. */
  retryAfterMs?: number;
  /** The library's error that caused this one. */
  cause?: unknown;
  /** Overrides the catalog's retryable flag. */
  retryable?: boolean;
  /** The real ids the fix is filled in with (see `withContext` for callers that learn them later). */
  context?: FixContext;
}

/**
 * A coded error for bad data or a failing dependency. Misuse of an API by a
 * caller is a `TypeError` instead (as in jose).
 *
 * @example
 * ```ts
 * try { await poll(job); } catch (e) {
 *   if (e instanceof PostroomError && e.code === 'MissingRole') console.error(e.fix);
 * }
 * ```
 */
export class PostroomError extends Error {
  override readonly name = 'PostroomError';
  readonly code: PostroomErrorCode;
  readonly subject: string | undefined;
  readonly responseText: string | undefined;
  readonly serverResponseCode: string | undefined;
  readonly retryAfterMs: number | undefined;
  readonly retryable: boolean;
  /** The catalog's fix, filled in with `context`. */
  readonly fix: string;
  /** What the fix was filled in with. */
  readonly context: FixContext;
  /** The detail as given (before redaction into the message), kept so `withContext` can re-render. */
  readonly detail: string;

  constructor(code: PostroomErrorCode, detail: string, options: PostroomErrorOptions = {}) {
    const entry = ERROR_CATALOG[code];
    const context = options.context ?? {};
    const fixText = redact(entry.fix(context));
    const who = options.subject ? ` for ${options.subject}` : '';
    const why = detail ? `: ${detail}` : '';
    const fix = fixText ? ` Fix: ${fixText}` : '';
    super(redact(`${entry.summary}${who}${why}.${fix}`), options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.subject = options.subject;
    this.responseText = options.responseText === undefined ? undefined : redact(options.responseText);
    this.serverResponseCode = options.serverResponseCode;
    this.retryAfterMs = options.retryAfterMs;
    this.retryable = options.retryable ?? entry.retryable;
    this.fix = fixText;
    this.context = Object.freeze({ ...context });
    this.detail = redact(detail);
  }

  /** A log-safe plain object (no cause chain, nothing secret). */
  toJSON(): Record<string, unknown> {
    return {
      name: this.name,
      code: this.code,
      message: this.message,
      fix: this.fix,
      subject: this.subject,
      responseText: this.responseText,
      serverResponseCode: this.serverResponseCode,
      retryable: this.retryable,
    };
  }
}

/**
 * The same error with its message and fix re-rendered for more context (the
 * poll knows the mailbox and app; a client deep down did not). Values already
 * in the error's context are kept unless `ctx` names them. Errors that are not
 * PostroomErrors are returned unchanged.
 *
 * @example
 * ```ts
 * catch (e) { throw withContext(e, fixContextOf(mailbox.app, { mailbox: mailbox.address, protocol: 'imap' })); }
 * ```
 */
export function withContext<E>(err: E, ctx: FixContext): E | PostroomError {
  if (!(err instanceof PostroomError)) return err;
  const next = new PostroomError(err.code, err.detail, {
    subject: err.subject,
    responseText: err.responseText,
    serverResponseCode: err.serverResponseCode,
    retryAfterMs: err.retryAfterMs,
    cause: err.cause,
    retryable: err.retryable,
    context: { ...err.context, ...definedOnly(ctx) },
  });
  // Keep where it was thrown, under the new first line.
  const frames = err.stack?.split('\n').filter((l) => /^\s+at /.test(l)) ?? [];
  next.stack = [`${next.name}: ${next.message}`, ...frames].join('\n');
  return next;
}

function definedOnly(ctx: FixContext): FixContext {
  return Object.fromEntries(Object.entries(ctx).filter(([, v]) => v !== undefined));
}

export function isPostroomError(e: unknown, code?: PostroomErrorCode): e is PostroomError {
  return e instanceof PostroomError && (code === undefined || e.code === code);
}

const JWT_RE = /eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*/g;
const BEARER_RE = /(Bearer\s+)[^\s"',;]+/gi;
const SASL_RE = /(AUTHENTICATE\s+XOAUTH2\s+|AUTH\s+XOAUTH2\s+)[A-Za-z0-9+/=]{16,}/gi;
const USER_AUTH_RE = /dXNlcj[A-Za-z0-9+/=]{16,}/g; // base64 of "user=..." (an XOAUTH2 blob)
const KV_RE = /((?:client_secret|clientSecret|client_assertion|access_token|password|secret)["']?\s*[:=]\s*["']?)[^\s"'&,}]+/gi;

/** Removes tokens, SASL blobs and secrets from text meant for logs or errors. */
export function redact(text: string): string {
  return text.replace(JWT_RE, '[token]').replace(BEARER_RE, '$1[token]').replace(SASL_RE, '$1[sasl]').replace(USER_AUTH_RE, '[sasl]').replace(KV_RE, '$1[redacted]');
}
