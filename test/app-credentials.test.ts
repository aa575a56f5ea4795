import { after, before, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, X509Certificate, type KeyObject } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfidentialClientApplication } from '@azure/msal-node';
import { ClientSecretCredential } from '@azure/identity';
import type { TokenCredential } from '@azure/core-auth';
import { SignJWT, decodeJwt } from 'jose';
import { ensureCertificates, type SandboxCertificates } from '../sandbox/ca.js';
import { startTokenEndpoint, type TokenEndpoint } from '../sandbox/token-endpoint.js';
import { startManagedIdentityEndpoint, type ManagedIdentityEndpoint } from '../sandbox/managed-identity.js';
import { createNetworkClient } from '../shared/auth/network-client.js';
import { createAppCredential } from '../shared/auth/credentials.js';
import { createAppTokenProvider, resetTokenProviders } from '../shared/auth/token-provider.js';
import { loadConfig, type AppConfig } from '../shared/config/index.js';
import { PostroomError } from '../shared/errors.js';
import { memoryLogger } from '../shared/logger.js';
import { startKeyVault, type KeyVaultEndpoint } from './support/keyvault-endpoint.js';
import { makeCertificate, type TestCertificate } from './support/certificates.js';

const TENANT = 'c0ffee00-0000-4000-8000-00000000cred';
const OUTLOOK = 'https://outlook.office365.com/.default';
const DAY = 86_400_000;
const MI = 'a11ce000-0000-4000-8000-000000000001';
const OTHER_MI = 'a11ce000-0000-4000-8000-000000000002';
const UNASSIGNED_MI = 'a11ce000-0000-4000-8000-000000000009';
const ids = {
  vault: 'vault-reader-app',
  secret: '5ec7e700-0000-4000-8000-000000000001',
  cert: 'ce770000-0000-4000-8000-000000000001',
  fed: 'fed00000-0000-4000-8000-000000000001',
  untrusted: 'fed00000-0000-4000-8000-000000000002',
};

describe('app credentials: secret, certificate, federated', () => {
  let dir: string;
  let certs: SandboxCertificates;
  let te: TokenEndpoint;
  let mi: ManagedIdentityEndpoint;
  let kv: KeyVaultEndpoint;
  let vaultCredential: TokenCredential;
  let good: TestCertificate;
  let expiring: TestCertificate;
  let expired: TestCertificate;
  let unregistered: TestCertificate;
  let testKey: KeyObject;
  const savedEnv = { IDENTITY_ENDPOINT: process.env.IDENTITY_ENDPOINT, IDENTITY_HEADER: process.env.IDENTITY_HEADER };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'postroom-creds-'));
    certs = await ensureCertificates(join(dir, 'certs'));
    // One key for all test certificates (RSA generation is slow here); Entra tells certificates apart by thumbprint.
    testKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
    const privateKey = testKey;
    good = makeCertificate({ subject: 'postroom-good', notAfter: new Date(Date.now() + 365 * DAY), privateKey });
    expiring = makeCertificate({ subject: 'postroom-expiring', notAfter: new Date(Date.now() + 10 * DAY + 3600_000), privateKey });
    expired = makeCertificate({ subject: 'postroom-expired', notBefore: new Date(Date.now() - 400 * DAY), notAfter: new Date(Date.now() - DAY), privateKey });
    unregistered = makeCertificate({ subject: 'postroom-unregistered', notAfter: new Date(Date.now() + 365 * DAY), privateKey });
    mi = await startManagedIdentityEndpoint({ tenantId: TENANT, identities: [{ clientId: MI }, { clientId: OTHER_MI }] });
    // @azure/identity reads these when it picks the managed identity source (once per process).
    Object.assign(process.env, mi.env);
    te = await startTokenEndpoint({
      tenantId: TENANT,
      cert: certs.cert,
      key: certs.key,
      trustedIssuers: [{ issuer: mi.issuer, publicKeyPem: mi.publicKeyPem }],
      apps: [
        { clientId: ids.vault, clientSecret: 'vault-reader-secret', roles: [] },
        { clientId: ids.secret, clientSecret: 'the-client-secret', roles: ['IMAP.AccessAsApp'] },
        { clientId: ids.cert, clientSecret: 'unused', roles: ['IMAP.AccessAsApp'], certificatePem: [good.certPem, expiring.certPem, expired.certPem] },
        { clientId: ids.fed, clientSecret: 'unused', roles: ['POP.AccessAsApp'], federatedCredentials: [{ issuer: mi.issuer, subject: mi.principalId(MI) }] },
        {
          clientId: ids.untrusted,
          clientSecret: 'unused',
          roles: [],
          federatedCredentials: [{ issuer: 'https://token.actions.githubusercontent.com', subject: mi.principalId(MI) }],
        },
      ],
    });
    kv = await startKeyVault({ cert: certs.cert, key: certs.key, authority: te.authority, publicKeyPem: te.publicKeyPem });
    kv.setSecret('client-secret', 'the-client-secret', { expiresOn: new Date(Date.now() + 200 * DAY) });
    kv.setSecret('secret-expiring', 'the-client-secret', { expiresOn: new Date(Date.now() + 5 * DAY + 3600_000) });
    kv.setSecret('secret-expired', 'the-client-secret', { expiresOn: new Date(Date.now() - DAY) });
    kv.setCertificate('app-cert', { certificatePem: good.certPem, keyPem: good.keyPem });
    kv.setCertificate('expiring-cert', { certificatePem: expiring.certPem, keyPem: expiring.keyPem });
    kv.setCertificate('expired-cert', { certificatePem: expired.certPem, keyPem: expired.keyPem });
    kv.setCertificate('unregistered-cert', { certificatePem: unregistered.certPem, keyPem: unregistered.keyPem });
    kv.setCertificate('pfx-cert', { certificatePem: good.certPem, keyPem: good.keyPem, contentType: 'application/x-pkcs12' });
    vaultCredential = new ClientSecretCredential(TENANT, ids.vault, 'vault-reader-secret', {
      authorityHost: te.authorityHost,
      disableInstanceDiscovery: true,
      tlsOptions: { ca: certs.ca },
    });
  });

  after(async () => {
    Object.assign(process.env, savedEnv);
    for (const k of Object.keys(savedEnv) as (keyof typeof savedEnv)[]) if (savedEnv[k] === undefined) delete process.env[k];
    await kv?.stop();
    await te?.stop();
    await mi?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  beforeEach(() => resetTokenProviders());

  /** The app as POSTROOM_APPS declares it, through the real settings parser. */
  const appWith = (clientId: string, credential: Record<string, unknown>): AppConfig =>
    loadConfig({
      POSTROOM_STORAGE: 'UseDevelopmentStorage=true',
      POSTROOM_APPS: JSON.stringify([{ name: 'a', tenantId: TENANT, clientId, authorityHost: te.authorityHost, ...credential }]),
      POSTROOM_MAILBOXES: '[]',
    }).apps[0];

  const provider = (app: AppConfig, extra: { managedIdentity?: TokenCredential } = {}) => {
    const log = memoryLogger();
    const credential = createAppCredential(app, {
      logger: log,
      credential: vaultCredential,
      clientOptions: { tlsOptions: { ca: certs.ca }, disableChallengeResourceVerification: true },
      ...extra,
    });
    return { log, tokens: createAppTokenProvider(app, { credential, logger: log, ca: certs.ca }) };
  };

  const expectCode = (code: string, server?: string) => (e: unknown) => {
    assert.ok(e instanceof PostroomError, String(e));
    assert.equal(e.code, code, e.message);
    if (server) assert.equal(e.serverResponseCode, server);
    return true;
  };

  it('POSTROOM_APPS takes exactly one of secret, certificate, federated', () => {
    const vault = { vaultUrl: 'https://v.vault.azure.net', name: 'n' };
    const apps = (a: Record<string, unknown>) => ({
      POSTROOM_STORAGE: 'x',
      POSTROOM_MAILBOXES: '[]',
      POSTROOM_APPS: JSON.stringify([{ tenantId: TENANT, clientId: ids.cert, ...a }]),
    });
    assert.deepEqual(loadConfig(apps({ certificate: vault })).apps[0].credential, { kind: 'certificate', certificate: { ...vault, version: undefined } });
    assert.deepEqual(loadConfig(apps({ federated: { clientId: MI } })).apps[0].credential, { kind: 'federated', clientId: MI });
    assert.equal(loadConfig(apps({ secret: vault })).apps[0].credential.kind, 'secret');
    assert.throws(() => loadConfig(apps({ secret: vault, certificate: vault })), /only one credential per app: have secret and certificate/);
    assert.throws(() => loadConfig(apps({})), /a credential is required/);
    assert.throws(() => loadConfig(apps({ federated: { clientId: 'not-a-guid' } })), /federated\.clientId/);
  });

  it('client secret from Key Vault: a token from the local endpoint, expiry shown', async () => {
    const { tokens } = provider(appWith(ids.secret, { secret: { vaultUrl: kv.vaultUrl, name: 'client-secret' } }));
    const { token } = await tokens.getToken();
    assert.equal(decodeJwt(token).appid, ids.secret);
    const info = tokens.credentialInfo();
    assert.equal(info.kind, 'secret');
    assert.ok(Math.abs(info.expiresOn!.getTime() - (Date.now() + 200 * DAY)) < 5000);
    assert.equal(info.expiring, false);
  });

  it('certificate from Key Vault: private_key_jwt with the SHA-256 thumbprint and x5c', async () => {
    const before = te.tokenRequestsFor(ids.cert);
    const { tokens, log } = provider(appWith(ids.cert, { certificate: { vaultUrl: kv.vaultUrl, name: 'app-cert' } }));
    const { token } = await tokens.getToken();
    assert.equal(decodeJwt(token).appid, ids.cert);
    assert.deepEqual(decodeJwt(token).roles, ['IMAP.AccessAsApp']);
    assert.equal(te.tokenRequestsFor(ids.cert), before + 1);
    await tokens.getToken();
    assert.equal(te.tokenRequestsFor(ids.cert), before + 1, 'msal caches the token');
    const info = tokens.credentialInfo();
    assert.deepEqual(info, { kind: 'certificate', expiresOn: good.notAfter, expiring: false, thumbprintSha256: good.thumbprintSha256 });
    assert.equal(kv.reads('app-cert'), 1);
    assert.ok(!log.lines.some((l) => l.includes('BEGIN PRIVATE KEY') || l.includes(good.keyPem.slice(40, 80))), 'no key material in logs');
  });

  it("Key Vault's certificate object agrees with what Postroom computed from the secret", async () => {
    const { token } = (await vaultCredential.getToken('https://vault.azure.net/.default'))!;
    const body = await httpsJson(`${kv.vaultUrl}/certificates/app-cert?api-version=7.5`, certs.ca, token);
    const der = Buffer.from(body.cer, 'base64');
    assert.equal(createHash('sha256').update(der).digest('hex'), good.thumbprintSha256);
    assert.equal(body.x5t, createHash('sha1').update(der).digest('base64url'));
    assert.equal(body.attributes.exp, Math.floor(good.notAfter.getTime() / 1000));
    assert.equal(new X509Certificate(der).subject, 'CN=postroom-good');
  });

  it('a wrong thumbprint is refused with AADSTS700027', async () => {
    const cca = new ConfidentialClientApplication({
      auth: {
        clientId: ids.cert,
        authority: te.authority,
        knownAuthorities: [new URL(te.authorityHost).host],
        clientCertificate: { thumbprintSha256: unregistered.thumbprintSha256, privateKey: good.keyPem, x5c: good.certPem },
      },
      system: { networkClient: createNetworkClient({ ca: certs.ca }) },
    });
    await assert.rejects(cca.acquireTokenByClientCredential({ scopes: [OUTLOOK] }), (e: any) => {
      assert.match(String(e.message), /AADSTS700027: Client assertion failed signature validation\. \[Reason - The key was not found\./);
      assert.ok(String(e.message).includes(unregistered.thumbprintSha256.toUpperCase()));
      return true;
    });
    // Through Postroom: a certificate in Key Vault that the app registration does not have; re-read once, then a coded error.
    const { tokens } = provider(appWith(ids.cert, { certificate: { vaultUrl: kv.vaultUrl, name: 'unregistered-cert' } }));
    await assert.rejects(tokens.getToken(), expectCode('InvalidClientCertificate', 'AADSTS700027'));
    assert.equal(kv.reads('unregistered-cert'), 2, 'read again once in case it was renewed');
  });

  it('an expired certificate fails with CertificateExpired before asking Entra; Entra refuses it too', async () => {
    const before = te.tokenRequests();
    const { tokens } = provider(appWith(ids.cert, { certificate: { vaultUrl: kv.vaultUrl, name: 'expired-cert' } }));
    await assert.rejects(tokens.getToken(), (e: unknown) => {
      expectCode('CertificateExpired')(e);
      assert.match((e as Error).message, /expired on \d{4}-/);
      assert.match((e as PostroomError).fix, /Renew the certificate/);
      return true;
    });
    assert.equal(tokens.credentialInfo().expiring, true);
    const cca = new ConfidentialClientApplication({
      auth: {
        clientId: ids.cert,
        authority: te.authority,
        knownAuthorities: [new URL(te.authorityHost).host],
        clientCertificate: { thumbprintSha256: expired.thumbprintSha256, privateKey: expired.keyPem },
      },
      system: { networkClient: createNetworkClient({ ca: certs.ca }) },
    });
    await assert.rejects(cca.acquireTokenByClientCredential({ scopes: [OUTLOOK] }), /AADSTS700027: .*The key used is expired/);
    assert.equal(te.tokenRequests(), before);
  });

  it('warns under 30 days (code CredentialExpiring), still gets a token; an expired Key Vault secret is an error', async () => {
    const { tokens, log } = provider(appWith(ids.cert, { certificate: { vaultUrl: kv.vaultUrl, name: 'expiring-cert' } }));
    await tokens.getToken();
    const warn = log.lines.filter((l) => l.includes('CredentialExpiring'));
    assert.equal(warn.length, 1, log.lines.join('\n'));
    assert.match(warn[0], /^warn .*the certificate of app "a" expires in 10 day\(s\)/);
    assert.equal(tokens.credentialInfo().expiring, true);
    await tokens.getToken({ renew: true });
    assert.equal(log.lines.filter((l) => l.includes('CredentialExpiring')).length, 1, 'once a day, not at every token');

    const s = provider(appWith(ids.secret, { secret: { vaultUrl: kv.vaultUrl, name: 'secret-expiring' } }));
    await s.tokens.getToken();
    assert.ok(s.log.lines.some((l) => /the secret of app "a" expires in 5 day\(s\)/.test(l)));
    const gone = provider(appWith(ids.secret, { secret: { vaultUrl: kv.vaultUrl, name: 'secret-expired' } }));
    await assert.rejects(gone.tokens.getToken(), expectCode('SecretExpired'));
  });

  it('a PKCS#12 certificate is refused with a fix (PEM content type)', async () => {
    const { tokens } = provider(appWith(ids.cert, { certificate: { vaultUrl: kv.vaultUrl, name: 'pfx-cert' } }));
    await assert.rejects(tokens.getToken(), (e: unknown) => {
      expectCode('CertificateUnavailable')(e);
      assert.match((e as Error).message, /PKCS#12/);
      return true;
    });
  });

  it('federated: the managed identity token (IDENTITY_ENDPOINT protocol) is the client assertion', async () => {
    const miBefore = mi.tokenRequests();
    const { tokens } = provider(appWith(ids.fed, { federated: { clientId: MI } }));
    const { token } = await tokens.getToken();
    const claims = decodeJwt(token);
    assert.equal(claims.appid, ids.fed);
    assert.deepEqual(claims.roles, ['POP.AccessAsApp']);
    assert.equal(mi.tokenRequests(), miBefore + 1);
    const fresh = await tokens.getToken({ renew: true });
    assert.notEqual(fresh.token, token);
    assert.equal(mi.tokenRequests(), miBefore + 1, 'the managed identity token is cached by @azure/identity');
    assert.deepEqual(tokens.credentialInfo(), { kind: 'federated' });
  });

  it('federated: an untrusted issuer (AADSTS700211), a wrong subject (AADSTS700213), a forged signature (AADSTS50013)', async () => {
    const untrusted = provider(appWith(ids.untrusted, { federated: { clientId: MI } }));
    await assert.rejects(untrusted.tokens.getToken(), expectCode('FederatedCredentialMismatch', 'AADSTS700211'));
    const other = provider(appWith(ids.fed, { federated: { clientId: OTHER_MI } }));
    await assert.rejects(other.tokens.getToken(), expectCode('FederatedCredentialMismatch', 'AADSTS700213'));
    // A token naming the trusted issuer and subject, signed with another key.
    const rogue = testKey;
    const forged: TokenCredential = {
      async getToken() {
        const now = Math.floor(Date.now() / 1000);
        const token = await new SignJWT({ iss: mi.issuer, sub: mi.principalId(MI), aud: 'api://AzureADTokenExchange', iat: now, exp: now + 600 })
          .setProtectedHeader({ alg: 'RS256', kid: mi.kid })
          .sign(rogue);
        return { token, expiresOnTimestamp: (now + 600) * 1000 };
      },
    };
    const f = provider(appWith(ids.fed, { federated: { clientId: MI } }), { managedIdentity: forged });
    await assert.rejects(f.tokens.getToken(), expectCode('TokenRequestFailed', 'AADSTS50013'));
  });

  it('federated: an identity not assigned to the app is ManagedIdentityUnavailable', async () => {
    const { tokens } = provider(appWith(ids.fed, { federated: { clientId: UNASSIGNED_MI } }));
    await assert.rejects(tokens.getToken(), (e: unknown) => {
      expectCode('ManagedIdentityUnavailable')(e);
      assert.match((e as Error).message, new RegExp(UNASSIGNED_MI));
      return true;
    });
  });
});

async function httpsJson(url: string, ca: string, token: string): Promise<any> {
  const { request } = await import('node:https');
  return new Promise((resolve, reject) => {
    const req = request(url, { headers: { authorization: `Bearer ${token}` }, ca, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve(JSON.parse(Buffer.concat(chunks).toString('utf8'))));
    });
    req.on('error', reject);
    req.end();
  });
}
