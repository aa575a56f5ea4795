import type { ConfidentialClientApplication } from '@azure/msal-node';
import type { AppConfig } from '../config/index.js';
import { PostroomError, type PostroomErrorCode } from '../errors.js';
import type { Logger } from '../logger.js';
import { decodeClaims } from './jwt.js';
import { getMetrics } from '../telemetry/index.js';

export interface AccessToken {
  readonly token: string;
  readonly expiresOn: Date;
}

export interface GetTokenOptions {
  /** Ask the login host for a new token, bypassing the cache (after a mail server refused the cached one). */
  renew?: boolean;
  signal?: AbortSignal;
}

/** Token provider in nodemailer's manner: one per app, with a `renew` flag. */
export interface TokenProvider {
  getToken(options?: GetTokenOptions): Promise<AccessToken>;
}

export interface SecretProvider {
  /** `renew` re-reads the secret from its source (after Entra rejected the cached one). */
  getSecret(options?: { renew?: boolean; signal?: AbortSignal }): Promise<string>;
}

export interface AppTokenProviderOptions {
  secrets: SecretProvider;
  logger: Logger;
  /** Extra CA (PEM) for a private login host; production keeps normal verification. */
  ca?: string;
}

const AADSTS: Record<string, PostroomErrorCode> = {
  '7000215': 'InvalidClientSecret',
  '7000222': 'ClientSecretExpired',
  '700016': 'AppNotFound',
  '500011': 'ResourceNotFound',
};

/** Maps an msal-node error (or a raw AADSTS text) to a coded PostroomError. */
export function mapTokenError(e: unknown, subject: string): PostroomError {
  if (e instanceof PostroomError) return e;
  const err = e as { errorCode?: string; errorMessage?: string; message?: string; subError?: string };
  const text = `${err.errorMessage ?? ''} ${err.message ?? ''}`;
  const m = /AADSTS(\d+)/.exec(text);
  const firstLine = (text.trim().split(/\r?\n/)[0] ?? '').slice(0, 300);
  if (m && AADSTS[m[1]!]) {
    return new PostroomError(AADSTS[m[1]!]!, firstLine, { subject, serverResponseCode: `AADSTS${m[1]}`, responseText: firstLine, cause: e });
  }
  const network = /network|ECONN|ENOTFOUND|ETIMEDOUT|certificate|endpoints_resolution/i.test(`${err.errorCode ?? ''} ${text}`);
  return new PostroomError('TokenRequestFailed', `${err.errorCode ?? 'error'}: ${firstLine}`, {
    subject,
    serverResponseCode: m ? `AADSTS${m[1]}` : err.errorCode,
    responseText: firstLine,
    retryable: network,
    cause: e,
  });
}

interface CcaEntry {
  secret: string;
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

async function buildCca(app: AppConfig, secret: string, options: AppTokenProviderOptions): Promise<ConfidentialClientApplication> {
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
  if (options.ca) {
    const { createNetworkClient } = await import('./network-client.js');
    system.networkClient = createNetworkClient({ ca: options.ca });
  }
  return new msal.ConfidentialClientApplication({
    auth: {
      clientId: app.clientId,
      authority: app.authority,
      clientSecret: secret,
      // A private authority (sandbox, test stack) must be declared known, or msal
      // tries instance discovery against the public cloud.
      ...(known.includes(host) ? {} : { knownAuthorities: [host] }),
    },
    system,
  });
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
  const cacheKey = `${app.authority}|${app.clientId}`;

  const cca = async (renewSecret: boolean): Promise<ConfidentialClientApplication> => {
    const secret = await options.secrets.getSecret({ renew: renewSecret });
    let entry = applications.get(cacheKey);
    if (!entry || entry.secret !== secret) {
      entry = { secret, cca: buildCca(app, secret, options) };
      applications.set(cacheKey, entry);
    }
    return entry.cca;
  };

  const acquire = async (renewSecret: boolean, skipCache: boolean): Promise<AccessToken> => {
    const client = await cca(renewSecret);
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
      // A rotated secret: the cached value is stale. Re-read it once before failing.
      if (mapped.code === 'InvalidClientSecret' || mapped.code === 'ClientSecretExpired') {
        options.logger.warn('token request refused the client secret; re-reading it once', { app: app.name, code: mapped.serverResponseCode });
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
      return opts.renew ? acquireWithRotation(true) : fetchShared();
    },
  };
}
