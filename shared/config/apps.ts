import { CLOUDS, DEFAULT_PORTS, type CloudName, type CloudPreset } from './clouds.js';
import type { AppSettings } from './schema.js';

/** Where an app registration's client secret comes from. */
export type SecretSource =
  { readonly kind: 'keyvault'; readonly vaultUrl: string; readonly name: string; readonly version?: string } | { readonly kind: 'plain'; readonly value: string };

/** A Key Vault certificate whose private key is read through the secret of the same name. */
export interface CertificateSource {
  /** Key Vault URL without a trailing slash, e.g. `https://contoso-postroom.vault.azure.net`. */
  readonly vaultUrl: string;
  /** Name of the Key Vault certificate (content type PEM); its key and chain are read through the secret of that name. */
  readonly name: string;
  /** A pinned certificate version; absent: the current version, so a renewal is picked up on re-read. */
  readonly version?: string;
}

/** How the app proves itself to Entra: exactly one kind per app. */
export type AppCredentialConfig =
  | { readonly kind: 'secret'; readonly secret: SecretSource }
  | { readonly kind: 'certificate'; readonly certificate: CertificateSource }
  /** `clientId`: the user-assigned managed identity; omitted: the system-assigned one. */
  | { readonly kind: 'federated'; readonly clientId?: string };

/** A mail server endpoint. */
export interface HostPort {
  /** Host name (or IP address) the client connects to and verifies the certificate for. */ readonly host: string;
  /** TCP port, 1-65535. */ readonly port: number;
}

/** One app registration from `POSTROOM_APPS`, with its cloud's defaults and overrides resolved. */
export interface AppConfig {
  /** How mailboxes refer to it (`app` in `POSTROOM_MAILBOXES`); default `default`. */
  readonly name: string;
  /** Exchange Online's national cloud: picks the login host, resource and mail hosts; default `public`. */
  readonly cloud: CloudName;
  /** Directory (tenant) id, or a verified domain (then token `tid` checks are skipped). */
  readonly tenantId: string;
  /** The app registration's application (client) id. */
  readonly clientId: string;
  /** The app's credential: client secret, certificate or federated (managed identity). */
  readonly credential: AppCredentialConfig;
  /**
   * The client secret when `credential.kind` is `secret` (kept for callers
   * written before certificates and federated credentials).
   * @deprecated read `credential`.
   */
  readonly secret?: SecretSource;
  /** Login host, e.g. https://login.microsoftonline.com (or an override). */
  readonly authorityHost: string;
  /** `${authorityHost}/${tenantId}` */
  readonly authority: string;
  /** Exchange resource; tokens are asked for `${resource}/.default`. */
  readonly resource: string;
  /** The token scope, always `${resource}/.default` (app-only: the consented roles, never a Graph scope). */
  readonly scope: string;
  /** Mail endpoints of the app's cloud (or overrides): IMAP (default port 993, implicit TLS), POP3 (995, implicit TLS), SMTP submission (587, STARTTLS). */
  readonly endpoints: { readonly imap: HostPort; readonly pop3: HostPort; readonly smtp: HostPort };
  /** The Enterprise application's (service principal's) object id, when configured: filled into fixes. */
  readonly servicePrincipalObjectId?: string;
}

/** Options of {@link parseApps}. */
export interface ParseAppsOptions {
  /** POSTROOM_SANDBOX: a plain secret value is allowed (with a warning). */
  sandbox: boolean;
  /** Problems found are appended here (reported together by loadConfig). */
  problems: string[];
  /** Things that work but deserve a look (e.g. a plain sandbox secret) are appended here. */
  warnings: string[];
}

/**
 * Resolves the validated `POSTROOM_APPS` entries into app configs by name
 * (cloud presets, overrides, credential kind).
 */
export function parseApps(apps: readonly (AppSettings | undefined)[], o: ParseAppsOptions): Map<string, AppConfig> {
  const out = new Map<string, AppConfig>();
  apps.forEach((a, i) => {
    // An entry that failed the schema was reported already; the others are still checked.
    if (!a) return;
    if (out.has(a.name)) o.problems.push(`POSTROOM_APPS[${i}].name: "${a.name}" is used twice`);
    if (a.secret && 'value' in a.secret && !o.sandbox) {
      o.problems.push(`POSTROOM_APPS[${i}].secret: a plain secret value is accepted only for the local sandbox (POSTROOM_SANDBOX=true); use { "vaultUrl", "name" }`);
    } else if (a.secret && 'value' in a.secret) {
      o.warnings.push(`app "${a.name}" uses a plain secret value from the settings (sandbox only)`);
    }
    out.set(a.name, resolveApp(a, i, o.problems));
  });
  return out;
}

function resolveCredential(a: AppSettings): AppCredentialConfig {
  const trim = (url: string) => url.replace(/\/+$/, '');
  if (a.certificate) {
    return { kind: 'certificate', certificate: { vaultUrl: trim(a.certificate.vaultUrl), name: a.certificate.name, version: a.certificate.version } };
  }
  if (a.federated) return { kind: 'federated', clientId: a.federated.clientId };
  // The schema guarantees exactly one credential; what remains is the secret.
  const s = a.secret!;
  const secret: SecretSource = 'value' in s ? { kind: 'plain', value: s.value } : { kind: 'keyvault', vaultUrl: trim(s.vaultUrl), name: s.name, version: s.version };
  return { kind: 'secret', secret };
}

function resolveApp(a: AppSettings, i: number, problems: string[]): AppConfig {
  const preset: CloudPreset = CLOUDS[a.cloud];
  const authorityHost = (a.authorityHost ?? preset.loginHost).replace(/\/+$/, '');
  const resource = (a.resource ?? preset.resource).replace(/\/+$/, '');
  const ep = (v: string | undefined, host: string, port: number, field: string): HostPort => {
    if (!v) return { host, port };
    const [h, p] = v.split(':');
    const n = p === undefined ? port : Number(p);
    if (!(n >= 1 && n <= 65535)) problems.push(`POSTROOM_APPS[${i}].${field}: bad port in "${v}"`);
    return { host: h, port: n };
  };
  const credential = resolveCredential(a);
  return {
    name: a.name,
    cloud: a.cloud,
    tenantId: a.tenantId,
    clientId: a.clientId,
    credential,
    ...(credential.kind === 'secret' ? { secret: credential.secret } : {}),
    authorityHost,
    authority: `${authorityHost}/${a.tenantId}`,
    resource,
    scope: `${resource}/.default`,
    endpoints: {
      imap: ep(a.imapHost, preset.imapHost, DEFAULT_PORTS.imap, 'imapHost'),
      pop3: ep(a.pop3Host, preset.pop3Host, DEFAULT_PORTS.pop3, 'pop3Host'),
      smtp: ep(a.smtpHost, preset.smtpHost, DEFAULT_PORTS.smtp, 'smtpHost'),
    },
    ...(a.servicePrincipalObjectId ? { servicePrincipalObjectId: a.servicePrincipalObjectId } : {}),
  };
}
