import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { settingsJsonSchemas, SETTINGS } from '../shared/config/index.js';
import { ERROR_CATALOG } from '../shared/errors.js';

const root = join(import.meta.dirname, '..', '..');
const read = (p: string) => readFileSync(join(root, p), 'utf8');

test('published JSON Schemas match the schemas the code validates with (npm run schemas)', () => {
  const s = settingsJsonSchemas();
  assert.deepEqual(JSON.parse(read('docs/schema/apps.schema.json')), JSON.parse(JSON.stringify(s.apps)));
  assert.deepEqual(JSON.parse(read('docs/schema/mailboxes.schema.json')), JSON.parse(JSON.stringify(s.mailboxes)));
});

test('every setting is documented in docs/settings.md and none is AZURE_-prefixed', () => {
  const doc = read('docs/settings.md');
  for (const name of SETTINGS) {
    assert.ok(name.startsWith('POSTROOM_'), name);
    assert.ok(doc.includes(`\`${name}\``), `${name} missing from docs/settings.md`);
  }
});

test('the sample settings hold only documented POSTROOM_ settings and no secret', () => {
  const values = JSON.parse(read('local.settings.sample.json')).Values as Record<string, string>;
  for (const k of Object.keys(values).filter((k) => k.startsWith('POSTROOM_'))) assert.ok((SETTINGS as readonly string[]).includes(k), k);
  assert.doesNotMatch(JSON.stringify(values), /secret"\s*:\s*\{\s*"value"/i);
});

test('every error code has an entry in docs/troubleshooting.md', () => {
  const doc = read('docs/troubleshooting.md');
  for (const code of Object.keys(ERROR_CATALOG)) assert.ok(doc.includes(`\`${code}\``), `${code} missing from docs/troubleshooting.md`);
});

test('the message schema doc example is a valid postroom.message.v1 under the queue limit', () => {
  const doc = read('docs/message-schema.md');
  const m = /```json\n([\s\S]*?)\n```/.exec(doc);
  assert.ok(m, 'an example block');
  const example = JSON.parse(m[1]);
  assert.equal(example.schema, 'postroom.message.v1');
  assert.match(example.idempotencyKey, /^[0-9a-f]{64}$/);
  assert.ok(Buffer.byteLength(Buffer.from(JSON.stringify(example)).toString('base64')) <= 65536);
});

test('README shows the two commands and .ci/run calls the test command', () => {
  const readme = read('README.md');
  assert.match(readme, /npm start/);
  assert.match(readme, /npm test/);
  assert.match(read('.ci/run'), /npm test/);
});
