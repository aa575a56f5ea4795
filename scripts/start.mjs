// `npm start`: set-up on a fresh clone, then the main job — scheduled polling
// into the queue — on the local sandbox (or your tenant, if configured).
import { copyFileSync, existsSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { root, setup } from './setup.mjs';

setup();
const settings = join(root, 'local.settings.json');
if (!existsSync(settings)) {
  copyFileSync(join(root, 'local.settings.sample.json'), settings);
  console.log('[start] created local.settings.json from local.settings.sample.json');
}
const child = spawn(process.execPath, [join(root, 'dist', 'sandbox', 'run-local.js'), ...process.argv.slice(2)], { cwd: root, stdio: 'inherit' });
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => child.kill(sig));
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 0 : 1)));
