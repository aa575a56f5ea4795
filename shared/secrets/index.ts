import type { TokenCredential } from '@azure/core-auth';
import type { SecretSource } from '../config/index.js';
import { PostroomError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { SecretProvider } from '../auth/token-provider.js';

export interface SecretProviderOptions {
  logger: Logger;
  /** Defaults to DefaultAzureCredential (managed identity in Azure, developer login locally). */
  credential?: TokenCredential;
  /** Options passed to SecretClient (tests: a CA-trusting http client, challenge verification off). */
  clientOptions?: Record<string, unknown>;
  /** How long a read value is reused before it is read again. Default 8 hours. */
  ttlMs?: number;
  now?: () => number;
}

let secretReads = 0;
/** Key Vault reads made by this process (token and secret economy). */
export function secretReadCount(): number {
  return secretReads;
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
export function createSecretProvider(source: SecretSource, options: SecretProviderOptions): SecretProvider {
  if (source.kind === 'plain') {
    let warned = false;
    return {
      async getSecret() {
        if (!warned) options.logger.warn('using a plain client secret from the settings: for the local sandbox only');
        warned = true;
        return source.value;
      },
    };
  }
  const ttl = options.ttlMs ?? 8 * 3600_000;
  const now = options.now ?? Date.now;
  let cached: { value: string; at: number } | undefined;
  let inflight: Promise<string> | undefined;
  let clientPromise: Promise<import('@azure/keyvault-secrets').SecretClient> | undefined;
  const subject = `secret "${source.name}" in ${source.vaultUrl}`;

  const client = () =>
    (clientPromise ??= (async () => {
      const [{ SecretClient }, credential] = await Promise.all([
        import('@azure/keyvault-secrets'),
        options.credential ?? import('@azure/identity').then((m) => new m.DefaultAzureCredential()),
      ]);
      return new SecretClient(source.vaultUrl, credential, options.clientOptions);
    })());

  const read = async (signal?: AbortSignal): Promise<string> => {
    try {
      const c = await client();
      secretReads++;
      const s = await c.getSecret(source.name, { version: source.version, abortSignal: signal });
      if (!s.value) throw new PostroomError('SecretUnavailable', 'the secret has no value', { subject });
      if (s.properties.enabled === false) throw new PostroomError('SecretUnavailable', 'the secret is disabled', { subject });
      return s.value;
    } catch (e) {
      if (e instanceof PostroomError) throw e;
      const err = e as { statusCode?: number; code?: string; message?: string };
      const why =
        err.statusCode === 404
          ? 'not found (check the secret name)'
          : err.statusCode === 403
            ? 'access denied: give the Function App identity the "Key Vault Secrets User" role (or a "get secret" access policy)'
            : `${err.code ?? err.statusCode ?? 'error'}: ${(err.message ?? '').split('\n')[0]}`;
      throw new PostroomError('SecretUnavailable', why, { subject, serverResponseCode: err.code, retryable: err.statusCode !== 404 && err.statusCode !== 403, cause: e });
    }
  };

  return {
    async getSecret(opts = {}) {
      if (!opts.renew && cached && now() - cached.at < ttl) return cached.value;
      inflight ??= read(opts.signal)
        .then((value) => {
          cached = { value, at: now() };
          return value;
        })
        .finally(() => {
          inflight = undefined;
        });
      return inflight;
    },
  };
}
