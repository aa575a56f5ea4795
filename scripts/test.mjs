// `npm test`: set-up, then node's test runner over the compiled suites.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { root, setup } from './setup.mjs';

setup();
const dir = join(root, 'dist', 'test');
const only = process.argv.slice(2);
const files = readdirSync(dir)
  .filter((f) => f.endsWith('.test.js'))
  .filter((f) => !only.length || only.some((o) => f.includes(o)))
  .sort()
  .map((f) => join(dir, f));
const started = Date.now();
// Not on a terminal, node prints "# tests N / # pass N / # fail N" (what CI reads).
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=2', '--test-timeout=600000', ...files], { cwd: root, stdio: 'inherit' });
console.log(`[test] ${files.length} suite file(s) in ${((Date.now() - started) / 1000).toFixed(1)} s`);
process.exit(r.status ?? 1);
