// `npm run package [-- --out <dir>]`: stages exactly what runs in Azure into
// .deploy/ (default): the build output of functions/ and shared/ (JavaScript
// only), host.json, a package.json without dev dependencies or scripts, the
// production dependencies (the lockfile's non-dev packages, copied from
// node_modules: what `npm ci --omit=dev` installs) and .funcignore. Then:
//   cd .deploy && func azure functionapp publish <app>
// Core Tools zips the folder it runs in; publishing the repository root would
// ship the dev dependencies (azurite, typescript, ...) too.
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { build, root } from './setup.mjs';

function option(name, def) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : def;
}

/** Copies only compiled JavaScript (no source maps, no declarations). */
function copyJs(from, to) {
  cpSync(from, to, { recursive: true, filter: (src) => statSync(src).isDirectory() || src.endsWith('.js') });
}

const DEV_ONLY_FILE = /\.(d\.[cm]?ts|[cm]?ts|map)$/;

/** The lockfile's production packages (nested ones are entries of their own). */
function productionPackages(lock) {
  return Object.entries(lock.packages)
    .filter(([path, meta]) => path.startsWith('node_modules/') && !meta.dev && !meta.link)
    .map(([path]) => path);
}

function stage(out) {
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  for (const dir of ['functions', 'shared']) {
    if (!existsSync(join(root, 'dist', dir))) throw new Error(`dist/${dir} is missing: run npm run build first`);
    copyJs(join(root, 'dist', dir), join(out, 'dist', dir));
  }
  cpSync(join(root, 'host.json'), join(out, 'host.json'));
  cpSync(join(root, '.funcignore'), join(out, '.funcignore'));
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
  const { devDependencies: _dev, scripts: _scripts, ...runtime } = pkg;
  writeFileSync(join(out, 'package.json'), JSON.stringify(runtime, null, 2) + '\n');
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
if (!process.argv.includes('--no-build')) build();
stage(out);
const { files, bytes } = measure(out);
console.log(`[package] ${relative(root, out) || out}: ${files} files, ${(bytes / 1048576).toFixed(1)} MiB. Publish: cd ${relative(process.cwd(), out) || '.'} && func azure functionapp publish <function app name>`);
