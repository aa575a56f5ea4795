/**
 * The status report's `apps` array and `postroom status`'s credential table:
 * each app's credential kind and expiry, a warning under 30 days and an error
 * once expired; read on demand (one token request per app) unless told not to.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { loadConfig, type AppConfig } from '../shared/config/index.js';
import type { CredentialInfo } from '../shared/auth/credentials.js';
import type { TokenProvider } from '../shared/auth/token-provider.js';
import { PostroomError } from '../shared/errors.js';
import type { Runtime } from '../shared/runtime.js';
import { appCredentialReport, mailboxStatusReport } from '../shared/poll/report.js';
import { statusCommand } from '../shared/cli/status.js';
import type { CliContext } from '../shared/cli/context.js';
import { memoryLogger } from '../shared/logger.js';
import { MAILBOXES, startStack, type Stack } from './support/stack.js';

const DAY = 86_400_000;
const NOW = new Date('2026-03-01T12:00:00Z');
const TENANT = '72f988bf-86f1-41af-91ab-2d7cd011db47';

const APPS = [
  { name: 'soon', tenantId: TENANT, clientId: '0a5bd0c5-2222-4000-8000-000000000001', secret: { vaultUrl: 'https://kv-postroom.vault.azure.net', name: 'soon' } },
  { name: 'gone', tenantId: TENANT, clientId: '0a5bd0c5-2222-4000-8000-000000000002', certificate: { vaultUrl: 'https://kv-postroom.vault.azure.net', name: 'gone' } },
  { name: 'keyless', tenantId: TENANT, clientId: '0a5bd0c5-2222-4000-8000-000000000003', federated: { clientId: '6b0c4f3e-1d2a-4c5b-9e8f-0a1b2c3d4e5f' } },
  { name: 'fine', tenantId: TENANT, clientId: '0a5bd0c5-2222-4000-8000-000000000004', certificate: { vaultUrl: 'https://kv-postroom.vault.azure.net', name: 'fine' } },
  { name: 'slow', tenantId: TENANT, clientId: '0a5bd0c5-2222-4000-8000-000000000005', secret: { vaultUrl: 'https://kv-postroom.vault.azure.net', name: 'slow' } },
  { name: 'denied', tenantId: TENANT, clientId: '0a5bd0c5-2222-4000-8000-000000000006', secret: { vaultUrl: 'https://kv-postroom.vault.azure.net', name: 'denied' } },
];

/** A token provider whose getToken reads the credential the way the real one does (info known afterwards, expiry checked). */
function fakeTokens(
  kind: CredentialInfo['kind'],
  behaviour: { expiresOn?: Date; thumbprint?: string; hang?: boolean; fail?: string },
  calls: string[],
  name: string,
): TokenProvider {
  let info: CredentialInfo = { kind };
  return {
    async getToken() {
      calls.push(name);
      if (behaviour.hang) return new Promise(() => {});
      if (behaviour.fail) throw new PostroomError('SecretUnavailable', behaviour.fail, { subject: name });
      info = { kind, ...(behaviour.expiresOn ? { expiresOn: behaviour.expiresOn } : {}), ...(behaviour.thumbprint ? { thumbprintSha256: behaviour.thumbprint } : {}) };
      if (behaviour.expiresOn && behaviour.expiresOn <= NOW) throw new PostroomError('CertificateExpired', `expired on ${behaviour.expiresOn.toISOString()}`, { subject: name });
      return { token: 'not-a-real-token', expiresOn: new Date(NOW.getTime() + 3600_000) };
    },
    credentialInfo: () => info,
  };
}

function fakeRuntime(calls: string[]): Runtime {
  const config = loadConfig({
    POSTROOM_STORAGE: 'UseDevelopmentStorage=true',
    POSTROOM_APPS: JSON.stringify(APPS),
    POSTROOM_MAILBOXES: JSON.stringify(APPS.map((a, i) => ({ address: `box${i}@contoso.com`, app: a.name }))),
  });
  const behaviours: Record<string, Parameters<typeof fakeTokens>[1]> = {
    soon: { expiresOn: new Date(NOW.getTime() + 12 * DAY + 3600_000) },
    gone: { expiresOn: new Date(NOW.getTime() - 3 * DAY - 3600_000), thumbprint: 'ab'.repeat(32) },
    keyless: {},
    fine: { expiresOn: new Date(NOW.getTime() + 200 * DAY), thumbprint: 'cd'.repeat(32) },
    slow: { hang: true },
    denied: { fail: 'access denied' },
  };
  const providers = new Map<string, TokenProvider>();
  const tokens = (app: AppConfig) => {
    if (!providers.has(app.name)) providers.set(app.name, fakeTokens(app.credential.kind, behaviours[app.name], calls, app.name));
    return providers.get(app.name)!;
  };
  // No mailboxes: the report then reads no state (the mailbox half is covered by cli-ops).
  return { config: { ...config, mailboxes: [] }, now: () => NOW, tokens } as unknown as Runtime;
}

describe('status report: app credentials', () => {
  it('each kind with its expiry: warning under 30 days, error once expired, federated never expires, unread is unknown', async () => {
    const calls: string[] = [];
    const apps = await appCredentialReport(fakeRuntime(calls), { credentialTimeoutMs: 100 });
    const by = Object.fromEntries(apps.map((a) => [a.name, a]));
    assert.deepEqual(
      apps.map((a) => a.name),
      APPS.map((a) => a.name),
    );
    assert.deepEqual(calls.sort(), ['denied', 'fine', 'gone', 'slow', 'soon'], 'federated apps are not read');

    assert.deepEqual({ kind: by.soon.kind, state: by.soon.state, daysLeft: by.soon.daysLeft }, { kind: 'secret', state: 'warning', daysLeft: 12 });
    assert.equal(by.soon.expiresOn, new Date(NOW.getTime() + 12 * DAY + 3600_000).toISOString());
    assert.match(by.soon.note, /expires in 12 day\(s\): renew it/);

    assert.deepEqual(
      { kind: by.gone.kind, state: by.gone.state, daysLeft: by.gone.daysLeft, thumb: by.gone.thumbprintSha256 },
      { kind: 'certificate', state: 'error', daysLeft: -4, thumb: 'ab'.repeat(32) },
    );
    assert.match(by.gone.note, /expired 3 day\(s\) ago: polls fail until it is renewed \(token request failed: CertificateExpired\)/);

    assert.deepEqual({ kind: by.keyless.kind, state: by.keyless.state, expiresOn: by.keyless.expiresOn }, { kind: 'federated', state: 'ok', expiresOn: null });
    assert.deepEqual({ state: by.fine.state, daysLeft: by.fine.daysLeft }, { state: 'ok', daysLeft: 200 });
    assert.deepEqual({ state: by.slow.state, note: by.slow.note }, { state: 'unknown', note: 'not read in time: unknown' });
    assert.deepEqual({ state: by.denied.state, note: by.denied.note }, { state: 'unknown', note: 'could not be read: SecretUnavailable' });
    for (const a of apps) assert.doesNotMatch(JSON.stringify(a), /not-a-real-token/);
  });

  it('readCredentials: false reads nothing: "unknown until first use", then what the first use found', async () => {
    const calls: string[] = [];
    const rt = fakeRuntime(calls);
    const before = await appCredentialReport(rt, { readCredentials: false });
    assert.deepEqual(calls, []);
    for (const a of before.filter((x) => x.kind !== 'federated')) assert.deepEqual({ state: a.state, note: a.note }, { state: 'unknown', note: 'unknown until first use' }, a.name);
    await rt.tokens(rt.config.apps[0]).getToken({ renew: false }); // a poll of app "soon"
    const afterUse = await appCredentialReport(rt, { readCredentials: false });
    assert.equal(afterUse[0].state, 'warning');
    // Read once, not again: the report does not ask for what the process knows.
    await appCredentialReport(rt, { credentialTimeoutMs: 100 });
    assert.equal(calls.filter((c) => c === 'soon').length, 1);
  });
});

describe('status with a Key Vault secret (token endpoint + Key Vault stand-in): report, CLI table, exit code', () => {
  let stack: Stack;
  before(async () => {
    stack = await startStack();
  });
  after(async () => {
    await stack?.stop();
  });

  const cliContext = (rt: Runtime) => {
    const lines: string[] = [];
    const io = { stdout: new PassThrough(), stderr: new PassThrough(), env: {}, cwd: process.cwd() };
    const ctx: CliContext = { io, logger: memoryLogger(), config: () => rt.config, runtime: async () => rt, out: (l = '') => lines.push(l), err: (l = '') => lines.push(l) };
    return { ctx, lines };
  };

  it('a secret expiring in 12 days: the report reads it on demand and warns; postroom status shows the kind, expiry and WARNING', async () => {
    const expiresOn = new Date(Date.now() + 12 * DAY + 3600_000);
    stack.vault.setSecret('postroom-client-secret', secretValue(), { expiresOn });
    const rt = await stack.runtime([{ address: MAILBOXES.happy, protocol: 'imap' }], { keyVault: true });
    const report = await mailboxStatusReport(rt);
    assert.equal(report.mailboxes.length, 1, 'the mailbox half is unchanged');
    assert.equal(report.apps.length, 1);
    const [app] = report.apps;
    assert.deepEqual({ kind: app.kind, state: app.state, daysLeft: app.daysLeft }, { kind: 'secret', state: 'warning', daysLeft: 12 });
    assert.equal(Date.parse(app.expiresOn!), Math.floor(expiresOn.getTime() / 1000) * 1000);
    assert.ok(
      rt.log.lines.some((l) => /expires in 12 day\(s\)/.test(l)),
      'the warning is logged too',
    );

    const { ctx, lines } = cliContext(rt);
    assert.equal(await statusCommand([], ctx), 0, 'a warning alone does not fail status');
    const head = lines.findIndex((l) => /^APP\s+CREDENTIAL\s+EXPIRES\s+STATE\s+NOTE$/.test(l));
    assert.ok(head > 0, lines.join('\n'));
    assert.match(lines[head + 1], /^sandbox\s+secret\s+\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\s+WARNING\s+the secret expires in 12 day\(s\): renew it$/);
  });

  it('an expired secret: state error, status exits 1; --json carries the apps array', async () => {
    stack.vault.setSecret('postroom-client-secret', secretValue(), { expiresOn: new Date(Date.now() - 2 * DAY) });
    const rt = await stack.runtime([{ address: MAILBOXES.happy, protocol: 'imap' }], { keyVault: true });
    const { ctx, lines } = cliContext(rt);
    assert.equal(await statusCommand(['--json'], ctx), 1);
    const report = JSON.parse(lines.join('\n')) as { apps: { name: string; kind: string; state: string; note: string }[] };
    assert.equal(report.apps[0].state, 'error');
    assert.match(report.apps[0].note, /expired 2 day\(s\) ago.*SecretExpired/);
  });

  function secretValue(): string {
    return JSON.parse(stack.sandbox.env([]).POSTROOM_APPS)[0].secret.value as string;
  }
});
