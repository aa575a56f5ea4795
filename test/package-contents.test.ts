/**
 * What `func azure functionapp publish` would upload, computed with Core
 * Tools' own rules (FileSystemHelpers.GetLocalFiles + GitIgnoreParser, a port
 * of gitignore-parser): from the folder `npm run package` stages, it must hold
 * only the build output of functions/ and shared/, production dependencies,
 * host.json and package.json — and that is enough to load every function.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';

const root = join(import.meta.dirname, '..', '..');

/** Core Tools' GitIgnoreParser: each pattern is a regex anchored at the path's start. */
function coreToolsIgnore(content: string): { accepts(path: string): boolean } {
  const positive: string[] = [];
  const negative: string[] = [];
  for (let line of content.split('\n').map((l) => l.trim())) {
    if (!line || line.startsWith('#')) continue;
    const neg = line.startsWith('!');
    if (neg) line = line.slice(1);
    if (line.startsWith('/')) line = line.slice(1);
    (neg ? negative : positive).push(line);
  }
  const prepare = (p: string) =>
    p
      .replace(/[-[\]/{}()+?.\\^$|]/g, '\\$&')
      .replaceAll('**', '(.+)')
      .replaceAll('*', '([^\\/]+)');
  const compile = (list: string[]) => (list.length ? new RegExp(`^((${list.sort().map(prepare).join(')|(')}))\\b`) : /$^/);
  const pos = compile(positive);
  const neg = compile(negative);
  return { accepts: (path) => neg.test(path) || !pos.test(path) };
}

/** FileSystemHelpers.GetLocalFiles: skips .git/.vscode folders and four file names at any depth, then .funcignore. */
function publishedFiles(dir: string): { path: string; size: number }[] {
  const funcignore = (() => {
    try {
      return coreToolsIgnore(readFileSync(join(dir, '.funcignore'), 'utf8'));
    } catch {
      return { accepts: () => true };
    }
  })();
  const skipDirs = ['.git', '.vscode'];
  const skipFiles = ['.funcignore', '.gitignore', 'local.settings.json', 'project.lock.json'];
  const out: { path: string; size: number }[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const full = join(d, e.name);
      if (e.isDirectory()) {
        if (!skipDirs.includes(e.name.toLowerCase())) walk(full);
      } else if (!skipFiles.includes(e.name.toLowerCase())) {
        const path = relative(dir, full).split('\\').join('/');
        if (funcignore.accepts(path)) out.push({ path, size: statSync(full).size });
      }
    }
  };
  walk(dir);
  return out;
}

/** `node_modules/a/node_modules/@s/b/x.js` → `node_modules/a/node_modules/@s/b` */
function packageDirOf(path: string): string {
  const parts = path.split('/');
  let end = 0;
  for (let i = 0; i < parts.length - 1; i++) {
    if (parts[i] === 'node_modules') {
      end = parts[i + 1].startsWith('@') ? i + 3 : i + 2;
      i = end - 1;
    }
  }
  return parts.slice(0, end).join('/');
}

test('Core Tools rules as ported: anchored patterns, ** into folders, negation, the fixed skips', () => {
  const ig = coreToolsIgnore('# c\n/test\n*.ts\n**/*.map\nnode_modules/.bin\n!keep.ts\n');
  assert.equal(ig.accepts('test/config.test.ts'), false);
  assert.equal(ig.accepts('dist/test/x.js'), true, 'a plain name matches from the start only');
  assert.equal(ig.accepts('shared/storage.ts'), true, '*.ts does not cross a slash');
  assert.equal(ig.accepts('storage.ts'), false);
  assert.equal(ig.accepts('keep.ts'), true);
  assert.equal(ig.accepts('dist/shared/storage.js.map'), false);
  assert.equal(ig.accepts('node_modules/.bin/tsc'), false);
  assert.equal(ig.accepts('node_modules/.binary/x'), true);
});

test('the repository .funcignore keeps sources, tests, sandbox state and dev-only output out of a publish from the root', () => {
  const ig = coreToolsIgnore(readFileSync(join(root, '.funcignore'), 'utf8'));
  for (const p of [
    '.sandbox/ca/ca.key',
    '.sandbox/smtp-captured/1.eml',
    'test/config.test.ts',
    'bench/run.ts',
    'sandbox/index.ts',
    'scripts/package.mjs',
    'functions/pollMailbox.ts',
    'shared/storage.ts',
    'dist/test/config.test.js',
    'dist/sandbox/index.js',
    'dist/bench/run.js',
    'dist/shared/storage.js.map',
    'infra/azuredeploy.json',
    'docs/deploy.md',
    'README.md',
    'tsconfig.json',
    'package-lock.json',
    '.ci/run',
    '.deploy/host.json',
    'node_modules/.bin/tsc',
    'node_modules/@azure/identity/dist/index.d.ts',
  ]) {
    assert.equal(ig.accepts(p), false, `${p} would be uploaded`);
  }
  for (const p of [
    'host.json',
    'package.json',
    'dist/functions/pollMailbox.js',
    'dist/shared/config/storage.js',
    'node_modules/@azure/identity/package.json',
    'node_modules/imapflow/lib/imap-flow.js',
  ]) {
    assert.equal(ig.accepts(p), true, `${p} must be uploaded`);
  }
});

test('npm run package stages only build output, host.json, package.json and production dependencies — enough to load every function', (t) => {
  const out = join(mkdtempSync(join(tmpdir(), 'postroom-package-')), 'deploy');
  try {
    const r = spawnSync(process.execPath, [join(root, 'scripts', 'package.mjs'), '--no-build', '--out', out], { cwd: root, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const files = publishedFiles(out);
    const paths = files.map((f) => f.path);
    const lock = JSON.parse(readFileSync(join(root, 'package-lock.json'), 'utf8')) as { packages: Record<string, { dev?: boolean }> };
    const devPackages = new Set(
      Object.entries(lock.packages)
        .filter(([p, m]) => p && m.dev)
        .map(([p]) => p),
    );
    // Production packages as npm itself resolves them (independent of the lockfile walk in the script).
    const ls = spawnSync('npm', ['ls', '--omit=dev', '--all', '--parseable'], { cwd: root, encoding: 'utf8' });
    const production = new Set(
      ls.stdout
        .split('\n')
        .filter(Boolean)
        .map((p) => relative(root, p))
        .filter(Boolean),
    );
    assert.ok(production.has('node_modules/@azure/functions') && production.size > 20, 'npm ls lists the production tree');

    const shipped = new Set<string>();
    for (const p of paths) {
      if (p.startsWith('node_modules/')) {
        const pkg = packageDirOf(p);
        assert.ok(!devPackages.has(pkg), `dev dependency ${pkg} shipped`);
        shipped.add(pkg);
        assert.doesNotMatch(p, /\.(d\.[cm]?ts|[cm]?ts|map)$/, p);
      } else {
        assert.match(p, /^(host\.json|package\.json|dist\/(functions|shared)\/.+\.js)$/, `${p} must not be uploaded`);
        if (p.startsWith('dist/')) assert.ok(existsSync(join(root, p.slice('dist/'.length).replace(/\.js$/, '.ts'))), `${p}: built from a source that exists`);
      }
    }
    assert.deepEqual([...shipped].sort(), [...production].sort(), 'exactly the production dependency tree');
    for (const f of readdirSync(join(root, 'functions')).filter((f) => f.endsWith('.ts'))) assert.ok(paths.includes(`dist/functions/${f.replace(/\.ts$/, '.js')}`), f);
    const pkg = JSON.parse(readFileSync(join(out, 'package.json'), 'utf8'));
    assert.equal(pkg.devDependencies, undefined);
    assert.equal(pkg.scripts, undefined);
    assert.equal(pkg.main, 'dist/functions/*.js');
    assert.equal(pkg.engines.node, '>=20.11 <25');

    // The staged folder alone loads every function and every lazily imported SDK.
    const load = `for (const f of ${JSON.stringify(readdirSync(join(out, 'dist', 'functions')).filter((f) => f.endsWith('.js')))}) await import('./dist/functions/' + f);
for (const m of ['@azure/identity', '@azure/keyvault-secrets', '@azure/storage-blob', '@azure/storage-queue', '@azure/data-tables', '@azure/msal-node', 'imapflow', 'mailparser', 'nodemailer']) await import(m);
console.log('loaded');`;
    const run = spawnSync(process.execPath, ['--input-type=module', '-e', load], { cwd: out, encoding: 'utf8', env: { PATH: process.env.PATH ?? '' } });
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /loaded/);

    const bytes = files.reduce((n, f) => n + f.size, 0);
    t.diagnostic(`upload: ${files.length} files, ${(bytes / 1048576).toFixed(1)} MiB (${shipped.size} production packages)`);
    // ~32 MiB of SDKs plus ~31 MiB for the OpenTelemetry distro (@azure/monitor-opentelemetry); Core Tools once shipped 312 MB here.
    assert.ok(bytes < 80 * 1048576, `upload ${bytes} bytes`);
  } finally {
    rmSync(join(out, '..'), { recursive: true, force: true });
  }
});

test('npm run package leaves out build output whose source is gone, and refuses a build older than the sources', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'postroom-stale-'));
  try {
    // A copy of dist/ (the real one is in use by other suites) with what a deleted or renamed source leaves behind.
    const dist = join(tmp, 'dist');
    for (const d of ['functions', 'shared']) cpSync(join(root, 'dist', d), join(dist, d), { recursive: true });
    writeFileSync(join(dist, 'functions', 'oldTrigger.js'), "import { app } from '@azure/functions'; app.timer('oldTrigger', { schedule: '0 * * * * *', handler: () => {} });\n");
    mkdirSync(join(dist, 'shared', 'gone'), { recursive: true });
    writeFileSync(join(dist, 'shared', 'gone', 'old.js'), 'export {};\n');
    const out = join(tmp, 'deploy');
    const r = spawnSync(process.execPath, [join(root, 'scripts', 'package.mjs'), '--no-build', '--skip-dependencies', '--dist', dist, '--out', out], {
      cwd: root,
      encoding: 'utf8',
    });
    assert.equal(r.status, 0, r.stderr);
    // A developer's dist/ may hold more stale output of its own; these two must be among what is left out.
    assert.match(r.stdout, /left out \d+ stale file\(s\).*functions\/oldTrigger\.js.*shared\/gone\/old\.js/);
    const paths = publishedFiles(out).map((f) => f.path);
    assert.ok(!paths.includes('dist/functions/oldTrigger.js') && !paths.some((p) => p.startsWith('dist/shared/gone/')), 'stale output staged');
    assert.ok(paths.includes('dist/functions/pollMailbox.js') && paths.includes('dist/shared/runtime.js'));
    // A source whose output is missing: the build is behind the sources.
    rmSync(join(dist, 'shared', 'runtime.js'));
    const behind = spawnSync(process.execPath, [join(root, 'scripts', 'package.mjs'), '--no-build', '--skip-dependencies', '--dist', dist, '--out', out], {
      cwd: root,
      encoding: 'utf8',
    });
    assert.equal(behind.status, 1);
    assert.match(behind.stderr, /behind the sources, \S*dist\/shared\/runtime\.js missing: run npm run build first/);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});
