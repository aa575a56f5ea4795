// `npm run bench [-- --quick] [-- --only=ingest,idle,memory,tokens,scale,coldstart] [-- --repeats=N]`:
// set-up (dependencies, Dovecot, build), then the benchmarks (bench/README.md).
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { root, setup } from './setup.mjs';

setup();
const r = spawnSync(process.execPath, [join(root, 'dist', 'bench', 'run.js'), ...process.argv.slice(2)], { cwd: root, stdio: 'inherit' });
process.exit(r.status ?? 1);
