import { createPublicKey, randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { jwtVerify } from 'jose';

/**
 * A stand-in for Azure Key Vault's secrets REST API (no emulator exists),
 * just enough for `@azure/keyvault-secrets`' `getSecret` / `setSecret`: the
 * bearer challenge, token validation against the sandbox token endpoint's
 * key, versions, and Key Vault's error bodies.
 */
export interface KeyVaultEndpoint {
  /** `https://localhost:<port>` */
  vaultUrl: string;
  /** Adds a new version of the secret (the latest is what a version-less read returns). */
  setSecret(name: string, value: string): void;
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

const RESOURCE = 'https://vault.azure.net';

interface Version {
  version: string;
  value: string;
  created: number;
}

/** Starts the stand-in on a free port of 127.0.0.1. */
export async function startKeyVault(o: KeyVaultOptions): Promise<KeyVaultEndpoint> {
  const publicKey = createPublicKey(o.publicKeyPem);
  const issuer = o.issuer ?? `${o.authority}/v2.0`;
  const secrets = new Map<string, Version[]>();
  const readCounts = new Map<string, number>();

  const addVersion = (name: string, value: string): Version => {
    const v = { version: randomBytes(16).toString('hex'), value, created: Math.floor(Date.now() / 1000) };
    const list = secrets.get(name.toLowerCase()) ?? [];
    list.push(v);
    secrets.set(name.toLowerCase(), list);
    return v;
  };
  for (const [name, value] of Object.entries(o.secrets ?? {})) addVersion(name, value);

  let vaultUrl = '';
  const bundle = (name: string, v: Version, enabled = true) => ({
    value: v.value,
    id: `${vaultUrl}/secrets/${name}/${v.version}`,
    attributes: { enabled, created: v.created, updated: v.created, recoveryLevel: 'Recoverable+Purgeable', recoverableDays: 90 },
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
  const unauthorized = (res: ServerResponse, message: string) =>
    send(res, 401, { error: { code: 'Unauthorized', message } }, challenge);

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

    const m = /^\/secrets\/([0-9A-Za-z-]+)(?:\/([0-9a-f]*))?\/?$/.exec(url.pathname);
    if (!m) {
      send(res, 404, { error: { code: 'NotFound', message: 'Not Found' } });
      return;
    }
    const name = m[1]!;
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
    setSecret: (name, value) => void addVersion(name, value),
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
