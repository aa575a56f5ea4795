import { PROTOCOL_ROLES } from '../config/clouds.js';
import { abortable } from '../abortable.js';
import { requireRole } from './jwt.js';
import type { TokenGetter } from './token.js';

/** A mail protocol Postroom speaks with an app token. */
export type MailProtocol = keyof typeof PROTOCOL_ROLES;

/**
 * The one role check: wraps an app's token getter so that every token handed
 * to `protocol`'s transport carries the protocol's role. A token without it
 * would get Exchange's bare "AUTHENTICATE failed"; this says what is missing.
 */
export function protocolTokenGetter(getToken: TokenGetter, protocol: MailProtocol, subject: string): TokenGetter {
  const role = PROTOCOL_ROLES[protocol];
  return async (options) => {
    // The token request (and the Key Vault read behind it) must not hold a poll past its deadline.
    const pending = getToken(options);
    const token = await abortable(pending, options?.signal).catch((e: unknown) => preferOwnError(pending, e, options?.signal));
    requireRole(token.token, role, subject);
    return token;
  };
}

/**
 * At an abort, the getter (the app token provider) gives up too, with an
 * error naming what did not answer (Key Vault, the login host): that error,
 * when it comes at once, says more than the bare abort reason.
 */
async function preferOwnError(pending: Promise<unknown>, e: unknown, signal: AbortSignal | undefined): Promise<never> {
  if (!signal?.aborted || e !== signal.reason) throw e;
  const own = await Promise.race([pending.then(() => e, (x: unknown) => x), new Promise((resolve) => setImmediate(() => resolve(e)))]);
  throw own;
}
