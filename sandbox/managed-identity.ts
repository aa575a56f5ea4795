import { createHash, generateKeyPairSync, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { SignJWT, calculateJwkThumbprint } from 'jose';
import { silentLogger, type Logger } from '../shared/logger.js';

/** A managed identity the sandbox host has: user-assigned ones are picked by client id. */
export interface SandboxManagedIdentity {
  clientId: string;
  /** The identity's service principal (object) id: the `sub` of its tokens. Derived from the client id when omitted. */
  principalId?: string;
  /** A system-assigned identity answers requests that name no client id. */
  systemAssigned?: boolean;
}

export interface ManagedIdentityEndpointOptions {
  tenantId: string;
  identities: SandboxManagedIdentity[];
  /** Issuer of the tokens; default `https://login.microsoftonline.com/<tenant>/v2.0` (what a federated credential names). */
  issuer?: string;
  /** The X-IDENTITY-HEADER value; random when omitted. */
  identityHeader?: string;
  /** Token lifetime; default 24 h, as Azure's. */
  ttlSeconds?: number;
  /** Port on 127.0.0.1; a free one when omitted. */
  port?: number;
  logger?: Logger;
}

export interface ManagedIdentityEndpoint {
  /** IDENTITY_ENDPOINT: `http://127.0.0.1:<port>/msi/token` (App Service's endpoint is plain HTTP on loopback too). */
  endpoint: string;
  /** IDENTITY_HEADER */
  identityHeader: string;
  /** The two environment variables `@azure/identity`'s ManagedIdentityCredential reads. */
  env: { IDENTITY_ENDPOINT: string; IDENTITY_HEADER: string };
  issuer: string;
  /** The RS256 key its tokens verify with (give it to the token endpoint as a trusted issuer). */
  publicKeyPem: string;
  kid: string;
  /** The principal (object) id of an identity: the subject a federated credential must name. */
  principalId(clientId: string): string;
  /** Tokens issued so far. */
  tokenRequests(): number;
  stop(): Promise<void>;
}

const API_VERSION = '2019-08-01';

function principalIdFor(tenantId: string, clientId: string): string {
  const h = createHash('sha256').update(`mi/${tenantId}/${clientId}`).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/**
 * A local stand-in for App Service's managed identity endpoint
 * (IDENTITY_ENDPOINT + IDENTITY_HEADER, api-version 2019-08-01), the protocol
 * `@azure/identity`'s ManagedIdentityCredential speaks in Azure Functions.
 * It signs Entra-like tokens with its own key.
 */
export async function startManagedIdentityEndpoint(o: ManagedIdentityEndpointOptions): Promise<ManagedIdentityEndpoint> {
  if (!o.identities.length) throw new TypeError('at least one managed identity is required');
  const logger = o.logger ?? silentLogger;
  const ttl = o.ttlSeconds ?? 86_400;
  const issuer = o.issuer ?? `https://login.microsoftonline.com/${o.tenantId}/v2.0`;
  const identityHeader = o.identityHeader ?? randomBytes(16).toString('hex');
  const identities = o.identities.map((i) => ({ ...i, principalId: i.principalId ?? principalIdFor(o.tenantId, i.clientId) }));
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const kid = await calculateJwkThumbprint(publicKey.export({ format: 'jwk' }));
  let issued = 0;

  const send = (res: ServerResponse, status: number, body: unknown) => {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  };
  const fail = (res: ServerResponse, status: number, message: string) => send(res, status, { statusCode: status, message, correlationId: randomUUID() });

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    if (req.method !== 'GET' || url.pathname !== '/msi/token') return fail(res, 404, 'Not found');
    const header = String(req.headers['x-identity-header'] ?? '');
    if (header.length !== identityHeader.length || !timingSafeEqual(Buffer.from(header), Buffer.from(identityHeader))) {
      return fail(res, 401, 'The X-IDENTITY-HEADER header is missing or wrong');
    }
    if (url.searchParams.get('api-version') !== API_VERSION) return fail(res, 400, `api-version must be ${API_VERSION}`);
    const resource = url.searchParams.get('resource');
    if (!resource) return fail(res, 400, 'resource is required');
    const clientId = url.searchParams.get('client_id');
    const id = clientId ? identities.find((i) => i.clientId === clientId) : identities.find((i) => i.systemAssigned);
    if (!id)
      return fail(res, 400, clientId ? `No user-assigned identity with client id ${clientId} is assigned to this app` : 'No system-assigned identity is enabled for this app');
    const now = Math.floor(Date.now() / 1000);
    const token = await new SignJWT({
      aud: resource,
      iss: issuer,
      sub: id.principalId,
      oid: id.principalId,
      appid: id.clientId,
      tid: o.tenantId,
      idtyp: 'app',
      ver: '2.0',
      iat: now,
      nbf: now,
      exp: now + ttl,
      jti: randomUUID(),
    })
      .setProtectedHeader({ alg: 'RS256', typ: 'JWT', kid })
      .sign(privateKey);
    issued += 1;
    logger.debug('managed identity: token issued', { clientId: id.clientId, resource });
    send(res, 200, { access_token: token, expires_on: String(now + ttl), resource, token_type: 'Bearer', client_id: id.clientId });
  };

  const sockets = new Set<Duplex>();
  const server: Server = createServer((req, res) => {
    handle(req, res).catch((e) => {
      logger.warn('managed identity: internal error', { error: e });
      if (!res.headersSent) fail(res, 500, 'internal error');
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port ?? 0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}/msi/token`;
  return {
    endpoint,
    identityHeader,
    env: { IDENTITY_ENDPOINT: endpoint, IDENTITY_HEADER: identityHeader },
    issuer,
    publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    kid,
    principalId(clientId) {
      const id = identities.find((i) => i.clientId === clientId);
      if (!id) throw new TypeError(`unknown managed identity ${clientId}`);
      return id.principalId;
    },
    tokenRequests: () => issued,
    stop: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
  };
}
