import type { PROTOCOL_ROLES } from '../config/clouds.js';
import type { AppConfig } from '../config/index.js';
import { abortable } from '../abortable.js';
import { checkAppToken } from './claims.js';
import type { TokenGetter } from './token.js';

/** A mail protocol Postroom speaks with an app token. */
export type MailProtocol = keyof typeof PROTOCOL_ROLES;

/** Whom the tokens of a {@link protocolTokenGetter} are for. */
export interface ProtocolTokenOptions {
  /** The protocol the token is for: its role is required (IMAP.AccessAsApp, POP.AccessAsApp, SMTP.SendAsApp). */
  protocol: MailProtocol;
  /** The app registration the token is asked for (tenant, audience, ids of the fix). */
  app: AppConfig;
  /** The mailbox the token signs in as (XOAUTH2 `user=`). */
  mailbox: string;
  /** Names the mailbox and server in errors. */
  subject: string;
}

/**
 * The one token check: wraps an app's token getter so that every token handed
 * to a transport is checked locally first (tenant, audience, lifetime against
 * this host's clock, app-only, the protocol's role). Exchange would answer
 * each of these with a bare "AUTHENTICATE failed"; this says which, with the
 * fix filled in.
 */
export function protocolTokenGetter(getToken: TokenGetter, o: ProtocolTokenOptions): TokenGetter {
  return async (options) => {
    // The token request (and the Key Vault read behind it) must not hold a poll past its deadline.
    const pending = getToken(options);
    const token = await abortable(pending, options?.signal).catch((e: unknown) => preferOwnError(pending, e, options?.signal));
    checkAppToken(token.token, { protocol: o.protocol, app: o.app, mailbox: o.mailbox, subject: o.subject, expiresOn: token.expiresOn });
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
  const own = await Promise.race([
    pending.then(
      () => e,
      (x: unknown) => x,
    ),
    new Promise((resolve) => setImmediate(() => resolve(e))),
  ]);
  throw own;
}
