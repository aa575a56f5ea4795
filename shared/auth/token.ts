/** An app-only access token and when it stops being valid. */
export interface AccessToken {
  /** The bearer token (a JWT from Entra). Never logged. */
  readonly token: string;
  /** When the token expires (from msal, else its `exp` claim). */
  readonly expiresOn: Date;
}

/** Options of every {@link TokenGetter} call. */
export interface GetTokenOptions {
  /** Ask the login host for a new token, bypassing caches (after a server refused the cached one). */
  readonly renew?: boolean;
  /** Abandons the wait (the request itself may still complete and fill the cache). */
  readonly signal?: AbortSignal;
}

/**
 * The one token shape every transport takes (nodemailer's `getToken(renew)`
 * manner): IMAP, POP3 and SMTP all call it, `renew: true` after a refusal.
 */
export type TokenGetter = (options?: GetTokenOptions) => Promise<AccessToken>;
