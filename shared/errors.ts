/**
 * One error base for Postroom, with a union of codes and a central catalog
 * (in the manner of nodemailer): every code says what to do about it, and
 * every Exchange Online / Entra failure maps to the admin step that fixes it.
 */

export type PostroomErrorCode =
  | 'ConfigInvalid'
  | 'SecretUnavailable'
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
  | 'SendFailed';

export interface CatalogEntry {
  /** What went wrong, in one line. */
  readonly summary: string;
  /** The step (usually an admin's) that fixes it; empty when there is none to take. */
  readonly fix: string;
  /** Whether trying again later (same input) may succeed. */
  readonly retryable: boolean;
}

const SP_FIX =
  'Register the service principal with the Enterprise application\'s object id ' +
  '(New-ServicePrincipal -AppId <appId> -ObjectId <Enterprise application object id>), ' +
  'grant it FullAccess on the mailbox (Add-MailboxPermission -Identity <mailbox> -User <SP id> -AccessRights FullAccess), ' +
  'make sure the protocol is enabled (Set-CASMailbox <mailbox> -ImapEnabled $true -PopEnabled $true) ' +
  'and that the token audience is the Exchange scope of this cloud. Permission changes take 15-30 minutes to apply.';

export const ERROR_CATALOG: Readonly<Record<PostroomErrorCode, CatalogEntry>> = Object.freeze({
  ConfigInvalid: { summary: 'settings are invalid', fix: 'Correct the settings listed and restart.', retryable: false },
  SecretUnavailable: {
    summary: 'the client secret could not be read from Key Vault',
    fix: 'Give the Function App\'s managed identity "get" on secrets in the vault (Key Vault Secrets User role) and check the vault URL and secret name.',
    retryable: true,
  },
  InvalidClientSecret: {
    summary: 'Entra rejected the client secret (AADSTS7000215)',
    fix: 'Store the client secret\'s Value (not its Secret ID) in Key Vault; check it belongs to this app registration.',
    retryable: false,
  },
  ClientSecretExpired: {
    summary: 'the client secret has expired (AADSTS7000222)',
    fix: 'Create a new client secret for the app registration and store its Value in Key Vault.',
    retryable: false,
  },
  SecretExpired: {
    summary: 'the client secret in Key Vault is past its expiry date',
    fix: 'Create a new client secret for the app registration, store its Value in Key Vault as a new version with the new expiry date (az keyvault secret set --expires), or move the app to a certificate or a federated credential.',
    retryable: false,
  },
  CertificateUnavailable: {
    summary: 'the app certificate could not be read from Key Vault',
    fix: 'Give the Function App\'s managed identity the "Key Vault Certificate User" role on the vault, check the vault URL and certificate name, and create the certificate with content type PEM (application/x-pem-file) so its secret holds the private key and the certificate.',
    retryable: true,
  },
  CertificateExpired: {
    summary: 'the app certificate in Key Vault has expired',
    fix: 'Renew the certificate in Key Vault (or import a new one under the same name) and upload its public part to the app registration (Certificates & secrets -> Certificates).',
    retryable: false,
  },
  InvalidClientCertificate: {
    summary: 'Entra rejected the client certificate assertion (AADSTS700027)',
    fix: 'Upload the certificate that is in Key Vault (its public .cer) to the app registration under Certificates & secrets -> Certificates; the SHA-256 thumbprint must match. A renewed certificate must be uploaded again.',
    retryable: false,
  },
  ManagedIdentityUnavailable: {
    summary: 'the managed identity token for the federated credential could not be obtained',
    fix: 'Assign the user-assigned managed identity to the Function App and set its client id in the app\'s "federated.clientId"; outside Azure there is no managed identity (use a secret or a certificate).',
    retryable: true,
  },
  FederatedCredentialMismatch: {
    summary: 'Entra found no federated identity credential matching the managed identity token (AADSTS700211/700212/700213)',
    fix: 'On the app registration add a federated credential (Certificates & secrets -> Federated credentials -> Managed identity) with issuer https://login.microsoftonline.com/<tenant>/v2.0, subject = the managed identity\'s principal (object) id and audience api://AzureADTokenExchange.',
    retryable: false,
  },
  CredentialExpiring: {
    summary: 'the app credential expires in less than 30 days (a warning, not a failure)',
    fix: 'Rotate it before it expires: add a new client secret or certificate, store it in Key Vault, and remove the old one afterwards; or move to a federated credential (no expiry).',
    retryable: true,
  },
  AppNotFound: {
    summary: 'the application was not found in the tenant (AADSTS700016)',
    fix: 'Check the client id, the tenant id and the cloud setting; the app must be registered (or consented) in that tenant.',
    retryable: false,
  },
  ResourceNotFound: {
    summary: 'the Exchange resource was not found in the tenant (AADSTS500011)',
    fix: 'Use the Exchange scope of the tenant\'s cloud (public: https://outlook.office365.com/.default) and make sure the tenant has Exchange Online.',
    retryable: false,
  },
  TokenRequestFailed: {
    summary: 'the token request failed',
    fix: 'Check the tenant id, client id, cloud and network reachability of the login host.',
    retryable: true,
  },
  MissingRole: {
    summary: 'the app token lacks the role this protocol needs',
    fix: 'In Entra: API permissions -> APIs my organization uses -> Office 365 Exchange Online -> Application permissions -> add IMAP.AccessAsApp / POP.AccessAsApp / SMTP.SendAsApp, then Grant admin consent.',
    retryable: false,
  },
  AuthenticationFailed: { summary: 'the mail server refused the app token', fix: SP_FIX, retryable: false },
  MailboxNotConnected: {
    summary: 'the app authenticated but the mailbox could not be opened',
    fix: 'Grant the service principal FullAccess on exactly this mailbox (Add-MailboxPermission -Identity <mailbox> -User <SP id> -AccessRights FullAccess) and check the address.',
    retryable: false,
  },
  SessionExpired: { summary: 'the server ended the session because the access token expired', fix: '', retryable: true },
  Throttled: { summary: 'the server is throttling this client', fix: 'Poll less often or fewer mailboxes at once.', retryable: true },
  ConnectionFailed: {
    summary: 'the mail server could not be reached',
    fix: 'Check the host and port for the cloud, DNS and outbound firewall rules (IMAP 993, POP3 995, SMTP 587).',
    retryable: true,
  },
  TlsFailed: {
    summary: 'the TLS handshake failed',
    fix: 'The server must offer TLS 1.2 or later with a certificate trusted by this host (or one signed by the CA file named in the settings).',
    retryable: false,
  },
  ProtocolError: { summary: 'the server sent a reply this client does not understand', fix: '', retryable: true },
  CommandFailed: { summary: 'the server refused a command', fix: '', retryable: true },
  Timeout: { summary: 'the operation timed out', fix: '', retryable: true },
  Aborted: { summary: 'the operation was aborted', fix: '', retryable: true },
  FolderNotFound: { summary: 'the folder does not exist', fix: 'Check the folder name in the mailbox settings (names are case-sensitive except INBOX).', retryable: false },
  LeaseHeld: { summary: 'another instance is polling this mailbox', fix: '', retryable: false },
  CheckpointConflict: { summary: 'the checkpoint was changed by another writer', fix: '', retryable: true },
  SinkFailed: { summary: 'the message could not be written to storage', fix: 'Check the storage connection setting and that the account is reachable.', retryable: true },
  StorageUnavailable: {
    summary: 'the storage account did not answer',
    fix: 'Check the POSTROOM_STORAGE settings (connection string, or service URIs and identity), that the account exists and is reachable from the Function App, and that the identity has the Blob, Queue and Table data roles.',
    retryable: true,
  },
  DeadlineReached: {
    summary: 'the poll stopped at its deadline',
    fix: 'Nothing is lost: what was written is acknowledged and the next poll goes on from there. If this repeats, raise POSTROOM_POLL_DEADLINE_SECONDS (within the host\'s functionTimeout) or lower POSTROOM_MAX_MESSAGES_PER_POLL.',
    retryable: false,
  },
  SmtpAuthDisabled: {
    summary: 'SMTP AUTH is disabled for the tenant or mailbox (535 5.7.139)',
    fix: 'Set-TransportConfig -SmtpClientAuthenticationDisabled $false, or per mailbox Set-CASMailbox <mailbox> -SmtpClientAuthenticationDisabled $false.',
    retryable: false,
  },
  SendAsDenied: {
    summary: 'the sender address differs from the authenticated mailbox and SendAs is not granted',
    fix: 'Add-RecipientPermission -Identity <from> -Trustee <mailbox> -AccessRights SendAs, or send from the authenticated mailbox.',
    retryable: false,
  },
  SmtpConcurrencyLimit: {
    summary: 'more than 3 concurrent SMTP connections for the mailbox (432 4.3.2)',
    fix: '',
    retryable: true,
  },
  SendFailed: { summary: 'the SMTP server refused the message', fix: '', retryable: true },
});

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
  readonly fix: string;

  constructor(code: PostroomErrorCode, detail: string, options: PostroomErrorOptions = {}) {
    const entry = ERROR_CATALOG[code];
    const who = options.subject ? ` for ${options.subject}` : '';
    const why = detail ? `: ${detail}` : '';
    const fix = entry.fix ? ` Fix: ${entry.fix}` : '';
    super(redact(`${entry.summary}${who}${why}.${fix}`), options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.subject = options.subject;
    this.responseText = options.responseText === undefined ? undefined : redact(options.responseText);
    this.serverResponseCode = options.serverResponseCode;
    this.retryAfterMs = options.retryAfterMs;
    this.retryable = options.retryable ?? entry.retryable;
    this.fix = entry.fix;
  }

  /** A log-safe plain object (no cause chain, nothing secret). */
  toJSON(): Record<string, unknown> {
    return {
      name: this.name,
      code: this.code,
      message: this.message,
      subject: this.subject,
      responseText: this.responseText,
      serverResponseCode: this.serverResponseCode,
      retryable: this.retryable,
    };
  }
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
  return text
    .replace(JWT_RE, '[token]')
    .replace(BEARER_RE, '$1[token]')
    .replace(SASL_RE, '$1[sasl]')
    .replace(USER_AUTH_RE, '[sasl]')
    .replace(KV_RE, '$1[redacted]');
}
