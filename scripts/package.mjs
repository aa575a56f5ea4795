// `npm run package [-- --out <dir>]`: stages exactly what runs in Azure into
// .deploy/ (default): the build output of functions/ and shared/ (JavaScript
// only), host.json, a package.json without dev dependencies or scripts, the
// production dependencies (the lockfile's non-dev packages, copied from
// node_modules: what `npm ci --omit=dev` installs) and .funcignore. Then:
//   cd .deploy && func azure functionapp publish <app>
// Core Tools zips the folder it runs in; publishing the repository root would
// ship the dev dependencies (azurite, typescript, ...) too.
// Only the JavaScript a build of today's sources produces is staged: dist/ keeps
// the output of deleted or renamed sources (tsc never removes files), and a stale
// dist/functions/*.js would even register a function that no longer exists.
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { build, root } from './setup.mjs';

function option(name, def) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : def;
}

/** Source files under `dir` (relative paths), walked recursively. */
function listFiles(dir, rel = '') {
  return readdirSync(join(dir, rel), { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? listFiles(dir, join(rel, e.name)) : [join(rel, e.name)]));
}

/** What tsc emits for one source: `x.ts` → `x.js` (`.mts` → `.mjs`, `.cts` → `.cjs`); declarations emit nothing. */
function emittedJs(source) {
  if (/\.d\.[cm]?ts$/.test(source)) return undefined;
  const m = /\.([cm]?)ts$/.exec(source);
  return m ? source.slice(0, -m[0].length) + `.${m[1]}js` : undefined;
}

/**
 * Copies the compiled JavaScript of the sources in `srcDir` from `distDir`: a
 * file in dist/ without a source today is left out (and counted), a source
 * without its output fails (the build is older than the sources).
 */
function copyBuildOutput(srcDir, distDir, to) {
  const expected = new Set(listFiles(srcDir).map(emittedJs).filter(Boolean));
  const missing = [...expected].filter((f) => !existsSync(join(distDir, f))).map((f) => join(relative(root, distDir) || distDir, f));
  if (missing.length)
    throw new Error(`the build output is behind the sources, ${missing.slice(0, 3).join(', ')}${missing.length > 3 ? ', ...' : ''} missing: run npm run build first`);
  for (const f of expected) cpSync(join(distDir, f), join(to, f));
  return listFiles(distDir).filter((f) => f.endsWith('.js') && !expected.has(f));
}

const DEV_ONLY_FILE = /\.(d\.[cm]?ts|[cm]?ts|map)$/;

/** The lockfile's production packages (nested ones are entries of their own). */
function productionPackages(lock) {
  return Object.entries(lock.packages)
    .filter(([path, meta]) => path.startsWith('node_modules/') && !meta.dev && !meta.link)
    .map(([path]) => path);
}

function stage(out, dist, { dependencies = true } = {}) {
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  const stale = [];
  for (const dir of ['functions', 'shared']) {
    if (!existsSync(join(dist, dir))) throw new Error(`${relative(root, dist) || dist}/${dir} is missing: run npm run build first`);
    stale.push(...copyBuildOutput(join(root, dir), join(dist, dir), join(out, 'dist', dir)).map((f) => join(dir, f)));
  }
  if (stale.length)
    console.log(
      `[package] left out ${stale.length} stale file(s) in ${relative(root, dist) || dist}/ (no source any more): ${stale.slice(0, 5).join(', ')}${stale.length > 5 ? ', ...' : ''}`,
    );
  cpSync(join(root, 'host.json'), join(out, 'host.json'));
  cpSync(join(root, '.funcignore'), join(out, '.funcignore'));
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
  const { devDependencies: _dev, scripts: _scripts, ...runtime } = pkg;
  writeFileSync(join(out, 'package.json'), JSON.stringify(runtime, null, 2) + '\n');
  if (!dependencies) return;
  const lock = JSON.parse(readFileSync(join(root, 'package-lock.json'), 'utf8'));
  let missing = 0;
  for (const path of productionPackages(lock)) {
    const src = join(root, path);
    if (!existsSync(src)) {
      missing++;
      continue;
    }
    // Nested node_modules are copied through their own lockfile entries; type
    // declarations, TypeScript sources and source maps are never loaded at run time.
    cpSync(src, join(out, path), { recursive: true, filter: (s) => !relative(src, s).split('/').includes('node_modules') && !DEV_ONLY_FILE.test(s) });
  }
  if (missing) throw new Error(`${missing} production package(s) are not installed: run npm ci first`);
}

function measure(dir) {
  let files = 0;
  let bytes = 0;
  const walk = (d) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else {
        files++;
        bytes += statSync(p).size;
      }
    }
  };
  walk(dir);
  return { files, bytes };
}

const out = resolve(root, option('--out', '.deploy'));
// --dist: where the build output is (default dist/; tests stage from a copy).
const dist = resolve(root, option('--dist', 'dist'));
if (!process.argv.includes('--no-build')) build();
try {
  // --skip-dependencies: the build output only (tests of the staging rules).
  stage(out, dist, { dependencies: !process.argv.includes('--skip-dependencies') });
} catch (e) {
  console.error(`[package] ${e.message}`);
  process.exit(1);
}
const { files, bytes } = measure(out);
console.log(
  `[package] ${relative(root, out) || out}: ${files} files, ${(bytes / 1048576).toFixed(1)} MiB. Publish: cd ${relative(process.cwd(), out) || '.'} && func azure functionapp publish <function app name>`,
);
