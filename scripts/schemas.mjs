// Writes docs/schema/*.schema.json from the zod schemas the code validates with
// (test/docs.test.ts fails when they drift).
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { root, build } from './setup.mjs';

build();
const { settingsJsonSchemas } = await import(join(root, 'dist', 'shared', 'config', 'index.js'));
const s = settingsJsonSchemas();
writeFileSync(join(root, 'docs', 'schema', 'apps.schema.json'), JSON.stringify(s.apps, null, 2) + '\n');
writeFileSync(join(root, 'docs', 'schema', 'mailboxes.schema.json'), JSON.stringify(s.mailboxes, null, 2) + '\n');
console.log('wrote docs/schema/apps.schema.json and docs/schema/mailboxes.schema.json');
