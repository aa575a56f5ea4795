import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadConfig, settingsJsonSchemas } from '../shared/config/index.js';
import { PostroomError } from '../shared/errors.js';

const app = {
  name: 'main',
  tenantId: 'contoso.onmicrosoft.com',
  clientId: '11111111-2222-3333-4444-555555555555',
  secret: { vaultUrl: 'https://v.vault.azure.net', name: 'postroom-secret' },
};
const base = {
  POSTROOM_STORAGE: 'UseDevelopmentStorage=true',
  POSTROOM_APPS: JSON.stringify([app]),
  POSTROOM_MAILBOXES: JSON.stringify([{ address: 'shared@contoso.com' }]),
};

test('defaults: public cloud, IMAP on outlook.office365.com:993, INBOX, post-action none', () => {
  const c = loadConfig(base);
  assert.equal(c.mailboxes.length, 1);
  const m = c.mailboxes[0];
  assert.equal(m.host, 'outlook.office365.com');
  assert.equal(m.port, 993);
  assert.equal(m.folder, 'INBOX');
  assert.deepEqual(m.postAction, { kind: 'none' });
  assert.equal(m.app.scope, 'https://outlook.office365.com/.default');
  assert.equal(m.app.authority, 'https://login.microsoftonline.com/contoso.onmicrosoft.com');
  assert.equal(c.storage.outputQueue, 'postroom-messages');
  assert.ok(Object.isFrozen(c) && Object.isFrozen(c.mailboxes) && Object.isFrozen(m) && Object.isFrozen(m.app));
});

test('cloud presets: usgov and china endpoints and scopes; pop3 port 995', () => {
  const c = loadConfig({
    ...base,
    POSTROOM_APPS: JSON.stringify([
      { ...app, name: 'gov', cloud: 'usgov' },
      { ...app, name: 'cn', cloud: 'china' },
    ]),
    POSTROOM_MAILBOXES: JSON.stringify([
      { address: 'a@gov.us', app: 'gov', protocol: 'pop3' },
      { address: 'b@cn.cn', app: 'cn' },
    ]),
  });
  const [gov, cn] = c.mailboxes;
  assert.equal(gov.host, 'outlook.office365.us');
  assert.equal(gov.port, 995);
  assert.equal(gov.app.scope, 'https://outlook.office365.us/.default');
  assert.equal(gov.app.authorityHost, 'https://login.microsoftonline.us');
  assert.equal(cn.host, 'partner.outlook.cn');
  assert.equal(cn.app.scope, 'https://partner.outlook.cn/.default');
  assert.equal(cn.app.endpoints.smtp.host, 'smtp.partner.outlook.cn');
});

test('overrides for private stacks: authority host and host:port per app', () => {
  const c = loadConfig({
    ...base,
    POSTROOM_APPS: JSON.stringify([{ ...app, authorityHost: 'https://localhost:8443/', imapHost: '127.0.0.1:10993' }]),
  });
  assert.equal(c.mailboxes[0].app.authority, 'https://localhost:8443/contoso.onmicrosoft.com');
  assert.equal(c.mailboxes[0].host, '127.0.0.1');
  assert.equal(c.mailboxes[0].port, 10993);
});

test('every problem is reported at once, with its setting path', () => {
  const err = (() => {
    try {
      loadConfig({
        POSTROOM_SCHEDULE: '*/5 * * * *',
        POSTROOM_APPS: JSON.stringify([{ ...app, secret: { value: 'x' } }]),
        POSTROOM_MAILBOXES: JSON.stringify([
          { address: 'not-an-address' },
          { address: 'p@contoso.com', protocol: 'pop3', postAction: 'seen', folder: 'Archive' },
          { address: 'q@contoso.com', app: 'nope', postAction: 'explode' },
        ]),
        POSTROOM_BATCH_SIZE: '0',
      });
    } catch (e) {
      return e;
    }
    assert.fail('expected ConfigInvalid');
  })();
  assert.ok(err instanceof PostroomError);
  assert.equal(err.code, 'ConfigInvalid');
  for (const needle of ['POSTROOM_SCHEDULE', 'POSTROOM_STORAGE', 'POSTROOM_MAILBOXES[0].address', 'POSTROOM_MAILBOXES[2].postAction', 'POSTROOM_BATCH_SIZE']) {
    assert.match(err.message, new RegExp(needle.replace(/[[\].]/g, '\\$&')), needle);
  }
});

test('cross-field problems: plain secret outside the sandbox, unknown app, POP3 folder/post-action', () => {
  try {
    loadConfig({
      ...base,
      POSTROOM_APPS: JSON.stringify([{ ...app, secret: { value: 's3cr3t-value' } }]),
      POSTROOM_MAILBOXES: JSON.stringify([
        { address: 'p@contoso.com', protocol: 'pop3', postAction: 'seen', folder: 'Archive' },
        { address: 'q@contoso.com', app: 'nope' },
      ]),
    });
    assert.fail('expected ConfigInvalid');
  } catch (e) {
    const msg = (e as Error).message;
    assert.match(msg, /plain secret value is accepted only for the local sandbox/);
    assert.match(msg, /POP3 sees the Inbox only/);
    assert.match(msg, /POP3 supports only 'none' or 'delete'/);
    assert.match(msg, /no app named "nope"/);
    assert.doesNotMatch(msg, /s3cr3t-value/, 'the secret value is never echoed');
  }
});

test('plain secret accepted in sandbox mode, with a warning', () => {
  const c = loadConfig({ ...base, POSTROOM_SANDBOX: 'true', POSTROOM_APPS: JSON.stringify([{ ...app, secret: { value: 'x' } }]) });
  assert.equal(c.apps[0].secret?.kind, 'plain');
  assert.equal(c.sandbox, true);
});

test('post-action move parses its folder; moving into the polled folder is refused', () => {
  const c = loadConfig({ ...base, POSTROOM_MAILBOXES: JSON.stringify([{ address: 'a@contoso.com', postAction: 'move:Archive/Postroom' }]) });
  assert.deepEqual(c.mailboxes[0].postAction, { kind: 'move', folder: 'Archive/Postroom' });
  assert.throws(() => loadConfig({ ...base, POSTROOM_MAILBOXES: JSON.stringify([{ address: 'a@contoso.com', postAction: 'move:INBOX' }]) }), /would loop/);
});

test('the published JSON Schemas describe the mailbox list', () => {
  const { mailboxes, apps } = settingsJsonSchemas() as { mailboxes: { type: string; items: { properties: Record<string, unknown>; required: string[] } }; apps: { type: string } };
  assert.equal(mailboxes.type, 'array');
  assert.ok(mailboxes.items.properties.postAction);
  assert.deepEqual(mailboxes.items.required, ['address']);
  assert.equal(apps.type, 'array');
});
