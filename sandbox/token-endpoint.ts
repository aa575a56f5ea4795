import { AsyncLocalStorage } from 'node:async_hooks';
import { createHash, generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:https';
import { IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { SignJWT, calculateJwkThumbprint, type JWK } from 'jose';
import type * as OidcProvider from 'oidc-provider';
import type { KoaContext, Provider as ProviderType } from 'oidc-provider';
import { silentLogger, type Logger } from '../shared/logger.js';
import { verifyClientAssertion, type SandboxFederatedCredential, type TrustedIssuer } from './client-assertions.js';

export type { SandboxFederatedCredential, TrustedIssuer } from './client-assertions.js';

/** An app registration of the sandbox tenant. */
export interface SandboxApp {
  clientId: string;
  clientSecret: string;
  /** Application permissions on Exchange granted with admin consent, e.g. `IMAP.AccessAsApp`. */
  roles: string[];
  name?: string;
  /** The service principal's object id (`oid`); derived from tenant + client id when omitted. */
  objectId?: string;
  /** Epoch seconds after which the secret is refused with AADSTS7000222. */
  secretExpiresAt?: number;
  /** Public certificates (PEM) registered for `private_key_jwt`: matched by the assertion's x5t#S256 (or x5t). */
  certificatePem?: string | string[];
  /** Federated identity credentials: external tokens (e.g. a managed identity's) accepted as client assertions. */
  federatedCredentials?: SandboxFederatedCredential[];
  /**
   * Claims merged over every access token this app gets through the token
   * endpoint (a claim set to `undefined` is removed), for broken set-ups the
   * client must recognise: `{ aud: 'https://graph.microsoft.com' }`, another
   * `tid`, or, as a function of the issued claims, `exp` in the past
   * (`expires_in` in the reply stays as it was, like a login host whose clock
   * differs from the client's).
   */
  tokenClaims?: Record<string, unknown> | ((issued: Readonly<Record<string, unknown>>) => Record<string, unknown>);
}

export interface TokenEndpointOptions {
  /** Port on 127.0.0.1; a free one when omitted. */
  port?: number;
  tenantId: string;
  apps: SandboxApp[];
  /** PEM server certificate for `localhost` and its key. */
  cert: string;
  key: string;
  /** Access token lifetime; default 3600. */
  ttlSeconds?: number;
  logger?: Logger;
  /** Issuers whose tokens federated assertions may be (e.g. the local managed-identity endpoint), with their keys. */
  trustedIssuers?: TrustedIssuer[];
}

export interface TokenEndpoint {
  /** `https://localhost:<port>` */
  authorityHost: string;
  /** `${authorityHost}/${tenantId}` */
  authority: string;
  /** `${authorityHost}/${tenantId}/v2.0` */
  issuer: string;
  /** JWKS endpoint, Entra's path. */
  jwksUri: string;
  /** The RS256 signing key's id and public key (Dovecot validates tokens locally with it). */
  kid: string;
  publicKeyPem: string;
  /** Successful token grants so far. */
  tokenRequests(): number;
  tokenRequestsFor(clientId: string, resource?: string): number;
  /**
   * Mints a token signed like the real ones (outlook audience, the app's
   * claims) with `claims` merged over it; a claim set to `undefined` is removed.
   * The app is picked by `claims.appid` (default: the first app).
   */
  signToken(claims: Record<string, unknown>, options?: { expiresInSeconds?: number }): Promise<string>;
  /** Trusts one more issuer's key for federated assertions. */
  trustIssuer(issuer: TrustedIssuer): void;
  /** Rotates a client secret; the old one stops working at once. */
  setSecret(clientId: string, secret: string): void;
  stop(): Promise<void>;
}

export const OUTLOOK_RESOURCE = 'https://outlook.office365.com';
export const VAULT_RESOURCE = 'https://vault.azure.net';

/** Resource -> whether app roles go into its tokens (Exchange permissions only apply to Exchange). */
const RESOURCES = new Map<string, { roles: boolean }>([
  [OUTLOOK_RESOURCE, { roles: true }],
  [VAULT_RESOURCE, { roles: false }],
]);

const TOKEN_PATH = '/oauth2/v2.0/token';
const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const MAX_BODY = 64 * 1024;

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > MAX_BODY) throw new Error('token request body too large');
    chunks.push(c);
  }
  return Buffer.concat(chunks);
}

/** The request again, readable, with `body` (oidc-provider reads the body itself). */
function replay(req: IncomingMessage, body: Buffer): IncomingMessage {
  const copy = new IncomingMessage(req.socket);
  copy.method = req.method;
  copy.url = req.url;
  copy.httpVersion = req.httpVersion;
  copy.httpVersionMajor = req.httpVersionMajor;
  copy.httpVersionMinor = req.httpVersionMinor;
  copy.headers = { ...req.headers, 'content-length': String(body.length) };
  (copy as IncomingMessage & { originalUrl?: string }).originalUrl = (req as IncomingMessage & { originalUrl?: string }).originalUrl;
  // Not complete, a destroyed IncomingMessage destroys its socket (the reply with it).
  copy.complete = true;
  copy.push(body);
  copy.push(null);
  return copy;
}
const JWKS_PATH = '/discovery/v2.0/keys';

type ProviderModule = typeof OidcProvider;
let providerModule: Promise<ProviderModule> | undefined;

/**
 * oidc-provider warns on stderr at import time that it wants Node 22; the
 * sandbox runs on Node 20 too, so that one line goes to the logger instead.
 */
function loadProvider(logger: Logger): Promise<ProviderModule> {
  providerModule ??= (async () => {
    const warn = console.warn;
    console.warn = (...args: unknown[]) => logger.debug(args.map(String).join(' '));
    try {
      return await import('oidc-provider');
    } finally {
      console.warn = warn;
    }
  })();
  return providerModule;
}

function normalizeResource(resource: string): string {
  return resource.replace(/\/+$/, '');
}

function objectIdFor(tenantId: string, clientId: string): string {
  const h = createHash('sha256').update(`${tenantId}/${clientId}`).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

interface EntraFailure {
  status: number;
  error: string;
  code: number;
  description: string;
}

function entraBody(f: EntraFailure): Record<string, unknown> {
  const traceId = randomUUID();
  const correlationId = randomUUID();
  const timestamp = new Date()
    .toISOString()
    .replace('T', ' ')
    .replace(/\.\d+Z$/, 'Z');
  return {
    error: f.error,
    error_description: `${f.description}\r\nTrace ID: ${traceId}\r\nCorrelation ID: ${correlationId}\r\nTimestamp: ${timestamp}`,
    error_codes: [f.code],
    timestamp,
    trace_id: traceId,
    correlation_id: correlationId,
    error_uri: `https://login.microsoftonline.com/error?code=${f.code}`,
  };
}

/** The client id a token request names, from the form body or the Basic header. */
function requestedClientId(ctx: KoaContext): string {
  const fromBody = ctx.oidc?.params?.client_id;
  if (typeof fromBody === 'string' && fromBody) return fromBody;
  const auth = ctx.headers.authorization;
  if (typeof auth === 'string' && /^basic /i.test(auth)) {
    const decoded = Buffer.from(auth.slice(6), 'base64').toString('utf8');
    const i = decoded.indexOf(':');
    if (i > 0) {
      try {
        return decodeURIComponent(decoded.slice(0, i).replace(/\+/g, '%20'));
      } catch {
        return decoded.slice(0, i);
      }
    }
  }
  return '';
}

/**
 * Starts an Entra-like OAuth 2.0 token endpoint (oidc-provider, client
 * credentials, JWT access tokens) on https://localhost:<port>/<tenantId>.
 *
 * Error replies carry Entra's AADSTS codes and body shape so that the
 * product's error mapping can be tested against them.
 */
export async function startTokenEndpoint(o: TokenEndpointOptions): Promise<TokenEndpoint> {
  if (!o.tenantId || /[/?#\s]/.test(o.tenantId)) throw new TypeError('tenantId must be a plain path segment');
  if (!o.apps.length) throw new TypeError('at least one app is required');
  const logger = o.logger ?? silentLogger;
  const ttl = o.ttlSeconds ?? 3600;
  const { tenantId } = o;
  const { default: Provider, errors } = await loadProvider(logger);

  const apps = new Map<string, SandboxApp>();
  for (const app of o.apps) apps.set(app.clientId, { ...app, roles: [...app.roles] });

  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const publicJwk = publicKey.export({ format: 'jwk' }) as JWK;
  const kid = await calculateJwkThumbprint(publicJwk);
  const signingJwk = { ...(privateKey.export({ format: 'jwk' }) as JWK), kid, alg: 'RS256', use: 'sig' };
  const publicKeyPem = publicKey.export({ type: 'spki', format: 'pem' }).toString();

  // Listen first: the issuer must name the real port before the provider exists.
  let handler: (req: IncomingMessage, res: ServerResponse) => void = (_req, res) => {
    res.writeHead(503).end();
  };
  const server: Server = createServer({ cert: o.cert, key: o.key, minVersion: 'TLSv1.2' }, (req, res) => handler(req, res));
  const sockets = new Set<Duplex>();
  server.on('connection', (s) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  server.on('tlsClientError', (err) => logger.debug('token endpoint: TLS client error', { error: err }));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port ?? 0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const authorityHost = `https://localhost:${port}`;
  const authority = `${authorityHost}/${tenantId}`;
  const issuer = `${authority}/v2.0`;

  /** Entra's error for an unknown or malformed resource in the scope. */
  const resourceNotFound = (resource: string) =>
    Object.assign(new errors.OIDCProviderError(400, 'invalid_resource'), {
      error_description:
        `AADSTS500011: The resource principal named ${resource} was not found in the tenant named ${tenantId}. ` +
        'This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. ' +
        'You might have sent your authentication request to the wrong tenant.',
      entraCode: 500011,
    });

  const appClaims = (app: SandboxApp, resource: string): Record<string, unknown> => ({
    appid: app.clientId,
    tid: tenantId,
    oid: app.objectId ?? objectIdFor(tenantId, app.clientId),
    idtyp: 'app',
    ver: '2.0',
    ...(RESOURCES.get(resource)?.roles && app.roles.length ? { roles: [...app.roles] } : {}),
  });

  const trustedIssuers: TrustedIssuer[] = [...(o.trustedIssuers ?? [])];
  const assertionAuth = new AsyncLocalStorage<{ clientId: string; nonce: string }>();

  // Clients come through the adapter (not static config) so that setSecret takes effect at once:
  // oidc-provider re-validates a client whenever its stored properties change.
  const store = new Map<string, Map<string, { payload: Record<string, unknown>; expiresAt?: number }>>();
  class Adapter {
    readonly name: string;
    constructor(name: string) {
      this.name = name;
      if (!store.has(name)) store.set(name, new Map());
    }
    private get rows() {
      return store.get(this.name)!;
    }
    async find(id: string): Promise<Record<string, unknown> | undefined> {
      if (this.name === 'Client') {
        const app = apps.get(id);
        if (!app) return undefined;
        // A request whose client assertion was verified carries a one-time secret in its place.
        const verified = assertionAuth.getStore();
        const byAssertion = verified?.clientId === app.clientId;
        return {
          client_id: app.clientId,
          client_secret: byAssertion ? verified.nonce : app.clientSecret,
          ...(app.secretExpiresAt !== undefined && !byAssertion ? { client_secret_expires_at: app.secretExpiresAt } : {}),
          ...(app.name ? { client_name: app.name } : {}),
          grant_types: ['client_credentials'],
          response_types: [],
          redirect_uris: [],
          token_endpoint_auth_method: 'client_secret_post',
        };
      }
      const row = this.rows.get(id);
      if (!row) return undefined;
      if (row.expiresAt !== undefined && row.expiresAt < Date.now()) {
        this.rows.delete(id);
        return undefined;
      }
      return row.payload;
    }
    async upsert(id: string, payload: Record<string, unknown>, expiresIn?: number): Promise<void> {
      this.rows.set(id, { payload, ...(expiresIn ? { expiresAt: Date.now() + expiresIn * 1000 } : {}) });
    }
    async findByUid(uid: string) {
      for (const { payload } of this.rows.values()) if (payload.uid === uid) return payload;
      return undefined;
    }
    async findByUserCode(code: string) {
      for (const { payload } of this.rows.values()) if (payload.userCode === code) return payload;
      return undefined;
    }
    async consume(id: string): Promise<void> {
      const row = this.rows.get(id);
      if (row) row.payload.consumed = Math.floor(Date.now() / 1000);
    }
    async destroy(id: string): Promise<void> {
      this.rows.delete(id);
    }
    async revokeByGrantId(grantId: string): Promise<void> {
      for (const [id, { payload }] of this.rows) if (payload.grantId === grantId) this.rows.delete(id);
    }
  }

  const provider: ProviderType = new Provider(issuer, {
    adapter: Adapter,
    ttl: { ClientCredentials: ttl },
    jwks: { keys: [signingJwk] },
    routes: { token: TOKEN_PATH, jwks: JWKS_PATH, authorization: '/oauth2/v2.0/authorize' },
    clientDefaults: {
      grant_types: ['client_credentials'],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_post',
      id_token_signed_response_alg: 'RS256',
    },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        // Entra takes the resource from a `<resource>/.default` scope, never a `resource` parameter (v2 endpoint).
        async defaultResource(ctx: KoaContext, _client: unknown, oneOf?: string | string[]) {
          if (oneOf) return oneOf;
          const scopes = String(ctx.oidc.params.scope ?? '')
            .split(' ')
            .filter(Boolean);
          if (!scopes.length) {
            throw Object.assign(new errors.InvalidRequest("AADSTS900144: The request body must contain the following parameter: 'scope'."), {
              entraCode: 900144,
            });
          }
          const bad = scopes.find((s) => !s.endsWith('/.default'));
          if (bad !== undefined || scopes.length > 1) {
            throw Object.assign(new errors.OIDCProviderError(400, 'invalid_scope'), {
              error_description:
                `AADSTS1002012: The provided value for scope ${bad ?? scopes.join(' ')} is not valid. ` +
                'Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).',
              entraCode: 1002012,
            });
          }
          return scopes[0].slice(0, -'/.default'.length);
        },
        useGrantedResource: async () => true,
        async getResourceServerInfo(_ctx: KoaContext, resourceIndicator: string) {
          const resource = normalizeResource(resourceIndicator);
          if (!RESOURCES.has(resource)) throw resourceNotFound(resourceIndicator);
          return {
            audience: resource,
            // Entra app tokens carry `roles`, never a scope; an empty scope keeps `scope` out of the reply too.
            scope: '',
            accessTokenFormat: 'jwt',
            accessTokenTTL: ttl,
            jwt: { sign: { alg: 'RS256', kid } },
          };
        },
      },
    },
    async extraTokenClaims(ctx: KoaContext, token: { clientId: string; resourceServer?: { audience?: string } }) {
      const app = apps.get(token.clientId);
      if (!app) return undefined;
      return appClaims(app, normalizeResource(String(token.resourceServer?.audience ?? ctx.oidc?.params?.resource ?? '')));
    },
    formats: {
      customizers: {
        async jwt(_ctx: KoaContext, token: { clientId?: string }, jwt: { header: Record<string, unknown> | undefined; payload: Record<string, unknown> }) {
          // Dovecot 2.3 only accepts typ "JWT" (RFC 9068's "at+jwt" is refused); Entra sends "JWT" too.
          jwt.header = { ...(jwt.header ?? {}), typ: 'JWT' };
          // Entra app tokens have neither; `azp` would also move Dovecot's key lookup to keys/<azp>/.
          delete jwt.payload.scope;
          delete jwt.payload.client_id;
          delete jwt.payload.azp;
          jwt.payload.nbf = jwt.payload.iat;
          const extra = apps.get(String(token.clientId ?? ''))?.tokenClaims;
          if (extra) {
            Object.assign(jwt.payload, typeof extra === 'function' ? extra({ ...jwt.payload }) : extra);
            for (const k of Object.keys(jwt.payload)) if (jwt.payload[k] === undefined) delete jwt.payload[k];
          }
          return jwt;
        },
      },
    },
    async renderError(ctx: KoaContext, out: Record<string, unknown>) {
      ctx.body = out;
    },
  });

  const grants = new Map<string, number>();
  let total = 0;
  provider.on('grant.success', (ctx: KoaContext) => {
    const clientId = String(ctx.oidc.client?.clientId ?? '');
    const resource = normalizeResource(String(ctx.oidc.params?.resource ?? ''));
    total += 1;
    grants.set(`${clientId} ${resource}`, (grants.get(`${clientId} ${resource}`) ?? 0) + 1);
    logger.debug('token endpoint: token issued', { clientId, resource });
  });
  provider.on('grant.error', (ctx: KoaContext, err: unknown) => {
    ctx.state.grantError = err;
  });
  provider.on('server_error', (_ctx: KoaContext, err: unknown) => {
    logger.warn('token endpoint: internal error', { error: err });
  });

  // Entra's replies: AADSTS codes, error_codes/trace ids, and its statuses for client failures.
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.path !== TOKEN_PATH) return;
    const body = ctx.body as Record<string, unknown> | undefined;
    if (ctx.status === 200 && body && typeof body.access_token === 'string') {
      body.ext_expires_in = body.expires_in;
      return;
    }
    if (ctx.status < 400 || !body || typeof body.error !== 'string') return;
    const err = ctx.state.grantError as { entraCode?: number; error_detail?: string; error_description?: string } | undefined;
    const clientId = requestedClientId(ctx);
    let failure: EntraFailure;
    if (err?.entraCode !== undefined) {
      failure = { status: ctx.status, error: body.error, code: err.entraCode, description: String(err.error_description ?? body.error_description) };
    } else if (body.error === 'invalid_client' && !apps.has(clientId)) {
      failure = {
        status: 400,
        error: 'unauthorized_client',
        code: 700016,
        description:
          `AADSTS700016: Application with identifier '${clientId}' was not found in the directory '${tenantId}'. ` +
          'This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. ' +
          'You may have sent your authentication request to the wrong tenant.',
      };
    } else if (body.error === 'invalid_client' && /expired/i.test(String(err?.error_detail ?? body.error_description))) {
      failure = {
        status: 401,
        error: 'invalid_client',
        code: 7000222,
        description:
          `AADSTS7000222: The provided client secret keys for app '${clientId}' are expired. ` +
          'Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds.',
      };
    } else if (body.error === 'invalid_client') {
      failure = {
        status: 401,
        error: 'invalid_client',
        code: 7000215,
        description:
          'AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, ' +
          `not the client secret ID, for a secret added to app '${clientId}'.`,
      };
    } else if (body.error === 'unsupported_grant_type') {
      failure = {
        status: 400,
        error: 'unsupported_grant_type',
        code: 70003,
        description: 'AADSTS70003: The app requested an unsupported grant type.',
      };
    } else {
      failure = {
        status: ctx.status,
        error: body.error,
        code: 90014,
        description: `AADSTS90014: ${typeof body.error_description === 'string' ? body.error_description : body.error}`,
      };
    }
    logger.debug('token endpoint: token refused', { clientId, code: failure.code });
    ctx.status = failure.status;
    ctx.body = entraBody(failure);
  });

  const callback = provider.callback();
  const prefix = `/${tenantId}`;
  handler = (req, res) => {
    const url = req.url ?? '/';
    if (url !== prefix && !url.startsWith(prefix + '/') && !url.startsWith(prefix + '?')) {
      res
        .writeHead(404, { 'content-type': 'application/json' })
        .end(JSON.stringify({ error: 'invalid_tenant', error_description: `AADSTS90002: Tenant '${url.split('/')[1] ?? ''}' not found.` }));
      return;
    }
    let rest = url.slice(prefix.length) || '/';
    if (rest.startsWith('/')) {
      // Entra serves discovery at /<tenant>/v2.0/.well-known/…; oidc-provider's route is fixed at its root.
      if (rest.startsWith('/v2.0/.well-known/')) rest = rest.slice('/v2.0'.length);
    } else rest = '/' + rest;
    // oidc-provider derives its mount path (and so every endpoint URL) from originalUrl minus url.
    (req as IncomingMessage & { originalUrl?: string }).originalUrl = prefix + rest;
    req.url = rest;
    if (req.method === 'POST' && rest.split('?')[0] === TOKEN_PATH) {
      authenticateAssertion(req, res).catch((e) => {
        logger.warn('token endpoint: internal error', { error: e });
        if (!res.headersSent) res.writeHead(500).end();
      });
      return;
    }
    callback(req, res);
  };

  /**
   * oidc-provider knows only client_secret_post here: a client assertion
   * (certificate or federated) is verified first, Entra's way, and then stands
   * in as a one-time secret for that one request.
   */
  const authenticateAssertion = async (req: IncomingMessage, res: ServerResponse) => {
    const body = await readBody(req);
    const params = new URLSearchParams(body.toString('utf8'));
    const assertion = params.get('client_assertion');
    if (assertion === null) return callback(replay(req, body), res);
    const clientId = params.get('client_id') ?? '';
    const app = apps.get(clientId);
    const failure = !app
      ? {
          status: 400,
          error: 'unauthorized_client',
          code: 700016,
          description: `AADSTS700016: Application with identifier '${clientId}' was not found in the directory '${tenantId}'.`,
        }
      : params.get('client_assertion_type') !== JWT_BEARER
        ? { status: 400, error: 'invalid_request', code: 90014, description: `AADSTS90014: The client_assertion_type must be ${JWT_BEARER}.` }
        : await verifyClientAssertion({ app, assertion, tokenUrl: `${authority}${TOKEN_PATH}`, trustedIssuers });
    if (failure) {
      logger.debug('token endpoint: client assertion refused', { clientId, code: failure.code });
      const text = JSON.stringify(entraBody(failure));
      res.writeHead(failure.status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) }).end(text);
      return;
    }
    const nonce = randomBytes(24).toString('base64url');
    params.delete('client_assertion');
    params.delete('client_assertion_type');
    params.set('client_secret', nonce);
    assertionAuth.run({ clientId, nonce }, () => callback(replay(req, Buffer.from(params.toString())), res));
  };

  const signToken = async (claims: Record<string, unknown>, options: { expiresInSeconds?: number } = {}) => {
    const app = apps.get(typeof claims.appid === 'string' ? claims.appid : '') ?? apps.values().next().value!;
    const now = Math.floor(Date.now() / 1000);
    const merged: Record<string, unknown> = {
      ...appClaims(app, OUTLOOK_RESOURCE),
      aud: OUTLOOK_RESOURCE,
      iss: issuer,
      sub: app.clientId,
      iat: now,
      nbf: now,
      exp: now + (options.expiresInSeconds ?? ttl),
      jti: randomUUID(),
      ...claims,
    };
    for (const k of Object.keys(merged)) if (merged[k] === undefined) delete merged[k];
    return new SignJWT(merged).setProtectedHeader({ alg: 'RS256', typ: 'JWT', kid }).sign(privateKey);
  };

  return {
    authorityHost,
    authority,
    issuer,
    jwksUri: `${authority}${JWKS_PATH}`,
    kid,
    publicKeyPem,
    tokenRequests: () => total,
    tokenRequestsFor(clientId, resource) {
      if (resource === undefined) {
        let n = 0;
        for (const [k, v] of grants) if (k.startsWith(clientId + ' ')) n += v;
        return n;
      }
      return grants.get(`${clientId} ${normalizeResource(resource)}`) ?? 0;
    },
    signToken,
    trustIssuer(issuer) {
      trustedIssuers.push(issuer);
    },
    setSecret(clientId, secret) {
      const app = apps.get(clientId);
      if (!app) throw new TypeError(`unknown sandbox app ${clientId}`);
      app.clientSecret = secret;
    },
    stop: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Clients keep connections alive; without this close() would wait for them.
        for (const s of sockets) s.destroy();
      }),
  };
}
