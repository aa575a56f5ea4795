#!/usr/bin/env node
// The `postroom` command: a launcher for the compiled CLI (npm run build first).
import { main } from '../dist/shared/cli/main.js';

const code = await main(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, env: process.env, cwd: process.cwd() });
// Open sockets (storage, IMAP pools) must not keep a finished command alive.
process.exitCode = code;
await new Promise((r) => process.stdout.write('', r));
process.exit(code);
