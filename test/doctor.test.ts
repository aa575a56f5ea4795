/**
 * `postroom doctor` against the real local stack, healthy and broken: for
 * each broken set-up the doctor's ✗ line, the cause, the fix filled in with
 * the real app id, tenant and mailbox, the --json shape and the exit code;
 * and the same cause and fix in the poll's error and the status report.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { startSandbox, SANDBOX_APP, SANDBOX_TENANT, type Sandbox } from '../sandbox/index.js';
import type { SandboxApp } from '../sandbox/token-endpoint.js';
import { ensureCertificates } from '../sandbox/ca.js';
import { loadConfig } from '../shared/config/index.js';
import { createRuntime, type Runtime } from '../shared/runtime.js';
import { memoryLogger } from '../shared/logger.js';
import { resetTokenProviders } from '../shared/auth/token-provider.js';
import { runDoctor, type DoctorCheck, type DoctorReport } from '../shared/doctor/index.js';
import { renderCheck } from '../shared/doctor/render.js';
import { pollMailbox } from '../shared/poll/poll-mailbox.js';
import { mailboxStatusReport } from '../shared/poll/report.js';
import { main } from '../shared/cli/main.js';
import { startKeyVault, type KeyVaultEndpoint } from './support/keyvault-endpoint.js';
import { startFaultProxy, type FaultProxy } from './support/fault-proxy.js';
import { brokenSetupApps, OTHER_TENANT } from './support/broken-setups.js';

const APPS = brokenSetupApps('e0');
const MBX = {
  ok: 'doctor-ok@contoso.test',
  pop: 'doctor-pop@contoso.test',
  popOff: 'doctor-pop-off@contoso.test',
  imapOff: 'doctor-imap-off@contoso.test',
  smtpOff: 'doctor-smtp-off@contoso.test',
  tls: 'doctor-tls@contoso.test',
};
const SECRET = 'doctor-client-secret';
const NO_PLACEHOLDER = /<[A-Za-z][^<>]*>/;

describe('postroom doctor against the local stack', () => {
  let sb: Sandbox;
  let vault: KeyVaultEndpoint;
  let proxy: FaultProxy;
  let dir: string;
  const runtimes: Runtime[] = [];

  /** Settings over the sandbox: `mailboxes`, one app, the app's secret in the Key Vault stand-in unless `plain`. */
  const envOf = (mailboxes: unknown[], a: SandboxApp = SANDBOX_APP, o: { plain?: boolean; app?: Record<string, unknown>; env?: Record<string, string> } = {}) => {
    const env = sb.env(mailboxes, a);
    const apps = JSON.parse(env.POSTROOM_APPS);
    // The vault holds the sandbox app's secret; the other apps use plain ones.
    if (!o.plain && a === SANDBOX_APP) apps[0].secret = { vaultUrl: vault.vaultUrl, name: SECRET };
    Object.assign(apps[0], o.app ?? {});
    return { ...env, POSTROOM_APPS: JSON.stringify(apps), ...o.env };
  };
  const runtimeOf = async (env: Record<string, string>) => {
    resetTokenProviders();
    const { ClientSecretCredential } = await import('@azure/identity');
    // The Function App's managed identity in Azure; here an app of the local issuer.
    const credential = new ClientSecretCredential(SANDBOX_TENANT, SANDBOX_APP.clientId, SANDBOX_APP.clientSecret, {
      authorityHost: sb.token.authorityHost,
      disableInstanceDiscovery: true,
      tlsOptions: { ca: sb.certs.ca },
    });
    const rt = createRuntime({
      config: loadConfig(env),
      logger: memoryLogger(),
      credential,
      secretClientOptions: { tlsOptions: { ca: sb.certs.ca }, disableChallengeResourceVerification: true },
    });
    runtimes.push(rt);
    return rt;
  };
  const doctor = async (env: Record<string, string>, o: Parameters<typeof runDoctor>[1] = {}) => runDoctor(await runtimeOf(env), { timeoutMs: 3000, ...o });
  const only = (r: DoctorReport, status: DoctorCheck['status']) => r.checks.filter((c) => c.status === status);
  const one = (r: DoctorReport, status: DoctorCheck['status']): DoctorCheck => {
    const cs = only(r, status);
    assert.equal(cs.length, 1, r.checks.map((c) => renderCheck(c).join('\n')).join('\n'));
    return cs[0];
  };
  const cli = async (env: Record<string, string>, ...args: string[]) => {
    let stdout = '';
    let stderr = '';
    const sink = (add: (s: string) => void) => new Writable({ write: (c, _e, cb) => (add(String(c)), cb()) });
    const code = await main(['doctor', '--timeout', '3', ...args], {
      stdout: sink((s) => (stdout += s)),
      stderr: sink((s) => (stderr += s)),
      env: { ...env, PATH: process.env.PATH },
      cwd: dir,
    });
    return { code, stdout, stderr };
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'postroom-doctor-'));
    const all = [SANDBOX_APP, ...Object.values(APPS)];
    const grants = Object.values(MBX).flatMap((mailbox) => all.map((a) => ({ appId: a.clientId, mailbox })));
    sb = await startSandbox({ dir, apps: all, grants, inMemoryStorage: true });
    await sb.dovecot.setServicePrincipal(APPS.unregistered.clientId, false);
    sb.smtp.setServicePrincipal(APPS.unregistered.clientId, false);
    await sb.dovecot.setProtocolEnabled(MBX.popOff, 'pop3', false);
    await sb.dovecot.setProtocolEnabled(MBX.imapOff, 'imap', false);
    sb.smtp.setSmtpAuthEnabled(MBX.smtpOff, false);
    for (const m of Object.values(MBX)) await sb.dovecot.deliver(m, 'From: a@b.test\r\nSubject: hi\r\n\r\nhello\r\n');
    vault = await startKeyVault({ cert: sb.certs.cert, key: sb.certs.key, authority: sb.token.authority, publicKeyPem: sb.token.publicKeyPem });
    vault.setSecret(SECRET, SANDBOX_APP.clientSecret, { expiresOn: new Date(Date.now() + 200 * 86_400_000) });
    // A server whose certificate another CA signed (not the one POSTROOM_CA_FILE names).
    const other = await ensureCertificates(join(dir, 'other-ca'));
    proxy = await startFaultProxy({ targetPort: sb.dovecot.imapPort, cert: other.cert, key: other.key, ca: sb.certs.ca, protocol: 'imap' });
  });
  after(async () => {
    for (const rt of runtimes) rt.close();
    await proxy?.close();
    await vault?.stop();
    await sb?.stop();
    resetTokenProviders();
    await rm(dir, { recursive: true, force: true }).catch(() => undefined);
  });

  it('healthy: every layer ✓ (Key Vault with expiry, token, DNS, TCP, TLS, XOAUTH2, folder, SMTP, storage), exit 0', async () => {
    vault.setSecret(SECRET, SANDBOX_APP.clientSecret, { expiresOn: new Date(Date.now() + 200 * 86_400_000) });
    const r = await doctor(
      envOf([
        { address: MBX.ok, protocol: 'imap', notify: { to: ['ops@contoso.test'] } },
        { address: MBX.pop, protocol: 'pop3' },
      ]),
    );
    assert.deepEqual(only(r, 'fail').concat(only(r, 'warn')), []);
    assert.equal(r.summary.exitCode, 0);
    const layers = new Set(r.checks.map((c) => c.layer));
    for (const l of ['settings', 'keyvault', 'token', 'dns', 'tcp', 'tls', 'auth', 'folder', 'smtp', 'storage']) assert.ok(layers.has(l as never), l);
    const kv = r.checks.find((c) => c.layer === 'keyvault')!;
    assert.match(kv.detail, new RegExp(`secret "${SECRET}" in ${vault.vaultUrl} readable; expires .* \\(in (199|200) day\\(s\\)\\)`));
    assert.match(r.checks.find((c) => c.layer === 'tls')!.detail, /^TLSv1\.[23], certificate localhost issued by Postroom Sandbox CA, expires \d{4}-\d\d-\d\d$/);
    assert.match(r.checks.find((c) => c.layer === 'folder' && c.subject.startsWith('imap:'))!.detail, /^INBOX: 1 message\(s\), UIDNEXT 2, UIDVALIDITY \d+ \(opened read-only\)$/);
    assert.match(r.checks.find((c) => c.layer === 'folder' && c.subject.startsWith('pop3:'))!.detail, /^INBOX \(POP3 maildrop\): 1 message\(s\), 1 not yet delivered$/);
    assert.match(r.checks.find((c) => c.layer === 'smtp')!.detail, /EHLO, STARTTLS, AUTH XOAUTH2 as doctor-ok@contoso\.test accepted/);
    assert.equal(r.checks.filter((c) => c.layer === 'storage').length, 5);
  });

  it('CLI: healthy sandbox settings print ✓ lines and the summary, exit 0; --json gives { summary, checks }', async () => {
    const env = envOf([{ address: MBX.ok, protocol: 'imap' }], SANDBOX_APP, { plain: true });
    const r = await cli(env);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.ok(
      lines.slice(0, -1).every((l) => l.startsWith('✓ ')),
      r.stdout,
    );
    assert.match(lines.at(-1)!, /^doctor: \d+ ok, 0 warning\(s\), 0 failure\(s\) in [\d.]+ s: all checks passed$/);
    const j = await cli(env, '--json');
    const report = JSON.parse(j.stdout) as DoctorReport;
    assert.equal(j.code, 0);
    assert.deepEqual(Object.keys(report).sort(), ['checks', 'summary']);
    assert.deepEqual(Object.keys(report.summary).sort(), ['exitCode', 'fail', 'ms', 'ok', 'warn']);
    for (const c of report.checks) {
      assert.ok(['ok', 'fail', 'warn'].includes(c.status));
      assert.equal(typeof c.layer, 'string');
      assert.equal(typeof c.subject, 'string');
      assert.equal(typeof c.ms, 'number');
      assert.equal(typeof c.detail, 'string');
    }
  });

  it('settings that do not load: ✗ settings lines with every problem, exit 2 (text and --json)', async () => {
    const env = { ...envOf([{ address: MBX.ok }], SANDBOX_APP, { plain: true }), POSTROOM_MAILBOXES: '[{"address": "not-an-address"}]' };
    const r = await cli(env);
    assert.equal(r.code, 2, r.stdout + r.stderr);
    assert.match(r.stdout, /^✗ settings config: ConfigInvalid: POSTROOM_MAILBOXES/m);
    assert.match(r.stdout, /the settings do not load$/m);
    const j = JSON.parse((await cli(env, '--json')).stdout) as DoctorReport;
    assert.equal(j.summary.exitCode, 2);
    assert.equal(j.checks[0].code, 'ConfigInvalid');
  });

  it('Graph resource, generic tenant, app without mailbox: ✗ settings lines with the setting to change, exit 1', async () => {
    const env = envOf([{ address: MBX.ok, app: 'sandbox' }], SANDBOX_APP, { plain: true, app: { resource: 'https://graph.microsoft.com' } });
    const apps = JSON.parse(env.POSTROOM_APPS);
    apps.push({ ...apps[0], name: 'spare', resource: undefined, tenantId: 'organizations' });
    const r = await doctor({ ...env, POSTROOM_APPS: JSON.stringify(apps) }, { protocol: 'smtp' });
    const settings = only(r, 'fail').filter((c) => c.layer === 'settings');
    assert.deepEqual(settings.map((c) => c.code).sort(), ['AppWithoutMailbox', 'GenericTenant', 'NonExchangeResource']);
    assert.match(
      settings.find((c) => c.code === 'NonExchangeResource')!.fix!,
      /Remove "resource" from app "sandbox" in POSTROOM_APPS: the scope is then https:\/\/outlook\.office365\.com\/\.default/,
    );
    assert.equal(r.summary.exitCode, 1);
  });

  /** The poll of the only mailbox of `env`, then its status report entry. */
  const pollOf = async (env: Record<string, string>) => {
    const rt = await runtimeOf(env);
    const result = await pollMailbox(rt, rt.config.mailboxes[0]);
    const report = await mailboxStatusReport(rt);
    return { result, entry: report.mailboxes[0], report };
  };
  const noPlaceholder = (fix: string | undefined) => assert.doesNotMatch(fix ?? '', NO_PLACEHOLDER, fix);

  it('service principal not registered: ✗ auth, cause "every protocol refused" (likely), fix with the real app id, tenant and mailbox; the poll and status say the same', async () => {
    const a = APPS.unregistered;
    const env = envOf([{ address: MBX.ok, protocol: 'imap' }], a);
    const r = await doctor(env);
    const c = one(r, 'fail');
    assert.equal(c.layer, 'auth');
    assert.equal(c.code, 'ServicePrincipalNotRegistered');
    assert.equal(c.confidence, 'likely');
    assert.match(c.cause!, /every protocol tried \(IMAP, POP, SMTP\) refused the same token for doctor-ok@contoso\.test/);
    assert.match(c.detail, /^the mail server refused the app token/);
    assert.ok(c.fix!.includes(`Connect-ExchangeOnline -Organization ${SANDBOX_TENANT}`), c.fix);
    assert.ok(c.fix!.includes(`New-ServicePrincipal -AppId ${a.clientId} -ObjectId (az ad sp show --id ${a.clientId} --query id -o tsv)`), c.fix);
    assert.ok(c.fix!.includes(`Add-MailboxPermission -Identity ${MBX.ok}`), c.fix);
    noPlaceholder(c.fix);
    assert.equal(r.summary.exitCode, 1);
    const text = renderCheck(c);
    assert.match(text[0], /^✗ auth {5}imap:doctor-ok@contoso\.test\/INBOX: ServicePrincipalNotRegistered: the mail server refused/);
    assert.match(text[1], /^ {4}cause \(likely\): every protocol tried/);
    assert.ok(text.at(-1)!.startsWith('    fix: Connect-ExchangeOnline'));
    const { result, entry } = await pollOf(env);
    assert.equal(result.error?.code, 'ServicePrincipalNotRegistered');
    assert.equal(result.error?.fix, c.fix);
    assert.equal(result.diagnosis?.cause, c.cause);
    assert.equal(entry.status?.lastErrorCode, 'ServicePrincipalNotRegistered');
    assert.deepEqual({ ...entry.lastDiagnosis, at: undefined }, { code: 'ServicePrincipalNotRegistered', cause: c.cause, fix: c.fix, confidence: 'likely', at: undefined });
    assert.equal(entry.lastErrorFix, c.fix);
  });

  it('POP disabled for the mailbox: ✗ auth ProtocolDisabled (likely), Set-CASMailbox -PopEnabled for that mailbox; the poll and status say the same', async () => {
    const env = envOf([{ address: MBX.popOff, protocol: 'pop3' }]);
    const c = one(await doctor(env), 'fail');
    assert.deepEqual([c.layer, c.code, c.confidence], ['auth', 'ProtocolDisabled', 'likely']);
    assert.match(c.cause!, /IMAP opened doctor-pop-off@contoso\.test with the same token.*POP is disabled for doctor-pop-off@contoso\.test/);
    assert.ok(c.fix!.startsWith(`Set-CASMailbox -Identity ${MBX.popOff} -PopEnabled $true`), c.fix);
    const { result, entry } = await pollOf(env);
    assert.equal(result.error?.code, 'ProtocolDisabled');
    assert.equal(entry.lastDiagnosis?.fix, c.fix);
    assert.equal(entry.lastErrorFix, c.fix);
  });

  it('IMAP disabled for the mailbox: ✗ auth ProtocolDisabled with -ImapEnabled (POP opens it)', async () => {
    const c = one(await doctor(envOf([{ address: MBX.imapOff, protocol: 'imap' }])), 'fail');
    assert.deepEqual([c.layer, c.code], ['auth', 'ProtocolDisabled']);
    assert.ok(c.fix!.startsWith(`Set-CASMailbox -Identity ${MBX.imapOff} -ImapEnabled $true`), c.fix);
    assert.ok(
      c.evidence!.some((e) => /^pop3: ok/.test(e)),
      c.evidence!.join('|'),
    );
  });

  it('SMTP AUTH disabled for the sender: ✗ smtp SmtpAuthDisabled, the per-mailbox switch (no IMAP/POP switch); the sender fails the same way', async () => {
    const env = envOf([{ address: MBX.smtpOff, protocol: 'imap', notify: { to: ['ops@contoso.test'] } }]);
    const r = await doctor(env, { protocol: 'smtp' });
    const c = one(r, 'fail');
    assert.deepEqual([c.layer, c.subject, c.code], ['smtp', `smtp:${MBX.smtpOff}`, 'SmtpAuthDisabled']);
    assert.match(c.detail, /5\.7\.139/);
    assert.ok(c.fix!.includes(`Set-CASMailbox -Identity ${MBX.smtpOff} -SmtpClientAuthenticationDisabled $false`), c.fix);
    assert.doesNotMatch(c.fix!, /ImapEnabled|PopEnabled/);
    assert.ok(!r.checks.some((x) => x.layer === 'auth'), '--protocol smtp: no IMAP login');
    const rt = await runtimeOf(env);
    const sender = await rt.smtpSender(rt.config.apps[0], MBX.smtpOff);
    await assert.rejects(
      sender.send({ to: ['ops@contoso.test'], subject: 's', text: 't', html: '<p>t</p>', messageId: 'doctor-1@postroom' }),
      (e: { code: string; fix: string }) => e.code === 'SmtpAuthDisabled' && e.fix === c.fix,
    );
  });

  it('tokens with a wrong tenant, a Graph audience, expired on arrival: ✗ token and ✗ auth with the same code and fix; the poll and status say the same', async () => {
    const cases: Array<[SandboxApp, string, RegExp]> = [
      [APPS.wrongTenant, 'WrongTenant', new RegExp(`issued by tenant ${OTHER_TENANT}, the settings name tenant ${SANDBOX_TENANT}`)],
      [APPS.graph, 'WrongAudience', /Microsoft Graph \(aud https:\/\/graph\.microsoft\.com\)/],
      [APPS.expired, 'ClockSkew', /this host's clock is 70 min ahead/],
    ];
    for (const [a, code, detail] of cases) {
      const env = envOf([{ address: MBX.ok, protocol: 'imap' }], a);
      const r = await doctor(env);
      const token = r.checks.find((c) => c.layer === 'token' && c.status === 'fail');
      assert.ok(token, `${a.name}: ${r.checks.map((c) => renderCheck(c)[0]).join('\n')}`);
      assert.equal(token.code, code);
      assert.match(token.detail, detail);
      assert.ok(token.fix!.includes(a.clientId) || code === 'ClockSkew', token.fix);
      noPlaceholder(token.fix);
      const auth = r.checks.find((c) => c.layer === 'auth')!;
      assert.deepEqual([auth.status, auth.code, auth.fix], ['fail', code, token.fix], `${a.name}: the poll's own token check refuses it too`);
      assert.equal(r.summary.exitCode, 1);
      const { result, entry } = await pollOf(env);
      assert.equal(result.error?.code, code);
      assert.match(result.error.message, detail);
      assert.equal(entry.status?.lastErrorCode, code);
      assert.equal(entry.lastErrorFix, token.fix);
    }
  });

  it('Key Vault denying access (403): ✗ keyvault SecretUnavailable with the role to grant, no login tried; the poll and status say the same', async () => {
    const env = envOf([{ address: MBX.ok, protocol: 'imap' }]);
    vault.setDenied(true);
    try {
      const r = await doctor(env);
      const c = one(r, 'fail');
      assert.deepEqual([c.layer, c.code], ['keyvault', 'SecretUnavailable']);
      assert.match(c.detail, new RegExp(`secret "${SECRET}" in ${vault.vaultUrl}: access denied: give the Function App identity the "Key Vault Secrets User" role`));
      assert.match(c.fix!, /Key Vault Secrets User/);
      assert.ok(!r.checks.some((x) => x.layer === 'token' || x.layer === 'auth'), 'nothing after the credential');
      assert.equal(r.summary.exitCode, 1);
      const { result, entry } = await pollOf(env);
      assert.equal(result.error?.code, 'SecretUnavailable');
      assert.match(result.error.message, /access denied/);
      assert.equal(entry.lastErrorFix, c.fix);
    } finally {
      vault.setDenied(false);
    }
  });

  it('a secret expiring in 10 days: ! keyvault CredentialExpiring with the rotation step, exit 0; the status report shows the app expiring', async () => {
    vault.setSecret(SECRET, SANDBOX_APP.clientSecret, { expiresOn: new Date(Date.now() + 10 * 86_400_000 + 3_600_000) });
    try {
      const rt = await runtimeOf(envOf([{ address: MBX.ok, protocol: 'imap' }]));
      const r = await runDoctor(rt, { timeoutMs: 3000 });
      const c = one(r, 'warn');
      assert.deepEqual([c.layer, c.code], ['keyvault', 'CredentialExpiring']);
      assert.match(c.detail, /\(in 10 day\(s\)\): less than 30 days left/);
      assert.ok(c.fix!.includes(`app registration ${SANDBOX_APP.clientId}`), c.fix);
      assert.equal(r.summary.exitCode, 0);
      const report = await mailboxStatusReport(rt);
      const a = report.apps[0];
      assert.deepEqual(
        { name: a.name, clientId: a.clientId, kind: a.kind, state: a.state, expiring: a.expiring },
        { name: 'sandbox', clientId: SANDBOX_APP.clientId, kind: 'secret', state: 'warning', expiring: true },
      );
    } finally {
      vault.setSecret(SECRET, SANDBOX_APP.clientSecret, { expiresOn: new Date(Date.now() + 200 * 86_400_000) });
    }
  });

  it('storage unreachable (closed port): ✗ storage StorageUnavailable per resource, at once, exit 1', async () => {
    const closed = await new Promise<number>((res) => {
      const srv = createServer().listen(0, '127.0.0.1', () => {
        const { port } = srv.address() as { port: number };
        srv.close(() => res(port));
      });
    });
    const storage = sb.azurite.connectionString.replace(/127\.0\.0\.1:\d+/g, `127.0.0.1:${closed}`);
    const env = envOf([{ address: MBX.ok, protocol: 'imap', notify: { to: ['ops@contoso.test'] } }], SANDBOX_APP, { env: { POSTROOM_STORAGE: storage } });
    const r = await doctor(env, { protocol: 'smtp' });
    const failures = only(r, 'fail');
    assert.equal(failures.length, 5, failures.map((c) => renderCheck(c)[0]).join('\n'));
    for (const c of failures) {
      assert.deepEqual([c.layer, c.code], ['storage', 'StorageUnavailable']);
      assert.match(c.detail, new RegExp(`not reachable \\(127\\.0\\.0\\.1:${closed}: ECONNREFUSED`));
      assert.match(c.fix!, /POSTROOM_STORAGE/);
    }
    assert.ok(r.summary.ms < 5000, `${r.summary.ms} ms`);
    assert.equal(r.summary.exitCode, 1);
  });

  it('a server certificate from another CA: ✗ tls TlsFailed naming the certificate and the CA setting; the poll and status say TlsFailed', async () => {
    const env = envOf([{ address: MBX.tls, protocol: 'imap', host: '127.0.0.1', port: proxy.port }]);
    const r = await doctor(env);
    const c = one(r, 'fail');
    assert.deepEqual([c.layer, c.code], ['tls', 'TlsFailed']);
    assert.match(
      c.detail,
      /^TLSv1\.[23], certificate localhost issued by Postroom Sandbox CA, expires .*: not trusted by this host \((UNABLE_TO_GET_ISSUER_CERT_LOCALLY|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE)\)$/,
    );
    assert.match(c.fix!, /The CA file named by POSTROOM_CA_FILE is trusted too; it did not sign this certificate/);
    assert.ok(!r.checks.some((x) => x.layer === 'auth'), 'no login over an untrusted connection');
    const { result, entry } = await pollOf(env);
    assert.equal(result.error?.code, 'TlsFailed');
    assert.equal(entry.status?.lastErrorCode, 'TlsFailed');
    assert.ok(c.fix!.startsWith(entry.lastErrorFix!), `${c.fix} / ${entry.lastErrorFix}`);
  });
});
