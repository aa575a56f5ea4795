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
    const token = await abortable(getToken(options), options?.signal);
    requireRole(token.token, role, subject);
    return token;
  };
}
