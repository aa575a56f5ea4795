import type { TokenCredential } from '@azure/core-auth';
import type { SecretSource } from '../config/index.js';
import { PostroomError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { SecretProvider } from '../auth/token-provider.js';

/** Options of the Key Vault secret and certificate readers. */
export interface SecretProviderOptions {
  /** Gets warnings (a plain sandbox secret in use); never a secret value. */
  logger: Logger;
  /** Defaults to DefaultAzureCredential (managed identity in Azure, developer login locally). */
  credential?: TokenCredential;
  /** Options passed to SecretClient (tests: a CA-trusting http client, challenge verification off). */
  clientOptions?: Record<string, unknown>;
  /** How long a read value is reused before it is read again. Default 8 hours. */
  ttlMs?: number;
  /** Clock in epoch milliseconds for the cache's age; default `Date.now` (tests inject one). */
  now?: () => number;
}

let secretReads = 0;
/** Key Vault reads made by this process (token and secret economy). */
export function secretReadCount(): number {
  return secretReads;
}

/** A secret as Key Vault returns it: the value and the properties Postroom uses. */
export interface VaultSecret {
  /** The secret's value; secret: never log it or put it in an error. */
  readonly value: string;
  /** `attributes.exp`: set by the admin for a secret, the certificate's notAfter for a certificate's secret. */
  readonly expiresOn?: Date;
  /** e.g. `application/x-pem-file` or `application/x-pkcs12` for a certificate's secret. */
  readonly contentType?: string;
}

/** A {@link SecretProvider} that also tells the secret's expiry and content type. */
export interface VaultSecretProvider extends SecretProvider {
  /** Like `getSecret`, with the properties; `renew` re-reads it. */
  readSecret(options?: { renew?: boolean; signal?: AbortSignal }): Promise<VaultSecret>;
}

/**
 * The client secret of an app registration, read from Key Vault once and
 * cached; `renew` re-reads it (after AADSTS7000215/7000222: it was rotated).
 *
 * @example
 * ```ts
 * const secrets = createSecretProvider({ kind: 'keyvault', vaultUrl, name: 'postroom-secret' }, { logger });
 * const value = await secrets.getSecret();
 * ```
 */
export function createSecretProvider(source: SecretSource, options: SecretProviderOptions): VaultSecretProvider {
  if (source.kind === 'plain') {
    let warned = false;
    const readSecret = async (): Promise<VaultSecret> => {
      if (!warned) options.logger.warn('using a plain client secret from the settings: for the local sandbox only');
      warned = true;
      return { value: source.value };
    };
    return { readSecret, getSecret: async () => (await readSecret()).value };
  }
  return createVaultReader(source, `secret "${source.name}" in ${source.vaultUrl}`, 'SecretUnavailable', options);
}

/** What a missing permission looks like per object kind (the role that grants reading it). */
const ROLE_HINT: Record<'SecretUnavailable' | 'CertificateUnavailable', string> = {
  SecretUnavailable: 'give the Function App identity the "Key Vault Secrets User" role (or a "get secret" access policy)',
  CertificateUnavailable: 'give the Function App identity the "Key Vault Secrets User" role (the key is read through the certificate\'s secret; or "get" on secrets in an access policy)',
};

/**
 * Reads one Key Vault secret (a client secret, or the secret behind a
 * certificate) with a TTL cache and one read in flight.
 */
export function createVaultReader(
  source: { vaultUrl: string; name: string; version?: string },
  subject: string,
  code: 'SecretUnavailable' | 'CertificateUnavailable',
  options: SecretProviderOptions,
): VaultSecretProvider {
  const ttl = options.ttlMs ?? 8 * 3600_000;
  const now = options.now ?? Date.now;
  let cached: { secret: VaultSecret; at: number } | undefined;
  let inflight: Promise<VaultSecret> | undefined;
  let clientPromise: Promise<import('@azure/keyvault-secrets').SecretClient> | undefined;

  const client = () =>
    (clientPromise ??= (async () => {
      const [{ SecretClient }, credential] = await Promise.all([
        import('@azure/keyvault-secrets'),
        options.credential ?? import('@azure/identity').then((m) => new m.DefaultAzureCredential()),
      ]);
      return new SecretClient(source.vaultUrl, credential, options.clientOptions);
    })());

  const read = async (signal?: AbortSignal): Promise<VaultSecret> => {
    try {
      const c = await client();
      secretReads++;
      const s = await c.getSecret(source.name, { version: source.version, abortSignal: signal });
      if (!s.value) throw new PostroomError(code, 'the secret has no value', { subject });
      if (s.properties.enabled === false) throw new PostroomError(code, 'the secret is disabled', { subject });
      return { value: s.value, expiresOn: s.properties.expiresOn, contentType: s.properties.contentType };
    } catch (e) {
      if (e instanceof PostroomError) throw e;
      const err = e as { statusCode?: number; code?: string; message?: string };
      const why =
        err.statusCode === 404
          ? 'not found (check the name)'
          : err.statusCode === 403
            ? `access denied: ${ROLE_HINT[code]}`
            : `${err.code ?? err.statusCode ?? 'error'}: ${(err.message ?? '').split('\n')[0]}`;
      throw new PostroomError(code, why, { subject, serverResponseCode: err.code, retryable: err.statusCode !== 404 && err.statusCode !== 403, cause: e });
    }
  };

  const readSecret = async (opts: { renew?: boolean; signal?: AbortSignal } = {}): Promise<VaultSecret> => {
    if (!opts.renew && cached && now() - cached.at < ttl) return cached.secret;
    inflight ??= read(opts.signal)
      .then((secret) => {
        cached = { secret, at: now() };
        return secret;
      })
      .finally(() => {
        inflight = undefined;
      });
    return inflight;
  };
  return { readSecret, getSecret: async (opts) => (await readSecret(opts)).value };
}
