// Set-up shared by `npm start`, `npm test` and `npm run bench` on a fresh clone
// (Debian, root): npm dependencies, Debian packages for the local stack, build.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = join(dirname(fileURLToPath(import.meta.url)), '..');

const APT_PACKAGES = ['dovecot-imapd', 'dovecot-pop3d', 'dovecot-auth-lua'];

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', ...opts });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (exit ${r.status})`);
}

function has(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

export function ensureNpmDependencies() {
  const lock = join(root, 'package-lock.json');
  const marker = join(root, 'node_modules', '.package-lock.json');
  if (existsSync(marker) && statSync(marker).mtimeMs >= statSync(lock).mtimeMs) return;
  console.log('[setup] installing npm dependencies (npm ci)…');
  run('npm', ['ci', '--no-audit', '--no-fund']);
}

export function ensureDebianPackages() {
  const missing = APT_PACKAGES.filter((p) => spawnSync('dpkg-query', ['-W', '-f=${Status}', p], { encoding: 'utf8' }).stdout?.includes('install ok installed') !== true);
  if (!missing.length && has('dovecot')) return;
  if (process.getuid?.() !== 0) {
    throw new Error(`the local stack needs Debian packages ${missing.join(' ')}; run as root or: sudo apt-get install -y ${missing.join(' ')}`);
  }
  console.log(`[setup] installing ${missing.join(' ')} (apt)…`);
  run('apt-get', ['update', '-qq']);
  run('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...missing], { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
}

export function build() {
  console.log('[setup] building (tsc)…');
  execFileSync(process.execPath, [join(root, 'node_modules', 'typescript-native', 'bin', 'tsc'), '-p', join(root, 'tsconfig.json')], { cwd: root, stdio: 'inherit' });
}

export function setup() {
  ensureNpmDependencies();
  ensureDebianPackages();
  build();
}

if (import.meta.url === `file://${process.argv[1]}`) setup();
