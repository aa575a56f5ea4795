import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadConfig } from '../shared/config/index.js';
import { PostroomError } from '../shared/errors.js';

const app = {
  name: 'main',
  tenantId: 'contoso.onmicrosoft.com',
  clientId: '11111111-2222-3333-4444-555555555555',
  secret: { vaultUrl: 'https://v.vault.azure.net', name: 'postroom-secret' },
};
const env = (mailboxes: unknown[], apps: unknown[] = [app], extra: Record<string, string> = {}) => ({
  POSTROOM_STORAGE: 'UseDevelopmentStorage=true',
  POSTROOM_APPS: JSON.stringify(apps),
  POSTROOM_MAILBOXES: JSON.stringify(mailboxes),
  ...extra,
});

/** The problems of a ConfigInvalid, one per line. */
function problems(e: Record<string, string>): string[] {
  try {
    loadConfig(e);
  } catch (err) {
    assert.ok(err instanceof PostroomError && err.code === 'ConfigInvalid', String(err));
    return err.message
      .split('\n')
      .filter((l) => l.startsWith('- '))
      .map((l) => l.slice(2));
  }
  assert.fail('the settings were accepted');
}

test('every problem at once: an entry that fails the schema does not hide the cross-entry checks of the others', () => {
  const p = problems(
    env([
      { address: 'not-an-address' },
      { address: 'shared@contoso.com', folder: 'Archive' },
      { address: 'Shared@contoso.com', folder: 'archive' },
      { address: 'other@contoso.com', app: 'nope' },
    ]),
  );
  assert.ok(
    p.some((l) => l.startsWith('POSTROOM_MAILBOXES[0].address')),
    p.join('\n'),
  );
  assert.ok(
    p.some((l) => /POSTROOM_MAILBOXES\[2\]: imap:shared@contoso\.com\/archive is configured twice \(also POSTROOM_MAILBOXES\[1\]/.test(l)),
    p.join('\n'),
  );
  assert.ok(
    p.some((l) => /POSTROOM_MAILBOXES\[3\]\.app: no app named "nope"/.test(l)),
    p.join('\n'),
  );
  assert.equal(p.length, 3, p.join('\n'));
});

test('an app entry that fails the schema is reported, and the mailboxes of the other apps are still checked', () => {
  const p = problems(
    env(
      [
        { address: 'a@contoso.com', app: 'main', postAction: 'move: ' },
        { address: 'b@contoso.com', app: 'broken' },
      ],
      [app, { name: 'broken', tenantId: 'x' }],
    ),
  );
  assert.ok(
    p.some((l) => l.startsWith('POSTROOM_APPS[1]')),
    p.join('\n'),
  );
  assert.ok(
    p.some((l) => /POSTROOM_MAILBOXES\[0\]\.postAction: "move:" needs a folder name/.test(l)),
    p.join('\n'),
  );
});

test('INBOX in any spelling is one folder: one id, one idempotency scope; configured twice is refused', () => {
  const c = loadConfig(env([{ address: 'shared@contoso.com', folder: 'inbox' }]));
  assert.equal(c.mailboxes[0].folder, 'INBOX');
  assert.equal(c.mailboxes[0].id, 'imap:shared@contoso.com/INBOX');
  const p = problems(env([{ address: 'shared@contoso.com' }, { address: 'shared@contoso.com', folder: 'Inbox' }]));
  assert.ok(
    p.some((l) => /configured twice/.test(l)),
    p.join('\n'),
  );
});

test('a blank move: folder and POP3 "since" are refused with the reason', () => {
  const p = problems(
    env([
      { address: 'a@contoso.com', postAction: 'move:   ' },
      { address: 'b@contoso.com', protocol: 'pop3', since: '2025-01-01' },
    ]),
  );
  assert.ok(
    p.some((l) => /\[0\]\.postAction: "move:" needs a folder name/.test(l)),
    p.join('\n'),
  );
  assert.ok(
    p.some((l) => /\[1\]\.since: POP3 cannot select messages by date/.test(l)),
    p.join('\n'),
  );
});

test('the schedule is checked field by field (croner), not by shape', () => {
  assert.ok(
    problems(env([{ address: 'a@contoso.com' }], [app], { POSTROOM_SCHEDULE: '99 * * * * *' })).some((l) =>
      /POSTROOM_SCHEDULE: "99 \* \* \* \* \*" is not a valid NCRONTAB expression \(.*second/i.test(l),
    ),
  );
  assert.ok(problems(env([{ address: 'a@contoso.com' }], [app], { POSTROOM_SCHEDULE: '*/5 * * * *' })).some((l) => /six fields/.test(l)));
  assert.equal(loadConfig(env([{ address: 'a@contoso.com' }], [app], { POSTROOM_SCHEDULE: '0 */5 * * * *' })).schedule, '0 */5 * * * *');
});

test('the poll deadline is a setting with a range', () => {
  assert.equal(loadConfig(env([{ address: 'a@contoso.com' }])).poll.deadlineSeconds, 240);
  assert.ok(problems(env([{ address: 'a@contoso.com' }], [app], { POSTROOM_POLL_DEADLINE_SECONDS: '0' })).some((l) => /POSTROOM_POLL_DEADLINE_SECONDS/.test(l)));
});
