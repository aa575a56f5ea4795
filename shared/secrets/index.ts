import type { TokenCredential } from '@azure/core-auth';
import type { SecretClient } from '@azure/keyvault-secrets';
import type { SecretSource } from '../config/index.js';
import { PostroomError } from '../errors.js';
import { isConnectError } from '../net-errors.js';
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
  /** Per-try timeout of a Key Vault request (a vault that accepts and never answers). Default {@link VAULT_TRY_TIMEOUT_MS}. */
  timeoutMs?: number;
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
    const readSecret = (): Promise<VaultSecret> => {
      if (!warned) options.logger.warn('using a plain client secret from the settings: for the local sandbox only');
      warned = true;
      return Promise.resolve({ value: source.value });
    };
    return { readSecret, getSecret: async () => (await readSecret()).value };
  }
  return createVaultReader(source, `secret "${source.name}" in ${source.vaultUrl}`, 'SecretUnavailable', options);
}

/** Per-try timeout of a Key Vault read: a vault answers in well under a second. */
export const VAULT_TRY_TIMEOUT_MS = 10_000;
/**
 * Retries of a Key Vault read (the SDK's default is 3 with up to 64 s between
 * tries): 2 tries more, at most 4 s apart, keep a dead vault's cost (3 tries x
 * the timeout + 1.5 s) well inside a poll's deadline.
 */
export const VAULT_RETRY_OPTIONS = Object.freeze({ maxRetries: 2, retryDelayInMs: 500, maxRetryDelayInMs: 4_000 });

/**
 * Whether a failed vault read is the vault (or the way to it) not answering:
 * refused, reset, DNS, timeout, 5xx/429. Then no permission is missing and the
 * fix is not to grant one.
 */
export function isVaultUnreachable(e: unknown): boolean {
  const err = (e ?? {}) as { statusCode?: number; code?: string; name?: string; message?: string };
  if (err.statusCode !== undefined) return err.statusCode >= 500 || err.statusCode === 429 || err.statusCode === 408;
  if (isConnectError(err) || err.code === 'REQUEST_SEND_ERROR' || err.code === 'ESOCKETTIMEDOUT') return true;
  return err.name === 'AbortError' || err.name === 'TimeoutError' || /timed? ?out|socket hang up/i.test(err.message ?? '');
}

/** The coded error of a failed vault read: unreachable, or the object's own code (403, 404, ...). */
function vaultReadError(e: unknown, subject: string, code: 'SecretUnavailable' | 'CertificateUnavailable', timeoutMs: number): PostroomError {
  const err = e as { statusCode?: number; code?: string; name?: string; message?: string };
  const first = (err.message ?? '').split('\n')[0];
  if (isVaultUnreachable(e)) {
    const why = err.statusCode ? `HTTP ${err.statusCode}` : err.name === 'AbortError' ? `no answer within ${timeoutMs} ms` : `${err.code ?? err.name ?? 'error'}: ${first}`;
    return new PostroomError('KeyVaultUnreachable', `reading ${subject}: ${why}`, { subject, serverResponseCode: err.code, cause: e });
  }
  const why =
    err.statusCode === 404 ? 'not found (check the name)' : err.statusCode === 403 ? `access denied: ${ROLE_HINT[code]}` : `${err.code ?? err.statusCode ?? 'error'}: ${first}`;
  return new PostroomError(code, why, { subject, serverResponseCode: err.code, retryable: err.statusCode !== 404 && err.statusCode !== 403, cause: e });
}

/** What a missing permission looks like per object kind (the role that grants reading it). */
const ROLE_HINT: Record<'SecretUnavailable' | 'CertificateUnavailable', string> = {
  SecretUnavailable: 'give the Function App identity the "Key Vault Secrets User" role (or a "get secret" access policy)',
  CertificateUnavailable:
    'give the Function App identity the "Key Vault Secrets User" role (the key is read through the certificate\'s secret; or "get" on secrets in an access policy)',
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
  const timeoutMs = options.timeoutMs ?? VAULT_TRY_TIMEOUT_MS;
  const now = options.now ?? Date.now;
  let cached: { secret: VaultSecret; at: number } | undefined;
  let inflight: Promise<VaultSecret> | undefined;
  let clientPromise: Promise<SecretClient> | undefined;

  const client = () =>
    (clientPromise ??= (async () => {
      const [{ SecretClient }, credential] = await Promise.all([
        import('@azure/keyvault-secrets'),
        options.credential ?? import('@azure/identity').then((m) => new m.DefaultAzureCredential()),
      ]);
      return new SecretClient(source.vaultUrl, credential, { retryOptions: VAULT_RETRY_OPTIONS, ...options.clientOptions });
    })());

  const read = async (signal?: AbortSignal): Promise<VaultSecret> => {
    try {
      const c = await client();
      secretReads++;
      const s = await c.getSecret(source.name, { version: source.version, abortSignal: signal, requestOptions: { timeout: timeoutMs } });
      if (!s.value) throw new PostroomError(code, 'the secret has no value', { subject });
      if (s.properties.enabled === false) throw new PostroomError(code, 'the secret is disabled', { subject });
      return { value: s.value, expiresOn: s.properties.expiresOn, contentType: s.properties.contentType };
    } catch (e) {
      if (e instanceof PostroomError) throw e;
      throw vaultReadError(e, subject, code, timeoutMs);
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
