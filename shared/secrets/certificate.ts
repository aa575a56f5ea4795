import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import type { CertificateSource } from '../config/apps.js';
import { PostroomError } from '../errors.js';
import { createVaultReader, type SecretProviderOptions } from './index.js';

/** An app certificate as msal-node needs it (private key kept in memory only). */
export interface AppCertificate {
  /** PKCS#8 PEM of the private key. */
  readonly privateKey: string;
  /** The chain as PEM, leaf first: what msal-node sends as `x5c`. */
  readonly x5c: string;
  /** Hex SHA-256 thumbprint of the leaf certificate (Entra's key id for it). */
  readonly thumbprintSha256: string;
  /** The leaf's notAfter. */
  readonly notAfter: Date;
  /** The earlier of notAfter and the Key Vault object's `exp`. */
  readonly expiresOn: Date;
  /** The leaf's subject distinguished name, one line (`CN=…, O=…`), for messages. */
  readonly subject: string;
}

/** Reads an app certificate and its key; `renew` re-reads (after Entra refused it: renewed). */
export interface CertificateProvider {
  /** The certificate and key, cached like a secret (8 h by default); throws `CertificateUnavailable` when it cannot be read or used. */
  getCertificate(options?: { renew?: boolean; signal?: AbortSignal }): Promise<AppCertificate>;
}

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----[\s\S]+?-----END \1-----/g;

/**
 * Reads a certificate kept in Key Vault through its secret (Key Vault serves
 * the private key and the chain there, as PEM or PKCS#12 per the certificate
 * policy's content type).
 *
 * @example
 * ```ts
 * const certs = createCertificateProvider({ vaultUrl, name: 'postroom-app' }, { logger });
 * const { thumbprintSha256, privateKey, x5c } = await certs.getCertificate();
 * ```
 */
export function createCertificateProvider(source: CertificateSource, options: SecretProviderOptions): CertificateProvider {
  const subject = `certificate "${source.name}" in ${source.vaultUrl}`;
  const reader = createVaultReader(source, subject, 'CertificateUnavailable', options);
  let parsed: { value: string; cert: AppCertificate } | undefined;
  return {
    async getCertificate(opts = {}) {
      const secret = await reader.readSecret(opts);
      if (parsed?.value !== secret.value) {
        const cert = parseCertificateSecret(secret.value, secret.contentType, subject);
        const exp = secret.expiresOn && secret.expiresOn < cert.notAfter ? secret.expiresOn : cert.notAfter;
        parsed = { value: secret.value, cert: { ...cert, expiresOn: exp } };
      }
      return parsed.cert;
    },
  };
}

/** Parses a certificate's secret (PEM: private key + certificates) into what msal-node needs. */
export function parseCertificateSecret(value: string, contentType: string | undefined, subject: string): AppCertificate {
  if (contentType && /pkcs12/i.test(contentType)) {
    throw new PostroomError('CertificateUnavailable', 'the certificate is stored as PKCS#12 (application/x-pkcs12); Postroom reads PEM certificates', {
      subject,
      retryable: false,
    });
  }
  const blocks = [...value.matchAll(PEM_BLOCK)].map((m) => ({ type: m[1], pem: m[0] }));
  const keyBlock = blocks.find((b) => /PRIVATE KEY$/.test(b.type));
  if (!keyBlock)
    throw new PostroomError('CertificateUnavailable', 'its secret holds no private key (import the certificate with its key, content type PEM)', { subject, retryable: false });
  if (keyBlock.type === 'ENCRYPTED PRIVATE KEY')
    throw new PostroomError('CertificateUnavailable', 'its private key is encrypted; import it without a password', { subject, retryable: false });
  let key: KeyObject;
  let certs: X509Certificate[];
  try {
    key = createPrivateKey(keyBlock.pem);
    certs = blocks.filter((b) => b.type === 'CERTIFICATE').map((b) => new X509Certificate(b.pem));
  } catch (e) {
    throw new PostroomError('CertificateUnavailable', 'its secret is not a readable PEM certificate and key', { subject, retryable: false, cause: e });
  }
  const leaf = certs.find((c) => c.checkPrivateKey(key));
  if (!leaf) throw new PostroomError('CertificateUnavailable', 'no certificate in its secret belongs to the private key', { subject, retryable: false });
  // x5c: the leaf first, then the rest in the order Key Vault gave them.
  const chain = [leaf, ...certs.filter((c) => c !== leaf)];
  const notAfter = new Date(leaf.validTo);
  return {
    privateKey: key.export({ type: 'pkcs8', format: 'pem' }).toString(),
    x5c: chain.map((c) => c.toString()).join(''),
    thumbprintSha256: leaf.fingerprint256.replace(/:/g, '').toLowerCase(),
    notAfter,
    expiresOn: notAfter,
    subject: leaf.subject.replace(/\n/g, ', '),
  };
}
