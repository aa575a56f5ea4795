import { PostroomError } from '../errors.js';
import { APP_ROLES, decodeClaims, isJwt, roleProblem, type MailProtocol } from './claims.js';

export { decodeClaims, type AppTokenClaims } from './claims.js';

/**
 * Fails with `MissingRole` when the app token lacks `role`; tokens that are
 * not JWTs (opaque test tokens) are let through.
 *
 * @deprecated Use `checkAppToken` (shared/auth/claims.ts), which also checks
 * tenant, audience, lifetime and app-only, and fills the fix in with the app's ids.
 */
export function requireRole(token: string, role: string, subject: string): void {
  if (!isJwt(token)) return;
  const protocol = (Object.keys(APP_ROLES) as MailProtocol[]).find((p) => APP_ROLES[p] === role);
  if (!protocol) throw new TypeError(`requireRole: unknown role ${role}`);
  const problem = roleProblem(decodeClaims(token), protocol);
  if (problem) throw new PostroomError('MissingRole', problem.detail, { subject, context: { protocol } });
}
