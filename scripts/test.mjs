// `npm test`: set-up, lint and format checks, then node's test runner over the compiled suites.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { root, setup } from './setup.mjs';

setup();
const dir = join(root, 'dist', 'test');
const only = process.argv.slice(2);
// A subset (`npm test -- imap`) is a developer's loop: the whole-tree checks run with the full suite.
const checks = only.length || process.env.POSTROOM_TEST_SKIP_LINT === '1' ? [] : lintChecks();
const files = readdirSync(dir)
  .filter((f) => f.endsWith('.test.js'))
  .filter((f) => !only.length || only.some((o) => f.includes(o)))
  .sort()
  .map((f) => join(dir, f));
const started = Date.now();
// Not on a terminal, node prints "# tests N / # pass N / # fail N" (what CI reads).
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=2', '--test-timeout=600000', ...files], { cwd: root, stdio: 'inherit' });
console.log(`[test] ${files.length} suite file(s) in ${((Date.now() - started) / 1000).toFixed(1)} s`);
const failedChecks = checks.filter((c) => !c.ok).map((c) => c.name);
if (failedChecks.length) console.log(`[test] ${failedChecks.join(' and ')} found problems (above): fix them (npx eslint --fix . / npx prettier --write .)`);
process.exit(r.status || (failedChecks.length ? 1 : 0));

/** ESLint (type-aware) and Prettier over the tree; both must be clean. */
function lintChecks() {
  const run = (name, args) => {
    const t = Date.now();
    const res = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit' });
    console.log(`[test] ${name}: ${res.status === 0 ? 'clean' : 'problems'} (${((Date.now() - t) / 1000).toFixed(1)} s)`);
    return { name, ok: res.status === 0 };
  };
  return [
    run('eslint', [join(root, 'node_modules', 'eslint', 'bin', 'eslint.js'), '--max-warnings=0', '.']),
    run('prettier', [join(root, 'node_modules', 'prettier', 'bin', 'prettier.cjs'), '--check', '--log-level=warn', '.']),
  ];
}
