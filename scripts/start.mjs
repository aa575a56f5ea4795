// `npm start`: set-up on a fresh clone, then the main job — scheduled polling
// into the queue — on the local sandbox (or your tenant, if configured).
// Options after `npm start --`: --state-dir <dir> (or POSTROOM_SANDBOX_DIR; default .sandbox/),
// --port-base <n> (or POSTROOM_SANDBOX_PORT_BASE; default 10000), --sandbox-only.
import { copyFileSync, existsSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { root, setup } from './setup.mjs';

// The test suite has done the set-up already (and rebuilding under running suites would race them).
if (process.env.POSTROOM_START_SKIP_SETUP !== '1') setup();
const settings = join(root, 'local.settings.json');
if (!existsSync(settings)) {
  copyFileSync(join(root, 'local.settings.sample.json'), settings);
  console.log('[start] created local.settings.json from local.settings.sample.json');
}
const child = spawn(process.execPath, [join(root, 'dist', 'sandbox', 'run-local.js'), ...process.argv.slice(2)], {
  cwd: root,
  stdio: 'inherit',
  // The child stops itself if this process dies without passing a signal on (SIGKILL).
  env: { ...process.env, POSTROOM_STARTED_BY: String(process.pid) },
});
// A terminal signals the whole group (the child gets it too); `kill <pid>` or npm signal only us:
// pass it on either way (the child stops once, however often it is told), then wait for it.
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => child.kill(sig));
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
