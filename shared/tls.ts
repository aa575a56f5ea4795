import * as tls from 'node:tls';

/**
 * The one CA policy of every Postroom TLS client (IMAP, POP3, SMTP, the login
 * host, Key Vault): an extra CA from `POSTROOM_CA_FILE` is ADDED to the trust
 * Node would use anyway, never put in its place. A bare `ca` option replaces
 * Node's store, which would break the real Exchange host behind a private CA
 * set-up; so the store is spelled out with the extra CA appended.
 *
 * @example
 * ```ts
 * tlsConnect({ host, port, ca: trustedCas(config.ca) });
 * ```
 */
export function trustedCas(extraCa: string | Buffer | undefined): string[] | undefined {
  if (extraCa === undefined || extraCa === '') return undefined;
  // Node 22.15+ can list what it trusts by default (bundled + NODE_EXTRA_CA_CERTS + system when enabled).
  const getCas = (tls as { getCACertificates?: (type?: string) => string[] }).getCACertificates;
  const base = typeof getCas === 'function' ? getCas('default') : tls.rootCertificates;
  return [...base, extraCa.toString()];
}

const contexts = new Map<string, tls.SecureContext>();

/**
 * `{ secureContext }` trusting Node's store plus the extra CA (TLS 1.2 at least), built once
 * per CA and process, else `{}`. A bare `ca` option makes Node build a new context per
 * connection, parsing all ~140 root certificates: ~20 ms of CPU for every IMAP session.
 */
export function trustContext(extraCa: string | Buffer | undefined): { secureContext?: tls.SecureContext } {
  const ca = trustedCas(extraCa);
  if (!ca) return {};
  const key = String(extraCa);
  let secureContext = contexts.get(key);
  if (!secureContext) contexts.set(key, (secureContext = tls.createSecureContext({ ca, minVersion: 'TLSv1.2' })));
  return { secureContext };
}
