import { X509Certificate, createPublicKey, type KeyObject } from 'node:crypto';
import { decodeJwt, decodeProtectedHeader, errors as joseErrors, jwtVerify, type JWTPayload } from 'jose';

/** A certificate or federated identity credential registered on a sandbox app. */
export interface AssertionApp {
  clientId: string;
  /** Public certificates (PEM) registered under Certificates & secrets. */
  certificatePem?: string | string[];
  federatedCredentials?: SandboxFederatedCredential[];
}

/** Entra's federated identity credential: which external tokens the app trusts. */
export interface SandboxFederatedCredential {
  issuer: string;
  subject: string;
  /** Default `['api://AzureADTokenExchange']`. */
  audiences?: string[];
}

/** An issuer the sandbox tenant can verify tokens of (Entra would fetch its OIDC keys). */
export interface TrustedIssuer {
  issuer: string;
  publicKeyPem: string;
}

/** An Entra-style refusal: HTTP status, OAuth error, AADSTS code and description. */
export interface AssertionFailure {
  status: number;
  error: string;
  code: number;
  description: string;
}

export interface VerifyAssertionOptions {
  app: AssertionApp;
  assertion: string;
  /** The token endpoint URL: the audience of a certificate assertion. */
  tokenUrl: string;
  trustedIssuers: readonly TrustedIssuer[];
}

const EXCHANGE_AUDIENCE = 'api://AzureADTokenExchange';
const FIC_DOCS =
  'Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation';
const ALGS = ['RS256', 'PS256'];
// Entra allows clock skew (msal rounds its nbf to the nearest second, so it can lie in the future).
const SKEW_SECONDS = 300;

const malformed = (): AssertionFailure => ({ status: 400, error: 'invalid_request', code: 50027, description: 'AADSTS50027: JWT token is invalid or malformed.' });
const timeRange = (): AssertionFailure => ({
  status: 400,
  error: 'invalid_client',
  code: 700024,
  description: 'AADSTS700024: Client assertion is not within its valid time range.',
});

/**
 * Checks a `client_assertion` as Entra does: a certificate assertion (iss =
 * sub = client id) against the app's registered certificates by SHA-256 (or
 * SHA-1) thumbprint; anything else as a federated assertion against the app's
 * federated identity credentials (issuer, subject, audience) and the issuer's key.
 * Returns undefined when it is accepted.
 */
export async function verifyClientAssertion(o: VerifyAssertionOptions): Promise<AssertionFailure | undefined> {
  let payload: JWTPayload;
  let header: Record<string, unknown>;
  try {
    payload = decodeJwt(o.assertion);
    header = decodeProtectedHeader(o.assertion);
  } catch {
    return malformed();
  }
  if (payload.iss === o.app.clientId && payload.sub === o.app.clientId) return verifyCertificateAssertion(o, header);
  return verifyFederatedAssertion(o, payload);
}

function registeredCertificates(app: AssertionApp): X509Certificate[] {
  const pems = app.certificatePem === undefined ? [] : Array.isArray(app.certificatePem) ? app.certificatePem : [app.certificatePem];
  return pems.map((p) => new X509Certificate(p));
}

async function verifyCertificateAssertion(o: VerifyAssertionOptions, header: Record<string, unknown>): Promise<AssertionFailure | undefined> {
  const s256 = typeof header['x5t#S256'] === 'string' ? Buffer.from(header['x5t#S256'], 'base64url').toString('hex') : undefined;
  const s1 = typeof header.x5t === 'string' ? Buffer.from(header.x5t, 'base64url').toString('hex') : undefined;
  const used = (s256 ?? s1 ?? '').toUpperCase();
  const hex = (fp: string) => fp.replace(/:/g, '').toLowerCase();
  const cert = registeredCertificates(o.app).find((c) => (s256 && hex(c.fingerprint256) === s256) || (s1 && hex(c.fingerprint) === s1));
  const refuse = (reason: string): AssertionFailure => ({
    status: 401,
    error: 'invalid_client',
    code: 700027,
    description:
      `AADSTS700027: Client assertion failed signature validation. [Reason - ${reason}, Thumbprint of key used by client: '${used}', ` +
      `Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '${o.app.clientId}'.]`,
  });
  if (!cert) return refuse('The key was not found.');
  if (Date.parse(cert.validTo) <= Date.now()) return refuse(`The key used is expired., Found key 'Start=${cert.validFrom}, End=${cert.validTo}'`);
  try {
    await jwtVerify(o.assertion, cert.publicKey, { audience: o.tokenUrl, algorithms: ALGS, clockTolerance: SKEW_SECONDS, requiredClaims: ['exp', 'aud'] });
    return undefined;
  } catch (e) {
    if (e instanceof joseErrors.JWTExpired) return timeRange();
    if (e instanceof joseErrors.JWSSignatureVerificationFailed) return refuse('The provided signature value did not match the expected signature value.');
    return malformed();
  }
}

async function verifyFederatedAssertion(o: VerifyAssertionOptions, payload: JWTPayload): Promise<AssertionFailure | undefined> {
  const records = o.app.federatedCredentials ?? [];
  const mismatch = (code: number, what: string, value: unknown): AssertionFailure => ({
    status: 400,
    error: 'invalid_client',
    code,
    description: `AADSTS${code}: No matching federated identity record found for presented assertion ${what} '${String(value)}'. ${FIC_DOCS}`,
  });
  const byIssuer = records.filter((r) => r.issuer === payload.iss);
  if (!byIssuer.length) return mismatch(700211, 'issuer', payload.iss);
  const trusted = o.trustedIssuers.find((t) => t.issuer === payload.iss);
  if (!trusted) {
    return { status: 400, error: 'invalid_client', code: 50166, description: `AADSTS50166: Request to External OIDC endpoint failed (issuer '${String(payload.iss)}').` };
  }
  let key: KeyObject;
  try {
    key = createPublicKey(trusted.publicKeyPem);
    await jwtVerify(o.assertion, key, { issuer: trusted.issuer, algorithms: ALGS, clockTolerance: SKEW_SECONDS, requiredClaims: ['exp', 'sub', 'aud'] });
  } catch (e) {
    if (e instanceof joseErrors.JWTExpired) return timeRange();
    if (e instanceof joseErrors.JWSSignatureVerificationFailed) {
      return { status: 400, error: 'invalid_client', code: 50013, description: 'AADSTS50013: Assertion failed signature validation.' };
    }
    return malformed();
  }
  const bySubject = byIssuer.filter((r) => r.subject === payload.sub);
  if (!bySubject.length) return mismatch(700213, 'subject', payload.sub);
  const auds = Array.isArray(payload.aud) ? payload.aud : [payload.aud];
  const ok = bySubject.some((r) => (r.audiences ?? [EXCHANGE_AUDIENCE]).some((a) => auds.includes(a)));
  return ok ? undefined : mismatch(700212, 'audience', auds.join(' '));
}
