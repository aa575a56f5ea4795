import { PostroomError } from '../errors.js';

export interface AppTokenClaims {
  readonly aud?: string | string[];
  readonly roles?: string[];
  readonly appid?: string;
  readonly tid?: string;
  readonly idtyp?: string;
  readonly exp?: number;
}

/**
 * Reads an access token's claims without verifying it: the mail server does
 * the verifying; we only look, so a missing role gets a precise message
 * instead of Exchange's bare "AUTHENTICATE failed".
 */
export function decodeClaims(token: string): AppTokenClaims {
  const part = token.split('.')[1];
  if (!part) return {};
  try {
    return JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as AppTokenClaims;
  } catch {
    return {};
  }
}

/**
 * Fails with `MissingRole` when the app token lacks `role`.
 * Tokens that are not JWTs (opaque test tokens) are let through.
 */
export function requireRole(token: string, role: string, subject: string): void {
  if (token.split('.').length !== 3) return;
  const claims = decodeClaims(token);
  const roles = Array.isArray(claims.roles) ? claims.roles : [];
  if (!roles.includes(role)) {
    const aud = Array.isArray(claims.aud) ? claims.aud.join(' ') : (claims.aud ?? 'none');
    throw new PostroomError(
      'MissingRole',
      `the token (aud ${aud}, app ${claims.appid ?? '?'}) has roles [${roles.join(', ') || 'none'}] but needs ${role}`,
      { subject },
    );
  }
}
