import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface SandboxCertificates {
  /** PEM file of the local CA (what clients must trust). */
  caFile: string;
  /** PEM file of the server certificate for `localhost` / 127.0.0.1. */
  certFile: string;
  /** PEM file of the server's private key. */
  keyFile: string;
  ca: string;
  cert: string;
  key: string;
}

const CA_FILE = 'ca.pem';
const CA_KEY_FILE = 'ca-key.pem';
const CERT_FILE = 'server.pem';
const KEY_FILE = 'server-key.pem';
const LOCK = '.ca-lock';
const STALE_LOCK_MS = 30_000;

const SERVER_EXT = [
  'basicConstraints = critical, CA:FALSE',
  'keyUsage = critical, digitalSignature, keyEncipherment',
  'extendedKeyUsage = serverAuth',
  'subjectAltName = DNS:localhost, IP:127.0.0.1',
  'subjectKeyIdentifier = hash',
  'authorityKeyIdentifier = keyid',
  '',
].join('\n');

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

async function readIfUsable(dir: string): Promise<SandboxCertificates | undefined> {
  const caFile = join(dir, CA_FILE);
  const certFile = join(dir, CERT_FILE);
  const keyFile = join(dir, KEY_FILE);
  let ca: string, cert: string, key: string;
  try {
    [ca, cert, key] = await Promise.all([readFile(caFile, 'utf8'), readFile(certFile, 'utf8'), readFile(keyFile, 'utf8')]);
  } catch {
    return undefined;
  }
  try {
    const caCert = new X509Certificate(ca);
    const serverCert = new X509Certificate(cert);
    // Regenerate a day ahead of expiry, or if the pair no longer belongs together.
    const soon = Date.now() + 86_400_000;
    if (Date.parse(serverCert.validTo) < soon || Date.parse(caCert.validTo) < soon) return undefined;
    if (!serverCert.checkIssued(caCert) || !serverCert.verify(caCert.publicKey)) return undefined;
    if (!serverCert.checkHost('localhost') || !serverCert.checkIP('127.0.0.1')) return undefined;
  } catch {
    return undefined;
  }
  return { caFile, certFile, keyFile, ca, cert, key };
}

async function generate(dir: string): Promise<void> {
  const work = await mkdtemp(join(dir, '.ca-gen-'));
  try {
    const p = (name: string) => join(work, name);
    await run('openssl', [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-sha256',
      '-days',
      '3650',
      '-subj',
      '/CN=Postroom Sandbox CA',
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
      '-keyout',
      p(CA_KEY_FILE),
      '-out',
      p(CA_FILE),
    ]);
    await run('openssl', ['req', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-subj', '/CN=localhost', '-keyout', p(KEY_FILE), '-out', p('server.csr')]);
    await writeFile(p('server.ext'), SERVER_EXT);
    // 825 days: the longest validity Apple/Chrome accept for a server certificate.
    await run('openssl', [
      'x509',
      '-req',
      '-sha256',
      '-days',
      '825',
      '-in',
      p('server.csr'),
      '-CA',
      p(CA_FILE),
      '-CAkey',
      p(CA_KEY_FILE),
      '-set_serial',
      '0x' + Date.now().toString(16),
      '-extfile',
      p('server.ext'),
      '-out',
      p(CERT_FILE),
    ]);
    // The server cert goes last: readers treat its presence as "set complete".
    for (const name of [CA_KEY_FILE, CA_FILE, KEY_FILE, CERT_FILE]) await rename(p(name), join(dir, name));
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * Returns a local CA and a `localhost`/127.0.0.1 server certificate signed by
 * it, generating them with the `openssl` CLI on first use and reusing the
 * files in `dir` afterwards. Safe to call from several processes at once.
 */
export async function ensureCertificates(dir: string): Promise<SandboxCertificates> {
  await mkdir(dir, { recursive: true });
  const existing = await readIfUsable(dir);
  if (existing) return existing;

  const lock = join(dir, LOCK);
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      await mkdir(lock);
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const ready = await readIfUsable(dir);
      if (ready) return ready;
      const age = await stat(lock).then(
        (s) => Date.now() - s.mtimeMs,
        () => 0,
      );
      if (age > STALE_LOCK_MS) await rm(lock, { recursive: true, force: true });
      if (Date.now() > deadline) throw new Error(`timed out waiting for certificate generation in ${dir}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  try {
    const again = await readIfUsable(dir);
    if (again) return again;
    await generate(dir);
  } finally {
    await rm(lock, { recursive: true, force: true });
  }
  const made = await readIfUsable(dir);
  if (!made) throw new Error(`generated certificates in ${dir} are not usable`);
  return made;
}

/** Whether `dir` already holds a certificate set (without generating one). */
export async function hasCertificates(dir: string): Promise<boolean> {
  return (await exists(join(dir, CERT_FILE))) && (await readIfUsable(dir)) !== undefined;
}
