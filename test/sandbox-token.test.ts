import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:https';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfidentialClientApplication } from '@azure/msal-node';
import { ClientSecretCredential } from '@azure/identity';
import { SecretClient } from '@azure/keyvault-secrets';
import { createPublicKey } from 'node:crypto';
import { decodeJwt, decodeProtectedHeader, jwtVerify } from 'jose';
import { ensureCertificates, type SandboxCertificates } from '../sandbox/ca.js';
import { startTokenEndpoint, type TokenEndpoint } from '../sandbox/token-endpoint.js';
import { createNetworkClient } from '../shared/auth/network-client.js';
import { startKeyVault, type KeyVaultEndpoint } from './support/keyvault-endpoint.js';

const TENANT = 'c0ffee00-0000-4000-8000-000000000001';
const APP = { clientId: '11111111-2222-4333-8444-555555555555', clientSecret: 'app-secret-value', roles: ['IMAP.AccessAsApp', 'POP.AccessAsApp'] };
const ROTATING = { clientId: 'rotating-app', clientSecret: 'old-secret', roles: ['IMAP.AccessAsApp'] };
const EXPIRED = { clientId: 'expired-app', clientSecret: 'stale', roles: [], secretExpiresAt: 1_000_000 };
const OUTLOOK = 'https://outlook.office365.com/.default';

/** A raw HTTPS request trusting only the sandbox CA. */
function httpsCall(
  url: string,
  ca: string,
  init: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<{ status: number; headers: Record<string, unknown>; body: any }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: init.method ?? 'GET', headers: init.headers ?? {}, ca, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let body: unknown = text;
        try {
          body = JSON.parse(text);
        } catch {
          /* not JSON */
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body });
      });
    });
    req.on('error', reject);
    req.end(init.body);
  });
}

describe('sandbox token endpoint', () => {
  let dir: string;
  let certs: SandboxCertificates;
  let te: TokenEndpoint;
  let kv: KeyVaultEndpoint;

  const msalApp = (clientId: string, clientSecret: string) =>
    new ConfidentialClientApplication({
      auth: { clientId, clientSecret, authority: te.authority, knownAuthorities: [new URL(te.authorityHost).host] },
      system: { networkClient: createNetworkClient({ ca: certs.ca }) },
    });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'postroom-token-'));
    certs = await ensureCertificates(join(dir, 'certs'));
    te = await startTokenEndpoint({ tenantId: TENANT, apps: [APP, ROTATING, EXPIRED], cert: certs.cert, key: certs.key });
    kv = await startKeyVault({
      cert: certs.cert,
      key: certs.key,
      authority: te.authority,
      publicKeyPem: te.publicKeyPem,
      secrets: { 'imap-client-secret': 'from-the-vault' },
    });
  });

  after(async () => {
    await kv?.stop();
    await te?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('reuses the certificates already in the directory', async () => {
    const again = await ensureCertificates(join(dir, 'certs'));
    assert.equal(again.cert, certs.cert);
    assert.equal(again.ca, certs.ca);
    assert.equal(again.caFile, join(dir, 'certs', 'ca.pem'));
  });

  it('publishes Entra-style discovery under <authority>/v2.0', async () => {
    const res = await httpsCall(`${te.authority}/v2.0/.well-known/openid-configuration`, certs.ca);
    assert.equal(res.status, 200);
    assert.equal(res.body.issuer, te.issuer);
    assert.equal(te.issuer, `${te.authorityHost}/${TENANT}/v2.0`);
    assert.equal(res.body.token_endpoint, `${te.authority}/oauth2/v2.0/token`);
    assert.equal(res.body.jwks_uri, te.jwksUri);
    const jwks = await httpsCall(te.jwksUri, certs.ca);
    assert.deepEqual(
      jwks.body.keys.map((k: { kid: string }) => k.kid),
      [te.kid],
    );
  });

  it('issues an Entra-like app token to msal-node and msal caches it', async () => {
    const cca = msalApp(APP.clientId, APP.clientSecret);
    const before = te.tokenRequests();
    const first = await cca.acquireTokenByClientCredential({ scopes: [OUTLOOK] });
    assert.ok(first?.accessToken);
    assert.equal(te.tokenRequests(), before + 1);
    assert.equal(te.tokenRequestsFor(APP.clientId, 'https://outlook.office365.com'), 1);

    const header = decodeProtectedHeader(first.accessToken);
    assert.equal(header.typ, 'JWT');
    assert.equal(header.alg, 'RS256');
    assert.equal(header.kid, te.kid);
    const { payload } = await jwtVerify(first.accessToken, createPublicKey(te.publicKeyPem), {
      issuer: te.issuer,
      audience: 'https://outlook.office365.com',
    });
    assert.equal(payload.sub, APP.clientId);
    assert.equal(payload.appid, APP.clientId);
    assert.equal(payload.tid, TENANT);
    assert.equal(payload.idtyp, 'app');
    assert.equal(payload.ver, '2.0');
    assert.deepEqual(payload.roles, APP.roles);
    for (const absent of ['scope', 'scp', 'azp', 'client_id']) assert.equal(payload[absent], undefined, absent);
    assert.equal(payload.exp! - payload.iat!, 3600);

    const cached = await cca.acquireTokenByClientCredential({ scopes: [OUTLOOK] });
    assert.equal(cached?.accessToken, first.accessToken);
    assert.equal(te.tokenRequests(), before + 1);

    const fresh = await cca.acquireTokenByClientCredential({ scopes: [OUTLOOK], skipCache: true });
    assert.notEqual(fresh?.accessToken, first.accessToken);
    assert.equal(te.tokenRequests(), before + 2);
  });

  it('refuses a wrong client secret with AADSTS7000215 (HTTP 401 invalid_client)', async () => {
    await assert.rejects(msalApp(APP.clientId, 'the-secret-id-not-its-value').acquireTokenByClientCredential({ scopes: [OUTLOOK] }), (e: any) => {
      assert.equal(e.errorCode, 'invalid_client');
      assert.match(String(e.message), /AADSTS7000215: Invalid client secret provided/);
      assert.ok(String(e.message).includes(`app '${APP.clientId}'`));
      return true;
    });
    const raw = await httpsCall(`${te.authority}/oauth2/v2.0/token`, certs.ca, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'client_credentials', client_id: APP.clientId, client_secret: 'nope', scope: OUTLOOK }).toString(),
    });
    assert.equal(raw.status, 401);
    assert.equal(raw.body.error, 'invalid_client');
    assert.deepEqual(raw.body.error_codes, [7000215]);
    assert.match(raw.body.error_description, /^AADSTS7000215: .*\r\nTrace ID: /s);
  });

  it('refuses an unknown client id with AADSTS700016 (HTTP 400 unauthorized_client)', async () => {
    await assert.rejects(msalApp('99999999-0000-4000-8000-000000000000', 'x').acquireTokenByClientCredential({ scopes: [OUTLOOK] }), (e: any) => {
      assert.equal(e.errorCode, 'unauthorized_client');
      assert.match(String(e.message), /AADSTS700016: Application with identifier '99999999-0000-4000-8000-000000000000' was not found in the directory/);
      assert.ok(String(e.message).includes(TENANT));
      return true;
    });
  });

  it('refuses an unknown resource with AADSTS500011 and a non-.default scope with AADSTS1002012', async () => {
    await assert.rejects(msalApp(APP.clientId, APP.clientSecret).acquireTokenByClientCredential({ scopes: ['https://graph.microsoft.com/.default'] }), (e: any) => {
      assert.equal(e.errorCode, 'invalid_resource');
      assert.match(String(e.message), /AADSTS500011: The resource principal named https:\/\/graph\.microsoft\.com was not found in the tenant named/);
      return true;
    });
    const raw = await httpsCall(`${te.authority}/oauth2/v2.0/token`, certs.ca, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'client_credentials', client_id: APP.clientId, client_secret: APP.clientSecret, scope: 'IMAP.AccessAsApp' }).toString(),
    });
    assert.equal(raw.status, 400);
    assert.equal(raw.body.error, 'invalid_scope');
    assert.deepEqual(raw.body.error_codes, [1002012]);
  });

  it('refuses an expired client secret with AADSTS7000222', async () => {
    await assert.rejects(msalApp(EXPIRED.clientId, EXPIRED.clientSecret).acquireTokenByClientCredential({ scopes: [OUTLOOK] }), (e: any) => {
      assert.equal(e.errorCode, 'invalid_client');
      assert.match(String(e.message), /AADSTS7000222/);
      return true;
    });
  });

  it('accepts client_secret_basic as well as client_secret_post', async () => {
    const basic = Buffer.from(`${encodeURIComponent(APP.clientId)}:${encodeURIComponent(APP.clientSecret)}`).toString('base64');
    const raw = await httpsCall(`${te.authority}/oauth2/v2.0/token`, certs.ca, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${basic}` },
      body: new URLSearchParams({ grant_type: 'client_credentials', scope: OUTLOOK }).toString(),
    });
    assert.equal(raw.status, 200);
    assert.equal(raw.body.token_type, 'Bearer');
    assert.equal(raw.body.scope, undefined);
    assert.equal(decodeJwt(raw.body.access_token).appid, APP.clientId);
  });

  it('rotates a client secret: the old one fails at once, the new one works', async () => {
    await msalApp(ROTATING.clientId, 'old-secret').acquireTokenByClientCredential({ scopes: [OUTLOOK] });
    te.setSecret(ROTATING.clientId, 'new-secret');
    await assert.rejects(msalApp(ROTATING.clientId, 'old-secret').acquireTokenByClientCredential({ scopes: [OUTLOOK] }), /AADSTS7000215/);
    const ok = await msalApp(ROTATING.clientId, 'new-secret').acquireTokenByClientCredential({ scopes: [OUTLOOK] });
    assert.deepEqual(decodeJwt(ok!.accessToken).roles, ROTATING.roles);
  });

  it('signToken mints tokens like the real ones, with chosen claims', async () => {
    const key = createPublicKey(te.publicKeyPem);
    const noRoles = await te.signToken({ roles: undefined });
    assert.equal(decodeProtectedHeader(noRoles).typ, 'JWT');
    const { payload } = await jwtVerify(noRoles, key, { issuer: te.issuer, audience: 'https://outlook.office365.com' });
    assert.equal(payload.roles, undefined);
    assert.equal(payload.appid, APP.clientId);
    const expired = await te.signToken({}, { expiresInSeconds: -60 });
    await assert.rejects(jwtVerify(expired, key, { issuer: te.issuer }), { code: 'ERR_JWT_EXPIRED' });
  });

  it('gives @azure/identity ClientSecretCredential a vault token, trusting the CA through tlsOptions', async () => {
    const cred = new ClientSecretCredential(TENANT, APP.clientId, APP.clientSecret, {
      authorityHost: te.authorityHost,
      disableInstanceDiscovery: true,
      tlsOptions: { ca: certs.ca },
    });
    const token = await cred.getToken('https://vault.azure.net/.default');
    assert.ok(token.expiresOnTimestamp > Date.now());
    const claims = decodeJwt(token.token);
    assert.equal(claims.aud, 'https://vault.azure.net');
    assert.equal(claims.roles, undefined);
    assert.equal(claims.idtyp, 'app');
  });

  it('lets the real SecretClient read a secret from the Key Vault stand-in', async () => {
    const cred = new ClientSecretCredential(TENANT, APP.clientId, APP.clientSecret, {
      authorityHost: te.authorityHost,
      disableInstanceDiscovery: true,
      tlsOptions: { ca: certs.ca },
    });
    const client = new SecretClient(kv.vaultUrl, cred, { disableChallengeResourceVerification: true, tlsOptions: { ca: certs.ca } });
    const vaultGrantsBefore = te.tokenRequestsFor(APP.clientId, 'https://vault.azure.net');
    const secret = await client.getSecret('imap-client-secret');
    assert.equal(secret.value, 'from-the-vault');
    assert.equal(secret.name, 'imap-client-secret');
    assert.match(secret.properties.id ?? '', new RegExp(`^${kv.vaultUrl}/secrets/imap-client-secret/[0-9a-f]{32}$`));
    assert.equal(kv.reads('imap-client-secret'), 1);

    kv.setSecret('imap-client-secret', 'rotated');
    assert.equal((await client.getSecret('imap-client-secret')).value, 'rotated');
    assert.equal(kv.reads('imap-client-secret'), 2);
    // One token for both reads: the SDK reuses it.
    assert.equal(te.tokenRequestsFor(APP.clientId, 'https://vault.azure.net'), vaultGrantsBefore + 1);

    await assert.rejects(client.getSecret('no-such-secret'), (e: any) => {
      assert.equal(e.statusCode, 404);
      assert.equal(e.code, 'SecretNotFound');
      return true;
    });
    assert.equal(kv.reads(), 2);
  });

  it('Key Vault stand-in challenges without a token and refuses wrong-audience or expired tokens', async () => {
    const url = `${kv.vaultUrl}/secrets/imap-client-secret/?api%2Dversion=7.6`;
    const bare = await httpsCall(url, certs.ca);
    assert.equal(bare.status, 401);
    assert.equal(bare.headers['www-authenticate'], `Bearer authorization="${te.authority}", resource="https://vault.azure.net"`);

    const outlookToken = await te.signToken({});
    const wrongAud = await httpsCall(url, certs.ca, { headers: { authorization: `Bearer ${outlookToken}` } });
    assert.equal(wrongAud.status, 401);

    const expired = await te.signToken({ aud: 'https://vault.azure.net', roles: undefined }, { expiresInSeconds: -60 });
    assert.equal((await httpsCall(url, certs.ca, { headers: { authorization: `Bearer ${expired}` } })).status, 401);

    const good = await te.signToken({ aud: 'https://vault.azure.net', roles: undefined });
    const ok = await httpsCall(url, certs.ca, { headers: { authorization: `Bearer ${good}` } });
    assert.equal(ok.status, 200);
    assert.equal(ok.body.attributes.enabled, true);
  });
});
