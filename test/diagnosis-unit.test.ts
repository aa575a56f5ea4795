import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ERROR_CATALOG, PostroomError, withContext, type FixContext, type PostroomErrorCode } from '../shared/errors.js';
import { loadConfig, type AppConfig } from '../shared/config/index.js';
import { checkAppToken, inspectAppToken } from '../shared/auth/claims.js';
import { protocolTokenGetter } from '../shared/auth/protocol-token.js';
import { fixContextOf } from '../shared/diagnose/context.js';
import { narrowAuthRefusal, type AuthProbes, type ProbeOutcome } from '../shared/diagnose/narrow.js';
import { droppedAfterLogin } from '../shared/diagnose/connection.js';

const TENANT = '6f1c2a9e-1111-4222-8333-444455556666';
const APP_ID = '9d3b5f7a-aaaa-4bbb-8ccc-ddddeeeeffff';
const SP_ID = '1a2b3c4d-0000-4000-8000-123456789abc';
const MBX = 'invoices@contoso.com';
const PLACEHOLDER = /<[A-Za-z][^<>]*>/;

function env(app: Record<string, unknown> = {}, mailboxes: unknown[] = [{ address: MBX }]): Record<string, string> {
  return {
    POSTROOM_STORAGE: 'UseDevelopmentStorage=true',
    POSTROOM_SANDBOX: 'true',
    POSTROOM_APPS: JSON.stringify([{ name: 'main', tenantId: TENANT, clientId: APP_ID, secret: { value: 'x' }, ...app }]),
    POSTROOM_MAILBOXES: JSON.stringify(mailboxes),
  };
}
const appOf = (extra: Record<string, unknown> = {}): AppConfig => loadConfig(env(extra)).apps[0];

/** An unsigned JWT (the checks never verify signatures). */
function jwt(claims: Record<string, unknown>): string {
  const b = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b({ alg: 'RS256', typ: 'JWT' })}.${b(claims)}.c2ln`;
}
const NOW = Date.parse('2026-03-01T12:00:00Z') / 1000;
const good = (over: Record<string, unknown> = {}) =>
  jwt({
    aud: 'https://outlook.office365.com',
    tid: TENANT,
    appid: APP_ID,
    idtyp: 'app',
    roles: ['IMAP.AccessAsApp', 'POP.AccessAsApp', 'SMTP.SendAsApp'],
    iat: NOW - 60,
    nbf: NOW - 60,
    exp: NOW + 3600,
    ...over,
  });

describe('fixes are filled in with the real ids', () => {
  const full = (over: Partial<FixContext> = {}): FixContext => ({
    ...fixContextOf(appOf({ servicePrincipalObjectId: SP_ID }), { mailbox: MBX, protocol: 'imap', from: 'alerts@contoso.com' }),
    ...over,
  });

  it('no placeholder remains in any catalog fix, for every protocol, with or without the service principal id', () => {
    for (const protocol of ['imap', 'pop3', 'smtp'] as const) {
      for (const ctx of [full({ protocol }), { ...full({ protocol }), servicePrincipalObjectId: undefined }]) {
        for (const [code, entry] of Object.entries(ERROR_CATALOG)) {
          const fix = entry.fix(ctx);
          assert.doesNotMatch(fix, PLACEHOLDER, `${code}/${protocol}: ${fix}`);
          if (/New-ServicePrincipal|Add-MailboxPermission/.test(fix)) {
            assert.ok(fix.includes(APP_ID) || fix.includes(SP_ID), `${code}: ${fix}`);
            assert.ok(fix.includes(MBX), `${code} names the mailbox: ${fix}`);
          }
        }
      }
    }
  });

  it('names the service principal object id when configured, else the az command that prints it and why', () => {
    const withSp = ERROR_CATALOG.ServicePrincipalNotRegistered.fix(full());
    assert.ok(withSp.includes(`New-ServicePrincipal -AppId ${APP_ID} -ObjectId ${SP_ID}`), withSp);
    assert.ok(withSp.includes(`Add-MailboxPermission -Identity ${MBX} -User ${SP_ID} -AccessRights FullAccess`), withSp);
    assert.ok(withSp.includes(`Connect-ExchangeOnline -Organization ${TENANT}`), withSp);
    const without = ERROR_CATALOG.ServicePrincipalNotRegistered.fix({ ...full(), servicePrincipalObjectId: undefined });
    assert.ok(without.includes(`-ObjectId (az ad sp show --id ${APP_ID} --query id -o tsv)`), without);
    assert.match(without, /object id shown under App registrations is the application object's, not the service principal's/);
  });

  it('splits AuthenticationFailed by protocol: SMTP lists SMTP AUTH and SendAsApp, never the IMAP/POP switches', () => {
    const smtp = ERROR_CATALOG.AuthenticationFailed.fix(full({ protocol: 'smtp' }));
    assert.ok(smtp.includes(`Set-CASMailbox -Identity ${MBX} -SmtpClientAuthenticationDisabled $false`), smtp);
    assert.match(smtp, /SMTP\.SendAsApp/);
    assert.doesNotMatch(smtp, /ImapEnabled|PopEnabled/);
    const pop = ERROR_CATALOG.AuthenticationFailed.fix(full({ protocol: 'pop3' }));
    assert.ok(pop.includes(`Set-CASMailbox -Identity ${MBX} -PopEnabled $true`), pop);
    assert.doesNotMatch(pop, /ImapEnabled|SmtpClientAuthentication/);
    // Each of the four causes the catch-all used to share has its own code and text.
    const texts = (['ServicePrincipalNotRegistered', 'ProtocolDisabled', 'WrongTenant', 'TokenExpired'] as PostroomErrorCode[]).map((c) =>
      ERROR_CATALOG[c].fix(full({ protocol: 'pop3' })),
    );
    assert.equal(new Set(texts).size, 4);
  });

  it('SendAsDenied says which From was used and which mailbox authenticated, and does not claim they differ when they do not', () => {
    const differs = ERROR_CATALOG.SendAsDenied.fix(full({ protocol: 'smtp' }));
    assert.ok(differs.includes(`From alerts@contoso.com while the app authenticated as ${MBX}`), differs);
    assert.ok(differs.includes(`Add-RecipientPermission -Identity alerts@contoso.com -Trustee ${MBX} -AccessRights SendAs`), differs);
    const same = ERROR_CATALOG.SendAsDenied.fix(full({ protocol: 'smtp', from: MBX.toUpperCase() }));
    assert.match(same, /the same mailbox the app authenticated as/);
    assert.doesNotMatch(same, /Add-RecipientPermission/);
    assert.doesNotMatch(ERROR_CATALOG.SendAsDenied.summary, /differs/);
  });

  it('withContext re-renders message and fix for a caller that learns the mailbox and app later; err.fix stays a string', () => {
    const bare = new PostroomError('MailboxNotConnected', 'BAD User is authenticated but not connected.', { subject: MBX, serverResponseCode: 'BAD' });
    assert.match(bare.fix, /<mailbox>/);
    const filled = withContext(bare, fixContextOf(appOf(), { mailbox: MBX, protocol: 'imap' }));
    assert.equal(typeof filled.fix, 'string');
    assert.equal(filled.code, 'MailboxNotConnected');
    assert.equal(filled.serverResponseCode, 'BAD');
    assert.doesNotMatch(filled.message, PLACEHOLDER);
    assert.ok(filled.message.includes(`Add-MailboxPermission -Identity ${MBX} -User (az ad sp show --id ${APP_ID} --query id -o tsv)`), filled.message);
    assert.match(filled.stack!, /^PostroomError: the app authenticated/);
    const plain = new Error('x');
    assert.equal(withContext(plain, {}), plain);
  });

  it('ConnectionLost: a connection dropped after login is not "could not be reached"', () => {
    const failed = new PostroomError('ConnectionFailed', 'ECONNRESET: socket hang up', {
      subject: MBX,
      context: { mailbox: MBX, protocol: 'imap', endpoints: { imap: 'outlook.office365.com:993' } },
    });
    assert.equal(droppedAfterLogin(failed, { established: false }), failed);
    const lost = droppedAfterLogin(failed, { established: true, during: 'FETCH' });
    assert.equal(lost.code, 'ConnectionLost');
    assert.equal(lost.retryable, true);
    assert.match(lost.message, /the session was open, then the connection dropped during FETCH: ECONNRESET/);
    assert.doesNotMatch(lost.fix, /could not be reached/);
    assert.match(lost.fix, /DNS and firewall are fine/);
    assert.match(lost.fix, /outlook\.office365\.com:993/);
  });
});

describe('checkAppToken: each mismatch its own code', () => {
  const app = appOf();
  const check = (token: string, o: { protocol?: 'imap' | 'pop3' | 'smtp'; expiresOn?: Date; app?: AppConfig } = {}) =>
    checkAppToken(token, { protocol: o.protocol ?? 'imap', app: o.app ?? app, mailbox: MBX, now: new Date(NOW * 1000), expiresOn: o.expiresOn });
  const code = (token: string, o?: Parameters<typeof check>[1]) => {
    try {
      check(token, o);
      return 'ok';
    } catch (e) {
      assert.ok(e instanceof PostroomError);
      assert.doesNotMatch(e.message, /eyJ/, 'no token in the message');
      return e.code;
    }
  };

  it('passes a good token and lets opaque tokens through', () => {
    assert.equal(check(good()).problems.length, 0);
    assert.equal(check('opaque-test-token').checked, false);
  });

  it('Graph audience (URL or app id) is WrongAudience, with "use the Exchange scope" as the fix', () => {
    assert.equal(code(good({ aud: 'https://graph.microsoft.com', roles: ['Mail.Read'] })), 'WrongAudience');
    assert.equal(code(good({ aud: '00000003-0000-0000-c000-000000000000' })), 'WrongAudience');
    try {
      check(good({ aud: 'https://graph.microsoft.com', roles: ['Mail.Read'] }));
    } catch (e) {
      const err = e as PostroomError;
      assert.match(err.message, /Microsoft Graph \(aud https:\/\/graph\.microsoft\.com\)/);
      assert.ok(err.fix.includes('https://outlook.office365.com/.default'), err.fix);
      assert.ok(err.fix.includes(`az ad app permission add --id ${APP_ID}`), err.fix);
    }
    // Every Exchange audience form is accepted.
    for (const aud of ['https://outlook.office.com', 'https://ps.outlook.com', '00000002-0000-0ff1-ce00-000000000000']) assert.equal(code(good({ aud })), 'ok', aud);
  });

  it('wrong tid is WrongTenant naming both tenants; a tenant configured as a domain is skipped with a note', () => {
    const other = '11111111-2222-4333-8444-555555555555';
    assert.equal(code(good({ tid: other })), 'WrongTenant');
    try {
      check(good({ tid: other }));
    } catch (e) {
      assert.ok((e as PostroomError).message.includes(`issued by tenant ${other}, the settings name tenant ${TENANT}`));
      assert.ok((e as PostroomError).fix.includes(`adminconsent?client_id=${APP_ID}`));
    }
    const byDomain = check(good({ tid: other }), { app: appOf({ tenantId: 'contoso.com' }) });
    assert.match(byDomain.notes.join(' '), /tenant "contoso\.com" is configured as a domain: the token's tid \(11111111-/);
  });

  it('expiry and clock: expired is TokenExpired; issued in the future or disagreeing with expires_in is ClockSkew', () => {
    assert.equal(code(good({ exp: NOW - 120 })), 'TokenExpired');
    assert.equal(code(good({ iat: NOW + 1800, nbf: NOW + 1800, exp: NOW + 5400 })), 'ClockSkew');
    // Just received (msal: expires in 60 min by this clock) yet already expired by its exp: this clock is ahead.
    const skew = inspectAppToken(good({ exp: NOW - 600 }), { protocol: 'imap', app, now: new Date(NOW * 1000), expiresOn: new Date((NOW + 3600) * 1000) });
    assert.equal(skew.problems[0].code, 'ClockSkew');
    assert.match(skew.problems[0].detail, /this host's clock is 70 min ahead/);
    // Within the 5-minute tolerance nothing is said.
    assert.equal(code(good({ iat: NOW + 100, nbf: NOW + 100 })), 'ok');
  });

  it('a delegated token is NotAppToken; a missing role is MissingRole with that role and the app id', () => {
    assert.equal(code(good({ idtyp: 'user', scp: 'IMAP.AccessAsUser.All' })), 'NotAppToken');
    assert.equal(code(good({ idtyp: undefined, scp: 'IMAP.AccessAsUser.All' })), 'NotAppToken');
    assert.equal(code(good({ roles: ['IMAP.AccessAsApp'] }), { protocol: 'pop3' }), 'MissingRole');
    try {
      check(good({ roles: ['IMAP.AccessAsApp'] }), { protocol: 'smtp' });
    } catch (e) {
      const err = e as PostroomError;
      assert.match(err.message, /has roles \[IMAP\.AccessAsApp\] but needs SMTP\.SendAsApp/);
      assert.ok(err.fix.includes(`--api-permissions 7146a1f0-8703-45b3-9eae-527a64c00995=Role`), err.fix);
      assert.ok(err.fix.includes(`az ad app permission admin-consent --id ${APP_ID}`), err.fix);
    }
  });

  it("the transports' token getter runs every check, with the mailbox and app filled into the fix", async () => {
    const now = Math.floor(Date.now() / 1000);
    const fresh = (over: Record<string, unknown> = {}) => good({ iat: now - 10, nbf: now - 10, exp: now + 3600, ...over });
    const getter = (token: string) =>
      protocolTokenGetter(async () => ({ token, expiresOn: new Date((now + 3600) * 1000) }), { protocol: 'pop3', app, mailbox: MBX, subject: `mailbox ${MBX}` });
    await assert.rejects(getter(fresh({ roles: [] }))(), (e: PostroomError) => e.code === 'MissingRole' && /POP\.AccessAsApp/.test(e.fix));
    await assert.rejects(
      getter(fresh({ tid: '0b0b0b0b-0000-4000-8000-000000000bad' }))(),
      (e: PostroomError) => e.code === 'WrongTenant' && e.fix.includes(APP_ID) && e.message.includes(MBX),
    );
    assert.equal((await getter(fresh())()).expiresOn.getTime(), (now + 3600) * 1000);
  });

  it('lists every problem, most telling first', () => {
    const r = inspectAppToken(good({ aud: 'https://graph.microsoft.com', tid: 'x', exp: NOW - 10, roles: [] }), { protocol: 'imap', app, now: new Date(NOW * 1000) });
    assert.deepEqual(
      r.problems.map((p) => p.code),
      ['WrongAudience', 'WrongTenant', 'TokenExpired', 'MissingRole'],
    );
  });
});

describe('settings warnings', () => {
  it('warns at load for a Graph resource, a common/organizations tenant and an app with no mailbox', () => {
    const w1 = loadConfig(env({ resource: 'https://graph.microsoft.com' })).warnings;
    assert.ok(
      w1.some((w) => /resource https:\/\/graph\.microsoft\.com is Microsoft Graph/.test(w) && w.includes('https://outlook.office365.com/.default')),
      w1.join('\n'),
    );
    const w2 = loadConfig(env({ tenantId: 'organizations' })).warnings;
    assert.ok(
      w2.some((w) => /tenantId "organizations" names no tenant/.test(w)),
      w2.join('\n'),
    );
    const w3 = loadConfig(env({}, [])).warnings;
    assert.ok(
      w3.some((w) => /no mailbox in POSTROOM_MAILBOXES uses this app/.test(w)),
      w3.join('\n'),
    );
    const ok = loadConfig(env({ cloud: 'usgov' })).warnings;
    assert.deepEqual(
      ok.filter((w) => !/plain secret/.test(w)),
      [],
    );
  });
});

describe('narrowAuthRefusal (injected probes)', () => {
  const app = appOf();
  const probes = (m: Partial<Record<'imap' | 'pop3' | 'smtp', ProbeOutcome>>): AuthProbes => Object.fromEntries(Object.entries(m).map(([k, v]) => [k, async () => v]));
  const narrow = (refused: 'imap' | 'pop3' | 'smtp', m: Partial<Record<'imap' | 'pop3' | 'smtp', ProbeOutcome>>, token = good()) =>
    narrowAuthRefusal({ refused, token, app, mailbox: MBX, probe: probes(m), now: new Date(NOW * 1000) });

  it('IMAP opens the mailbox, POP refuses: POP disabled for that mailbox (likely)', async () => {
    const d = await narrow('pop3', { imap: 'ok', pop3: 'refused', smtp: 'ok' });
    assert.equal(d.code, 'ProtocolDisabled');
    assert.equal(d.confidence, 'likely');
    assert.ok(d.fix.startsWith(`Set-CASMailbox -Identity ${MBX} -PopEnabled $true`), d.fix);
    assert.deepEqual(d.evidence, ['imap: ok', 'pop3: refused', 'smtp: ok']);
  });

  it('every protocol refuses: service principal not registered (likely); one protocol only: possible', async () => {
    const d = await narrow('imap', { imap: 'refused', pop3: 'refused', smtp: 'refused' });
    assert.equal(d.code, 'ServicePrincipalNotRegistered');
    assert.equal(d.confidence, 'likely');
    assert.ok(d.fix.includes(`New-ServicePrincipal -AppId ${APP_ID}`));
    const one = await narrow('imap', { imap: 'refused' });
    assert.equal(one.confidence, 'possible');
  });

  it('not-connected is certain (no FullAccess); a token problem is certain and needs no probe', async () => {
    assert.equal((await narrow('pop3', { imap: 'not-connected', pop3: 'refused' })).code, 'MailboxNotConnected');
    let probed = false;
    const d = await narrowAuthRefusal({
      refused: 'imap',
      token: good({ exp: NOW - 60 }),
      app,
      mailbox: MBX,
      now: new Date(NOW * 1000),
      probe: { imap: async () => ((probed = true), 'refused') },
    });
    assert.equal(d.code, 'TokenExpired');
    assert.equal(d.confidence, 'certain');
    assert.equal(probed, false);
  });

  it('protocols the token has no role for are not probed; nothing to compare is only possible', async () => {
    const d = await narrow('imap', { imap: 'refused', pop3: 'ok', smtp: 'error' }, good({ roles: ['IMAP.AccessAsApp'] }));
    assert.equal(d.code, 'ServicePrincipalNotRegistered');
    assert.equal(d.confidence, 'possible');
    assert.ok(d.evidence.includes('pop3: not probed (token lacks POP.AccessAsApp)'), d.evidence.join('|'));
    const e = await narrow('imap', { imap: 'refused', pop3: 'error' });
    assert.equal(e.code, 'AuthenticationFailed');
    assert.equal(e.confidence, 'possible');
    const now = await narrow('imap', { imap: 'ok', pop3: 'ok' });
    assert.equal(now.code, 'AuthenticationFailed');
    assert.match(now.cause, /accepts the same token now/);
  });
});
