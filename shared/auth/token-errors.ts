import { PostroomError, type PostroomErrorCode } from '../errors.js';

/** Entra's AADSTS numbers that name an admin step of their own. */
const AADSTS: Readonly<Record<string, PostroomErrorCode>> = Object.freeze({
  '7000215': 'InvalidClientSecret',
  '7000222': 'ClientSecretExpired',
  '700016': 'AppNotFound',
  '500011': 'ResourceNotFound',
  '700027': 'InvalidClientCertificate',
  '700211': 'FederatedCredentialMismatch',
  '700212': 'FederatedCredentialMismatch',
  '700213': 'FederatedCredentialMismatch',
  '70021': 'FederatedCredentialMismatch',
});

/** Maps an msal-node error (or a raw AADSTS text) to a coded PostroomError; the msal error stays as `cause`. */
export function mapTokenError(e: unknown, subject: string): PostroomError {
  if (e instanceof PostroomError) return e;
  const err = e as { errorCode?: string; errorMessage?: string; message?: string; subError?: string };
  const text = `${err.errorMessage ?? ''} ${err.message ?? ''}`;
  const m = /AADSTS(\d+)/.exec(text);
  const firstLine = (text.trim().split(/\r?\n/)[0] ?? '').slice(0, 300);
  if (m && AADSTS[m[1]]) {
    return new PostroomError(AADSTS[m[1]], firstLine, { subject, serverResponseCode: `AADSTS${m[1]}`, responseText: firstLine, cause: e });
  }
  const network = /network|ECONN|ENOTFOUND|ETIMEDOUT|timeout|certificate|endpoints_resolution/i.test(`${err.errorCode ?? ''} ${text}`);
  return new PostroomError('TokenRequestFailed', `${err.errorCode ?? 'error'}: ${firstLine}`, {
    subject,
    serverResponseCode: m ? `AADSTS${m[1]}` : err.errorCode,
    responseText: firstLine,
    retryable: network,
    cause: e,
  });
}
