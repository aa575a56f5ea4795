import { createHash } from 'node:crypto';
import type { TokenCredential } from '@azure/core-auth';
import type { AppConfig } from '../config/apps.js';
import { PostroomError } from '../errors.js';
import type { Logger } from '../logger.js';
import { createCertificateProvider, type CertificateProvider } from '../secrets/certificate.js';
import { createSecretProvider, type VaultSecretProvider } from '../secrets/index.js';
import type { SecretProvider } from './token-provider.js';

/** The audience Entra expects on a managed identity token used as a federated client assertion. */
export const TOKEN_EXCHANGE_SCOPE = 'api://AzureADTokenExchange/.default';

/** How an app proves itself to Entra: a client secret or certificate from Key Vault, or a managed identity's token (federated). */
export type CredentialKind = 'secret' | 'certificate' | 'federated';

/** What the status report shows about an app's credential (never the credential itself). */
export interface CredentialInfo {
  /** Which kind of credential the app's settings chose. */
  readonly kind: CredentialKind;
  /** When the secret or certificate expires, once read (Key Vault `exp`, certificate notAfter); none for federated. */
  readonly expiresOn?: Date;
  /** Whether `expiresOn` is less than the warning window (30 days) away. */
  readonly expiring?: boolean;
  /** Hex SHA-256 thumbprint of the certificate in use. */
  readonly thumbprintSha256?: string;
}

/** The msal-node `auth` fields for one credential. */
export interface MsalCredentialAuth {
  /** The client secret's value (kind `secret`); secret: never log it. */
  clientSecret?: string;
  /** The certificate and its private key in PEM (kind `certificate`); the key is secret. */
  clientCertificate?: { thumbprintSha256: string; privateKey: string; x5c: string };
  /** Returns the managed identity's token as the client assertion, at each token request (kind `federated`). */
  clientAssertion?: (config: { clientId: string; tokenEndpoint?: string }) => Promise<string>;
}

/** The material msal needs now, and a key that changes when the material does (the client is rebuilt then). */
export interface MsalCredential {
  /** Identifies the material without revealing it (kind plus a short hash or thumbprint); a new key means a new msal client. */
  readonly key: string;
  /** The fields to spread into msal-node's `auth` configuration. */
  readonly auth: MsalCredentialAuth;
}

/** An app's credential, of whichever kind the settings chose. */
export interface AppCredential {
  /** Which kind of credential this is. */
  readonly kind: CredentialKind;
  /** Reads (or re-reads with `renew`) the material and checks its expiry. */
  msalAuth(options?: { renew?: boolean; signal?: AbortSignal }): Promise<MsalCredential>;
  /** Kind, expiry and thumbprint as last read, for the status report; expiry is known only after the first `msalAuth`. */
  info(): CredentialInfo;
}

/** Options of {@link createAppCredential}. */
export interface AppCredentialOptions {
  /** Gets the expiry warning (`CredentialExpiring`, at most once a day per secret or certificate). */
  logger: Logger;
  /** Credential for Key Vault; default DefaultAzureCredential. */
  credential?: TokenCredential;
  /** Extra SecretClient options (tests: a local vault). */
  clientOptions?: Record<string, unknown>;
  /**
   * The managed identity for a federated credential; default
   * `ManagedIdentityCredential` with the configured client id (it reads
   * IDENTITY_ENDPOINT/IDENTITY_HEADER from the environment).
   */
  managedIdentity?: TokenCredential;
  /** Warn when the credential expires within this many days; default 30. */
  warnDays?: number;
  /** Clock in epoch milliseconds for the expiry checks; default `Date.now` (tests inject one). */
  now?: () => number;
}

const DAY_MS = 86_400_000;

/**
 * Builds an app's credential for msal-node from its kind: a client secret or
 * a certificate from Key Vault (expiry checked: a warning under 30 days, an
 * error once past), or a federated credential (the managed identity's token
 * as the client assertion).
 *
 * @example
 * ```ts
 * const credential = createAppCredential(app, { logger });
 * const { auth } = await credential.msalAuth();
 * new ConfidentialClientApplication({ auth: { clientId: app.clientId, authority: app.authority, ...auth } });
 * ```
 */
export function createAppCredential(app: AppConfig, options: AppCredentialOptions): AppCredential {
  const c = app.credential;
  if (c.kind === 'federated') return federatedCredential(app, c.clientId, options);
  const expiry = expiryGuard(app, options);
  if (c.kind === 'certificate') {
    const certs = createCertificateProvider(c.certificate, { logger: options.logger, credential: options.credential, clientOptions: options.clientOptions, now: options.now });
    return certificateCredential(certs, expiry);
  }
  const secrets = createSecretProvider(c.secret, { logger: options.logger, credential: options.credential, clientOptions: options.clientOptions, now: options.now });
  return secretCredential(secrets, expiry);
}

interface ExpiryGuard {
  /** Throws `code` once `expiresOn` is past; warns (once a day per material) inside the window. */
  check(expiresOn: Date | undefined, key: string, kind: 'secret' | 'certificate'): void;
  info(kind: CredentialKind, extra?: Partial<CredentialInfo>): CredentialInfo;
}

function expiryGuard(app: AppConfig, options: AppCredentialOptions): ExpiryGuard {
  const now = options.now ?? Date.now;
  const windowMs = (options.warnDays ?? 30) * DAY_MS;
  const subject = `app ${app.clientId} in tenant ${app.tenantId}`;
  const warned = new Map<string, number>();
  let last: Date | undefined;
  return {
    check(expiresOn, key, kind) {
      last = expiresOn;
      if (!expiresOn) return;
      const left = expiresOn.getTime() - now();
      const when = expiresOn.toISOString();
      if (left <= 0) {
        throw new PostroomError(kind === 'certificate' ? 'CertificateExpired' : 'SecretExpired', `expired on ${when}`, { subject });
      }
      if (left < windowMs && now() - (warned.get(key) ?? -Infinity) >= DAY_MS) {
        warned.set(key, now());
        const daysLeft = Math.floor(left / DAY_MS);
        options.logger.warn(`the ${kind} of app "${app.name}" expires in ${daysLeft} day(s), on ${when}: rotate it`, {
          app: app.name,
          code: 'CredentialExpiring',
          kind,
          expiresOn: when,
          daysLeft,
        });
      }
    },
    info(kind, extra = {}) {
      return { kind, ...(last ? { expiresOn: last, expiring: last.getTime() - now() < windowMs } : {}), ...extra };
    },
  };
}

const digest = (s: string) => createHash('sha256').update(s).digest('hex').slice(0, 16);

/** A client secret (from Key Vault, or a plain sandbox value) as an {@link AppCredential}. */
export function secretCredential(secrets: SecretProvider | VaultSecretProvider, expiry?: ExpiryGuard): AppCredential {
  return {
    kind: 'secret',
    async msalAuth(opts = {}) {
      const s = 'readSecret' in secrets ? await secrets.readSecret(opts) : { value: await secrets.getSecret(opts), expiresOn: undefined };
      expiry?.check(s.expiresOn, `secret:${digest(s.value)}`, 'secret');
      return { key: `secret:${digest(s.value)}`, auth: { clientSecret: s.value } };
    },
    info: () => expiry?.info('secret') ?? { kind: 'secret' },
  };
}

function certificateCredential(certs: CertificateProvider, expiry: ExpiryGuard): AppCredential {
  let thumbprint: string | undefined;
  return {
    kind: 'certificate',
    async msalAuth(opts = {}) {
      const cert = await certs.getCertificate(opts);
      thumbprint = cert.thumbprintSha256;
      expiry.check(cert.expiresOn, `certificate:${cert.thumbprintSha256}`, 'certificate');
      return {
        key: `certificate:${cert.thumbprintSha256}:${digest(cert.privateKey)}`,
        auth: { clientCertificate: { thumbprintSha256: cert.thumbprintSha256, privateKey: cert.privateKey, x5c: cert.x5c } },
      };
    },
    info: () => expiry.info('certificate', thumbprint ? { thumbprintSha256: thumbprint } : {}),
  };
}

function federatedCredential(app: AppConfig, clientId: string | undefined, options: AppCredentialOptions): AppCredential {
  const who = clientId ? `user-assigned managed identity ${clientId}` : 'system-assigned managed identity';
  const subject = `app ${app.clientId} in tenant ${app.tenantId} (${who})`;
  let identity: Promise<TokenCredential> | undefined;
  const getIdentity = () =>
    (identity ??= options.managedIdentity
      ? Promise.resolve(options.managedIdentity)
      : import('@azure/identity').then((m) => new m.ManagedIdentityCredential(clientId ? { clientId } : {})));
  // msal asks for an assertion at every token request; the identity caches its own token.
  const clientAssertion = async (): Promise<string> => {
    try {
      const t = await (await getIdentity()).getToken(TOKEN_EXCHANGE_SCOPE);
      if (!t?.token) throw new Error('the managed identity returned no token');
      return t.token;
    } catch (e) {
      const first = String((e as Error).message ?? e)
        .split('\n')[0]
        .slice(0, 300);
      throw new PostroomError('ManagedIdentityUnavailable', first, { subject, cause: e });
    }
  };
  return {
    kind: 'federated',
    msalAuth: () => Promise.resolve({ key: `federated:${clientId ?? 'system'}`, auth: { clientAssertion } }),
    info: () => ({ kind: 'federated' }),
  };
}
