import type { ConfidentialClientApplication } from '@azure/msal-node';
import type { AppConfig } from '../config/index.js';
import { abortable } from '../abortable.js';
import { isPostroomError, PostroomError } from '../errors.js';
import type { Logger } from '../logger.js';
import { decodeClaims } from './jwt.js';
import type { AccessToken, GetTokenOptions, TokenGetter } from './token.js';
import { mapTokenError } from './token-errors.js';
import { secretCredential, type AppCredential, type CredentialInfo, type MsalCredentialAuth } from './credentials.js';
import { getMetrics } from '../telemetry/index.js';

export type { AccessToken, GetTokenOptions, TokenGetter } from './token.js';
export { mapTokenError } from './token-errors.js';

/** Token provider in nodemailer's manner: one per app, with a `renew` flag. */
export interface TokenProvider {
  /** Cached by msal (renewed 5 minutes before expiry); `renew` forces a new one. */
  readonly getToken: TokenGetter;
  /** The credential's kind and expiry (known once it was read), for the status report. */
  credentialInfo(): CredentialInfo;
}

/** Where an app's client secret comes from (Key Vault, or a plain sandbox value). */
export interface SecretProvider {
  /** `renew` re-reads the secret from its source (after Entra rejected the cached one). */
  getSecret(options?: { renew?: boolean; signal?: AbortSignal }): Promise<string>;
}

/** Options of {@link createAppTokenProvider}. */
export interface AppTokenProviderOptions {
  /** The app's credential (shared/auth/credentials.ts); takes precedence over `secrets`. */
  credential?: AppCredential;
  /** A client secret source (the credential before certificates and federated credentials existed). */
  secrets?: SecretProvider;
  /** Gets msal's own log lines (at debug) and the warning when a refused credential is re-read; never a token or secret. */
  logger: Logger;
  /** Extra CA (PEM) for a private login host, added to the default trust. */
  ca?: string;
  /** Per-request timeout towards the login host; default {@link TOKEN_REQUEST_TIMEOUT_MS}. */
  networkTimeoutMs?: number;
}

/**
 * Per-request timeout towards the login host. msal-node's own network client
 * gives its POST (the token request itself) none: a login host that accepts
 * and never answers held a poll for 60 s per attempt.
 */
export const TOKEN_REQUEST_TIMEOUT_MS = 15_000;

interface CcaEntry {
  key: string;
  cca: Promise<ConfidentialClientApplication>;
}

// One ConfidentialClientApplication per (authority, client) per process: msal
// keeps its token cache inside the instance, and renews 5 minutes before expiry.
const applications = new Map<string, CcaEntry>();
let tokenRequestCount = 0;

/** How many tokens this process obtained from a login host (not from cache). */
export function tokenRequests(): number {
  return tokenRequestCount;
}

/** Drops every cached client application (tests). */
export function resetTokenProviders(): void {
  applications.clear();
  tokenRequestCount = 0;
}

async function buildCca(app: AppConfig, credential: MsalCredentialAuth, options: AppTokenProviderOptions): Promise<ConfidentialClientApplication> {
  const msal = await import('@azure/msal-node');
  const host = new URL(app.authorityHost).host;
  const known = ['login.microsoftonline.com', 'login.microsoftonline.us', 'login.partner.microsoftonline.cn'];
  const system: Record<string, unknown> = {
    loggerOptions: {
      piiLoggingEnabled: false,
      logLevel: msal.LogLevel.Warning,
      loggerCallback: (_level: unknown, message: string) => options.logger.debug(`msal: ${message}`),
    },
  };
  // Always ours (with or without an extra CA): it puts a timeout on every request, POST included.
  const { createNetworkClient } = await import('./network-client.js');
  system.networkClient = createNetworkClient({ ca: options.ca, timeoutMs: options.networkTimeoutMs ?? TOKEN_REQUEST_TIMEOUT_MS });
  return new msal.ConfidentialClientApplication({
    auth: {
      clientId: app.clientId,
      authority: app.authority,
      ...credential,
      // A private authority (sandbox, test stack) must be declared known, or msal
      // tries instance discovery against the public cloud.
      ...(known.includes(host) ? {} : { knownAuthorities: [host] }),
    },
    system,
  });
}

/** The app's msal client, built again when its credential changed (a rotated secret, a renewed certificate). */
async function applicationFor(app: AppConfig, credential: AppCredential, renewSecret: boolean, options: AppTokenProviderOptions): Promise<ConfidentialClientApplication> {
  const cacheKey = `${app.authority}|${app.clientId}`;
  const { key, auth } = await credential.msalAuth({ renew: renewSecret });
  let entry = applications.get(cacheKey);
  if (!entry || entry.key !== key) {
    entry = { key, cca: buildCca(app, auth, options) };
    applications.set(cacheKey, entry);
  }
  return entry.cca;
}

/**
 * Creates the app-only token provider for one app registration.
 *
 * @example
 * ```ts
 * const tokens = createAppTokenProvider(app, { secrets, logger });
 * const { token } = await tokens.getToken();             // cached by msal
 * const fresh = await tokens.getToken({ renew: true });  // after the server refused it
 * ```
 */
export function createAppTokenProvider(app: AppConfig, options: AppTokenProviderOptions): TokenProvider {
  const subject = `app ${app.clientId} in tenant ${app.tenantId}`;
  if (!options.credential && !options.secrets) throw new TypeError('createAppTokenProvider: a credential (or secrets) is required');
  const credential = options.credential ?? secretCredential(options.secrets!);

  // What a token request is waiting on, so that a poll giving up on it can say which dependency did not answer.
  let waitingFor: 'credential' | 'login' = 'credential';
  const acquire = async (renewSecret: boolean, skipCache: boolean): Promise<AccessToken> => {
    waitingFor = 'credential';
    const client = await applicationFor(app, credential, renewSecret, options);
    waitingFor = 'login';
    const result = await client.acquireTokenByClientCredential({ scopes: [app.scope], skipCache });
    if (!result?.accessToken) throw new PostroomError('TokenRequestFailed', 'the login host returned no access token', { subject });
    if (!result.fromCache) tokenRequestCount++;
    getMetrics().tokenRequested(app.name, { cached: result.fromCache });
    const exp = decodeClaims(result.accessToken).exp;
    return { token: result.accessToken, expiresOn: result.expiresOn ?? new Date((exp ?? 0) * 1000) };
  };

  // Ten mailboxes of one app polled at once would each miss msal's empty cache and
  // each ask the login host: share one request in flight (unless renewing).
  let inflight: Promise<AccessToken> | undefined;
  const fetchShared = (): Promise<AccessToken> =>
    (inflight ??= acquireWithRotation(false).finally(() => {
      inflight = undefined;
    }));

  const acquireWithRotation = async (skipCache: boolean): Promise<AccessToken> => {
    try {
      return await acquire(false, skipCache);
    } catch (e) {
      const mapped = mapTokenError(e, subject);
      // A rotated secret or renewed certificate: the cached one is stale. Re-read it once before failing.
      if (mapped.code === 'InvalidClientSecret' || mapped.code === 'ClientSecretExpired' || mapped.code === 'InvalidClientCertificate') {
        options.logger.warn(`token request refused the client ${credential.kind}; re-reading it once`, { app: app.name, code: mapped.serverResponseCode });
        try {
          return await acquire(true, true);
        } catch (e2) {
          throw mapTokenError(e2, subject);
        }
      }
      throw mapped;
    }
  };

  return {
    async getToken(opts: GetTokenOptions = {}): Promise<AccessToken> {
      opts.signal?.throwIfAborted();
      const work = opts.renew ? acquireWithRotation(true) : fetchShared();
      return abortable(work, opts.signal, (reason) => notAnswered(app, reason, waitingFor, subject));
    },
    credentialInfo: () => credential.info(),
  };
}

/**
 * A poll that reached its deadline while a token was being obtained: the
 * error names what did not answer (the vault holding the credential, the
 * managed identity, or the login host), not just "deadline".
 */
function notAnswered(app: AppConfig, reason: unknown, waitingFor: 'credential' | 'login', subject: string): Error {
  if (!isPostroomError(reason, 'DeadlineReached')) return reason as Error;
  const within = `no answer before the poll's deadline (${reason.detail})`;
  const c = app.credential;
  if (waitingFor === 'login') return new PostroomError('TokenRequestFailed', `${app.authorityHost}: ${within}`, { subject, retryable: true, cause: reason });
  if (c.kind === 'federated') return new PostroomError('ManagedIdentityUnavailable', within, { subject, cause: reason });
  const vault = c.kind === 'certificate' ? c.certificate : c.secret.kind === 'keyvault' ? c.secret : undefined;
  if (!vault) return reason;
  return new PostroomError('KeyVaultUnreachable', `reading "${vault.name}" in ${vault.vaultUrl}: ${within}`, { subject, cause: reason });
}
