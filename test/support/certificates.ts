import { X509Certificate, createPublicKey, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';

/** A self-signed app certificate made for a test. */
export interface TestCertificate {
  certPem: string;
  /** PKCS#8 PEM. */
  keyPem: string;
  /** Hex SHA-256 thumbprint (lower case). */
  thumbprintSha256: string;
  notAfter: Date;
}

export interface MakeCertificateOptions {
  subject?: string;
  notBefore?: Date;
  notAfter: Date;
  /** Reuse a key (e.g. two certificates for one key); a new RSA-2048 key by default. */
  privateKey?: KeyObject;
}

// Minimal DER: enough for an X.509 v3 certificate with any validity dates,
// which the openssl 3.0 CLI here cannot back-date (an already expired one).
const len = (n: number): Buffer => {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v >>= 8) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
};
const tlv = (tag: number, ...content: Buffer[]): Buffer => {
  const body = Buffer.concat(content);
  return Buffer.concat([Buffer.from([tag]), len(body.length), body]);
};
const seq = (...c: Buffer[]) => tlv(0x30, ...c);
const oid = (dotted: string): Buffer => {
  const [a, b, ...rest] = dotted.split('.').map(Number);
  const out = [40 * a + b];
  for (const n of rest) {
    const groups: number[] = [];
    for (let v = n; ; v = Math.floor(v / 128)) {
      groups.unshift((v % 128) | (groups.length ? 0x80 : 0));
      if (v < 128) break;
    }
    out.push(...groups);
  }
  return tlv(0x06, Buffer.from(out));
};
const time = (d: Date): Buffer => {
  const iso = d.toISOString().replace(/[-:T]/g, '').slice(0, 14) + 'Z';
  return d.getUTCFullYear() < 2050 ? tlv(0x17, Buffer.from(iso.slice(2))) : tlv(0x18, Buffer.from(iso));
};
const name = (cn: string) => seq(tlv(0x31, seq(oid('2.5.4.3'), tlv(0x0c, Buffer.from(cn)))));
const SHA256_RSA = seq(oid('1.2.840.113549.1.1.11'), tlv(0x05));

/** Makes a self-signed RSA certificate with exactly the validity asked for. */
export function makeCertificate(o: MakeCertificateOptions): TestCertificate {
  const privateKey = o.privateKey ?? generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
  const spki = createPublicKey(privateKey).export({ type: 'spki', format: 'der' });
  const serial = randomBytes(12);
  serial[0] &= 0x7f; // positive INTEGER
  const subject = name(o.subject ?? 'CN-postroom-test');
  const tbs = seq(
    tlv(0xa0, tlv(0x02, Buffer.from([2]))),
    tlv(0x02, serial),
    SHA256_RSA,
    subject,
    seq(time(o.notBefore ?? new Date(Date.now() - 3600_000)), time(o.notAfter)),
    subject,
    spki,
  );
  const der = seq(tbs, SHA256_RSA, tlv(0x03, Buffer.from([0]), sign('sha256', tbs, privateKey)));
  const cert = new X509Certificate(der);
  return {
    certPem: cert.toString(),
    keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    thumbprintSha256: cert.fingerprint256.replace(/:/g, '').toLowerCase(),
    notAfter: new Date(cert.validTo),
  };
}
