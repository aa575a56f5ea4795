/**
 * Each broken set-up made real in the sandbox (Dovecot, SMTP, the Entra-like
 * token endpoint through msal), then told apart: the cause, the filled-in fix
 * and how sure the diagnosis is.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startSandbox, SANDBOX_APP, SANDBOX_TENANT, type Sandbox } from '../sandbox/index.js';
import type { SandboxApp } from '../sandbox/token-endpoint.js';
import { loadConfig, type AppConfig } from '../shared/config/index.js';
import { createAppTokenProvider, resetTokenProviders } from '../shared/auth/token-provider.js';
import { checkAppToken } from '../shared/auth/claims.js';
import { type PostroomError } from '../shared/errors.js';
import { silentLogger } from '../shared/logger.js';
import { narrowAuthRefusal } from '../shared/diagnose/narrow.js';
import { directProbes, probeImap, probePop3, probeSmtp } from '../shared/diagnose/probes.js';
import { brokenSetupApps, OTHER_TENANT } from './support/broken-setups.js';

const APPS = brokenSetupApps('d0');
const MBX = { popOff: 'pop-off@contoso.test', imapOff: 'imap-off@contoso.test', smtpOff: 'smtp-off@contoso.test', ok: 'healthy@contoso.test' };

describe('diagnosis against the real sandbox', () => {
  let sb: Sandbox;
  let dir: string;
  const configOf = (a: SandboxApp, extra: Record<string, unknown> = {}): AppConfig => {
    const env = sb.env([{ address: MBX.ok }], a);
    const apps = JSON.parse(env.POSTROOM_APPS);
    Object.assign(apps[0], extra);
    return loadConfig({ ...env, POSTROOM_APPS: JSON.stringify(apps) }).apps[0];
  };
  const tokenOf = async (a: SandboxApp) => {
    const cfg = configOf(a);
    return createAppTokenProvider(cfg, { secrets: { getSecret: async () => a.clientSecret }, logger: silentLogger, ca: sb.certs.ca }).getToken();
  };
  const probesFor = (a: AppConfig, mailbox: string, token: string) => directProbes({ app: a, mailbox, token, ca: sb.certs.ca, timeoutMs: 5_000 });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'postroom-diag-'));
    const all = [SANDBOX_APP, ...Object.values(APPS)];
    const grants = Object.values(MBX).flatMap((mailbox) => all.map((a) => ({ appId: a.clientId, mailbox })));
    sb = await startSandbox({ dir, apps: all, grants, inMemoryStorage: true });
    await sb.dovecot.setServicePrincipal(APPS.unregistered.clientId, false);
    sb.smtp.setServicePrincipal(APPS.unregistered.clientId, false);
    await sb.dovecot.setProtocolEnabled(MBX.popOff, 'pop3', false);
    await sb.dovecot.setProtocolEnabled(MBX.imapOff, 'imap', false);
    sb.smtp.setSmtpAuthEnabled(MBX.smtpOff, false);
    for (const m of Object.values(MBX)) await sb.dovecot.deliver(m, 'From: a@b.test\r\nSubject: hi\r\n\r\nhello\r\n');
  });
  after(async () => {
    await sb?.stop();
    resetTokenProviders();
    await rm(dir, { recursive: true, force: true }).catch(() => undefined);
  });

  it('healthy: every probe opens the mailbox with the sandbox app token', async () => {
    const cfg = configOf(SANDBOX_APP);
    const { token, expiresOn } = await tokenOf(SANDBOX_APP);
    assert.equal(checkAppToken(token, { protocol: 'imap', app: cfg, expiresOn }).problems.length, 0);
    const p = probesFor(cfg, MBX.ok, token);
    const [imap, pop3, smtp] = await Promise.all([p.imap!(), p.pop3!(), p.smtp!()]);
    assert.deepEqual(
      [imap, pop3, smtp].map((r) => (typeof r === 'string' ? r : r.outcome)),
      ['ok', 'ok', 'ok'],
    );
  });

  it('POP disabled for a mailbox: POP refused, IMAP opens it -> ProtocolDisabled (likely), Set-CASMailbox -PopEnabled for that mailbox', async () => {
    const cfg = configOf(SANDBOX_APP);
    const { token } = await tokenOf(SANDBOX_APP);
    const d = await narrowAuthRefusal({ refused: 'pop3', token, app: cfg, mailbox: MBX.popOff, probe: probesFor(cfg, MBX.popOff, token) });
    assert.equal(d.code, 'ProtocolDisabled');
    assert.equal(d.confidence, 'likely');
    assert.match(d.cause, /IMAP opened pop-off@contoso\.test with the same token.*POP is disabled for pop-off@contoso\.test/);
    assert.ok(d.fix.startsWith(`Set-CASMailbox -Identity ${MBX.popOff} -PopEnabled $true`), d.fix);
    assert.ok(
      d.evidence.some((e) => /^pop3: refused \[AuthenticationFailed\]/.test(e)),
      d.evidence.join('|'),
    );
    assert.ok(
      d.evidence.some((e) => /^imap: ok \(opened INBOX \(1 messages\)\)/.test(e)),
      d.evidence.join('|'),
    );
  });

  it('IMAP disabled for a mailbox: POP opens it -> ProtocolDisabled with -ImapEnabled', async () => {
    const cfg = configOf(SANDBOX_APP);
    const { token } = await tokenOf(SANDBOX_APP);
    const d = await narrowAuthRefusal({ refused: 'imap', token, app: cfg, mailbox: MBX.imapOff, probe: probesFor(cfg, MBX.imapOff, token) });
    assert.equal(d.code, 'ProtocolDisabled');
    assert.ok(d.fix.includes(`Set-CASMailbox -Identity ${MBX.imapOff} -ImapEnabled $true`), d.fix);
    assert.doesNotMatch(d.fix, /PopEnabled/);
  });

  it('SMTP AUTH disabled for a mailbox: 535 5.7.139 -> SmtpAuthDisabled (certain), the per-mailbox switch, no IMAP/POP switches', async () => {
    const cfg = configOf(SANDBOX_APP);
    const { token } = await tokenOf(SANDBOX_APP);
    const r = await probeSmtp({ ...cfg.endpoints.smtp, mailbox: MBX.smtpOff, token, ca: sb.certs.ca });
    assert.equal(r.outcome, 'refused');
    assert.equal(r.code, 'SmtpAuthDisabled');
    assert.match(r.detail!, /5\.7\.139/);
    const d = await narrowAuthRefusal({ refused: 'smtp', token, app: cfg, mailbox: MBX.smtpOff, probe: probesFor(cfg, MBX.smtpOff, token) });
    assert.equal(d.code, 'SmtpAuthDisabled');
    assert.equal(d.confidence, 'certain');
    assert.ok(d.fix.includes(`Set-CASMailbox -Identity ${MBX.smtpOff} -SmtpClientAuthenticationDisabled $false`), d.fix);
    assert.doesNotMatch(d.fix, /ImapEnabled|PopEnabled/);
  });

  it('service principal not registered: every protocol refuses -> ServicePrincipalNotRegistered (likely), fix with the real app id, tenant and mailbox', async () => {
    const a = APPS.unregistered;
    const cfg = configOf(a);
    const { token, expiresOn } = await tokenOf(a);
    checkAppToken(token, { protocol: 'imap', app: cfg, expiresOn }); // the token itself is fine
    const d = await narrowAuthRefusal({ refused: 'imap', token, app: cfg, mailbox: MBX.ok, probe: probesFor(cfg, MBX.ok, token) });
    assert.equal(d.code, 'ServicePrincipalNotRegistered');
    assert.equal(d.confidence, 'likely');
    assert.deepEqual(
      d.evidence.map((e) => e.split(' ').slice(0, 2).join(' ')),
      ['imap: refused', 'pop3: refused', 'smtp: refused'],
    );
    assert.ok(d.fix.includes(`Connect-ExchangeOnline -Organization ${SANDBOX_TENANT}`), d.fix);
    assert.ok(d.fix.includes(`New-ServicePrincipal -AppId ${a.clientId} -ObjectId (az ad sp show --id ${a.clientId} --query id -o tsv)`), d.fix);
    assert.ok(d.fix.includes(`Add-MailboxPermission -Identity ${MBX.ok}`), d.fix);
    assert.doesNotMatch(d.fix, /<[A-Za-z][^<>]*>/);
    assert.equal(d.error.code, 'ServicePrincipalNotRegistered');
    // With the Enterprise application's object id configured, it is named instead of the az command.
    const spId = '3c3c3c3c-0000-4000-8000-00000000005f';
    const d2 = await narrowAuthRefusal({ refused: 'imap', token, app: configOf(a, { servicePrincipalObjectId: spId }), mailbox: MBX.ok, probe: probesFor(cfg, MBX.ok, token) });
    assert.ok(d2.fix.includes(`New-ServicePrincipal -AppId ${a.clientId} -ObjectId ${spId}`), d2.fix);
    assert.doesNotMatch(d2.fix, /az ad sp show/);
  });

  it('tokens from msal with a wrong tenant, a Graph audience, or expired on arrival: the server refuses, the local check says why', async () => {
    const cases: Array<[SandboxApp, string, RegExp]> = [
      [APPS.wrongTenant, 'WrongTenant', new RegExp(`issued by tenant ${OTHER_TENANT}, the settings name tenant ${SANDBOX_TENANT}`)],
      [APPS.graph, 'WrongAudience', /Microsoft Graph \(aud https:\/\/graph\.microsoft\.com\)/],
      [APPS.expired, 'ClockSkew', /this host's clock is 70 min ahead/],
    ];
    for (const [a, code, detail] of cases) {
      const cfg = configOf(a);
      const { token, expiresOn } = await tokenOf(a);
      // The real servers refuse each of them.
      const imap = await probeImap({ ...cfg.endpoints.imap, mailbox: MBX.ok, token, ca: sb.certs.ca });
      assert.equal(imap.outcome, 'refused', `${a.name}: ${imap.detail}`);
      assert.throws(
        () => checkAppToken(token, { protocol: 'imap', app: cfg, mailbox: MBX.ok, expiresOn }),
        (e: PostroomError) => {
          assert.equal(e.code, code, e.message);
          assert.match(e.message, detail);
          assert.ok(e.message.includes(a.clientId), e.message);
          assert.doesNotMatch(e.fix, /<[A-Za-z][^<>]*>/);
          return true;
        },
      );
      const d = await narrowAuthRefusal({ refused: 'imap', token, app: cfg, mailbox: MBX.ok, expiresOn, probe: probesFor(cfg, MBX.ok, token) });
      assert.equal(d.code, code);
      assert.equal(d.confidence, 'certain');
    }
    // Without the provider's expiry an expired token is just TokenExpired.
    const { token } = await tokenOf(APPS.expired);
    assert.throws(
      () => checkAppToken(token, { protocol: 'pop3', app: configOf(APPS.expired) }),
      (e: PostroomError) => e.code === 'TokenExpired',
    );
    const pop = await probePop3({ ...configOf(APPS.expired).endpoints.pop3, mailbox: MBX.ok, token, ca: sb.certs.ca });
    assert.equal(pop.outcome, 'refused');
  });

  it('switches take effect at the next login and can be undone (Set-CASMailbox, New-ServicePrincipal)', async () => {
    const cfg = configOf(SANDBOX_APP);
    const { token } = await tokenOf(SANDBOX_APP);
    const target = { ...cfg.endpoints.pop3, mailbox: MBX.popOff, token, ca: sb.certs.ca };
    assert.equal((await probePop3(target)).outcome, 'refused');
    await sb.dovecot.setProtocolEnabled(MBX.popOff, 'pop3', true);
    assert.equal((await probePop3(target)).outcome, 'ok');
    await sb.dovecot.setProtocolEnabled(MBX.popOff, 'pop3', false);
    assert.equal((await probePop3(target)).outcome, 'refused');
    const log = await import('node:fs/promises').then((f) => f.readFile(sb.dovecot.logFile, 'utf8'));
    assert.match(log, /refused: pop3 is disabled for pop-off@contoso\.test/);
    assert.match(log, new RegExp(`refused: app ${APPS.unregistered.clientId} has no service principal in Exchange`));
    assert.match(log, new RegExp(`token is from tenant ${OTHER_TENANT}`));
  });
});
