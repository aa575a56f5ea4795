import { X509Certificate, createHash, createPublicKey, randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { jwtVerify } from 'jose';

/**
 * A stand-in for Azure Key Vault's secrets REST API (no emulator exists),
 * just enough for `@azure/keyvault-secrets`' `getSecret` / `setSecret`: the
 * bearer challenge, token validation against the sandbox token endpoint's
 * key, versions, attributes (exp, nbf), content types, and Key Vault's error
 * bodies. Certificates: GET /certificates/<name> (cer, x5t, attributes) and
 * their key and chain through GET /secrets/<name> (a managed secret), as Key Vault does.
 */
export interface KeyVaultEndpoint {
  /** `https://localhost:<port>` */
  vaultUrl: string;
  /** Adds a new version of the secret (the latest is what a version-less read returns). */
  setSecret(name: string, value: string, options?: SecretOptions): void;
  /**
   * Imports a certificate with its private key as a new version: the secret of
   * the same name then holds key + chain (PEM, or PKCS#12 base64 when `contentType` says so).
   */
  setCertificate(name: string, o: CertificateImport): void;
  /**
   * Denies every read with Key Vault's 403 ForbiddenByRbac (the caller's
   * identity has no data-plane role on the vault), until called with false.
   */
  setDenied(denied: boolean): void;
  /** Successful secret reads so far, of one secret or of all. */
  reads(name?: string): number;
  stop(): Promise<void>;
}

export interface KeyVaultOptions {
  /** PEM server certificate for `localhost` and its key. */
  cert: string;
  key: string;
  /** The token endpoint's authority (`https://localhost:<port>/<tenant>`), named in the bearer challenge. */
  authority: string;
  /** The token endpoint's RS256 public key; tokens must verify with it. */
  publicKeyPem: string;
  secrets?: Record<string, string>;
  /** Expected token issuer; default `${authority}/v2.0`. */
  issuer?: string;
}

/** Attributes of a secret version. */
export interface SecretOptions {
  expiresOn?: Date;
  notBefore?: Date;
  contentType?: string;
  enabled?: boolean;
}

/** A certificate imported with its key. */
export interface CertificateImport {
  /** The leaf first, then the rest of the chain. */
  certificatePem: string;
  keyPem: string;
  /** Default application/x-pem-file. */
  contentType?: 'application/x-pem-file' | 'application/x-pkcs12';
  /** The object's `exp`; default the leaf's notAfter (as Key Vault sets it). */
  expiresOn?: Date;
}

const RESOURCE = 'https://vault.azure.net';
const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

interface Version {
  version: string;
  value: string;
  created: number;
  options: SecretOptions;
  /** Set for a certificate's secret: the certificate's DER. */
  cer?: Buffer;
}

/** Starts the stand-in on a free port of 127.0.0.1. */
export async function startKeyVault(o: KeyVaultOptions): Promise<KeyVaultEndpoint> {
  const publicKey = createPublicKey(o.publicKeyPem);
  const issuer = o.issuer ?? `${o.authority}/v2.0`;
  const secrets = new Map<string, Version[]>();
  const readCounts = new Map<string, number>();

  const addVersion = (name: string, value: string, options: SecretOptions = {}, cer?: Buffer): Version => {
    const v: Version = { version: randomBytes(16).toString('hex'), value, created: Math.floor(Date.now() / 1000), options, cer };
    const list = secrets.get(name.toLowerCase()) ?? [];
    list.push(v);
    secrets.set(name.toLowerCase(), list);
    return v;
  };
  for (const [name, value] of Object.entries(o.secrets ?? {})) addVersion(name, value);

  let vaultUrl = '';
  let denied = false;
  const attributes = (v: Version) => ({
    enabled: v.options.enabled ?? true,
    ...(v.options.notBefore ? { nbf: Math.floor(v.options.notBefore.getTime() / 1000) } : {}),
    ...(v.options.expiresOn ? { exp: Math.floor(v.options.expiresOn.getTime() / 1000) } : {}),
    created: v.created,
    updated: v.created,
    recoveryLevel: 'Recoverable+Purgeable',
    recoverableDays: 90,
  });
  const bundle = (name: string, v: Version) => ({
    value: v.value,
    id: `${vaultUrl}/secrets/${name}/${v.version}`,
    ...(v.options.contentType ? { contentType: v.options.contentType } : {}),
    ...(v.cer ? { managed: true, kid: `${vaultUrl}/keys/${name}/${v.version}` } : {}),
    attributes: attributes(v),
    tags: {},
  });
  // Key Vault publishes only the SHA-1 thumbprint (x5t); Postroom computes the SHA-256 one from `cer`.
  const certificateBundle = (name: string, v: Version) => ({
    id: `${vaultUrl}/certificates/${name}/${v.version}`,
    kid: `${vaultUrl}/keys/${name}/${v.version}`,
    sid: `${vaultUrl}/secrets/${name}/${v.version}`,
    x5t: createHash('sha1').update(v.cer!).digest('base64url'),
    cer: v.cer!.toString('base64'),
    attributes: attributes(v),
    tags: {},
  });

  const send = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
    const text = JSON.stringify(body);
    res.writeHead(status, {
      'content-type': 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(text),
      'x-ms-request-id': randomBytes(16).toString('hex'),
      ...headers,
    });
    res.end(text);
  };
  const challenge = { 'www-authenticate': `Bearer authorization="${o.authority}", resource="${RESOURCE}"` };
  const unauthorized = (res: ServerResponse, message: string) => send(res, 401, { error: { code: 'Unauthorized', message } }, challenge);

  const readBody = (req: IncomingMessage) =>
    new Promise<string>((resolve, reject) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
      req.on('error', reject);
    });

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', vaultUrl);
    // The SDK percent-encodes the hyphen (api%2Dversion); URLSearchParams decodes it.
    if (!url.searchParams.get('api-version')) {
      send(res, 400, { error: { code: 'BadParameter', message: 'The request URI contains an invalid or missing api-version.' } });
      return;
    }
    const body = await readBody(req);
    const auth = req.headers.authorization;
    if (!auth || !/^bearer /i.test(auth)) {
      unauthorized(res, 'AKV10000: Request is missing a Bearer or PoP token.');
      return;
    }
    try {
      await jwtVerify(auth.slice(7).trim(), publicKey, { audience: RESOURCE, issuer, algorithms: ['RS256'] });
    } catch (e) {
      unauthorized(res, `AKV10022: Invalid token: ${(e as Error).message}`);
      return;
    }

    if (denied) {
      const caller = JSON.parse(Buffer.from(auth.slice(7).trim().split('.')[1] ?? '', 'base64url').toString('utf8') || '{}') as { appid?: string; azp?: string; oid?: string };
      const message =
        'Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\n' +
        `Caller: appid=${caller.appid ?? caller.azp ?? '?'};oid=${caller.oid ?? '?'}\r\nAction: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'\r\nAssignment: (not found)\r\n`;
      send(res, 403, { error: { code: 'Forbidden', message, innererror: { code: 'ForbiddenByRbac' } } });
      return;
    }
    const cm = /^\/certificates\/([0-9A-Za-z-]+)(?:\/([0-9a-f]*))?\/?$/.exec(url.pathname);
    if (cm && req.method === 'GET') {
      const list = secrets.get(cm[1].toLowerCase())?.filter((x) => x.cer);
      const v = cm[2] ? list?.find((x) => x.version === cm[2]) : list?.at(-1);
      if (!v) {
        send(res, 404, { error: { code: 'CertificateNotFound', message: `A certificate with (name/id) ${cm[1]} was not found in this key vault.` } });
        return;
      }
      send(res, 200, certificateBundle(cm[1], v));
      return;
    }
    const m = /^\/secrets\/([0-9A-Za-z-]+)(?:\/([0-9a-f]*))?\/?$/.exec(url.pathname);
    if (!m) {
      send(res, 404, { error: { code: 'NotFound', message: 'Not Found' } });
      return;
    }
    const name = m[1];
    const versionId = m[2] ?? '';
    if (req.method === 'PUT' && !versionId) {
      let value: unknown;
      try {
        value = (JSON.parse(body) as { value?: unknown }).value;
      } catch {
        value = undefined;
      }
      if (typeof value !== 'string') {
        send(res, 400, { error: { code: 'BadParameter', message: 'Property value is required.' } });
        return;
      }
      send(res, 200, bundle(name, addVersion(name, value)));
      return;
    }
    if (req.method !== 'GET') {
      send(res, 405, { error: { code: 'MethodNotAllowed', message: `${req.method} is not supported here.` } });
      return;
    }
    const list = secrets.get(name.toLowerCase());
    const v = versionId ? list?.find((x) => x.version === versionId) : list?.at(-1);
    if (!v) {
      send(res, 404, {
        error: {
          code: 'SecretNotFound',
          message:
            `A secret with (name/id) ${versionId ? `${name}/${versionId}` : name} was not found in this key vault. ` +
            'If you recently deleted this secret you may be able to recover it using the correct recovery command. ' +
            'For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182',
        },
      });
      return;
    }
    readCounts.set(name.toLowerCase(), (readCounts.get(name.toLowerCase()) ?? 0) + 1);
    send(res, 200, bundle(name, v));
  };

  const sockets = new Set<Duplex>();
  const server: Server = createServer({ cert: o.cert, key: o.key, minVersion: 'TLSv1.2' }, (req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) send(res, 500, { error: { code: 'InternalServerError', message: 'internal error' } });
      else res.destroy();
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  vaultUrl = `https://localhost:${(server.address() as AddressInfo).port}`;

  return {
    vaultUrl,
    setSecret: (name, value, options) => void addVersion(name, value, options),
    setDenied(d) {
      denied = d;
    },
    setCertificate(name, c) {
      const pems = c.certificatePem.match(PEM_CERT) ?? [];
      if (!pems.length) throw new TypeError('setCertificate: certificatePem holds no certificate');
      const leaf = new X509Certificate(pems[0]!);
      const contentType = c.contentType ?? 'application/x-pem-file';
      const value = contentType === 'application/x-pem-file' ? `${c.keyPem.trim()}\n${pems.join('\n')}\n` : Buffer.from('not a real PKCS#12 bundle').toString('base64');
      const options = { contentType, notBefore: new Date(leaf.validFrom), expiresOn: c.expiresOn ?? new Date(leaf.validTo) };
      addVersion(name, value, options, leaf.raw);
    },
    reads(name) {
      if (name !== undefined) return readCounts.get(name.toLowerCase()) ?? 0;
      let n = 0;
      for (const c of readCounts.values()) n += c;
      return n;
    },
    stop: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
  };
}
