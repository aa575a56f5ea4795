/**
 * The local loop behind `npm start`: a signal to the whole process group (a
 * terminal's Ctrl-C, a hang-up, SIGTERM) leaves no process and no open port
 * behind, an orphan of a crashed run is stopped and reported (not reused),
 * ports held by something else are refused clearly, and the host stand-in
 * honours host.json's queue settings.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { isPortOpen, isRunning } from '../sandbox/ports.js';
import { readHostQueueSettings, startLocalHost } from '../sandbox/host.js';
import { startStack, MAILBOXES, type Stack } from './support/stack.js';

const root = resolve(import.meta.dirname, '..', '..');
const OFFSETS = [0, 1, 2, 443, 587, 993, 995];

/** A port base whose seven sandbox ports are all free (below the kernel's ephemeral range, so no test picks them). */
async function freeBase(): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const base = 12_000 + 1_000 * Math.floor(Math.random() * 18);
    const open = await Promise.all(OFFSETS.map((o) => isPortOpen(base + o)));
    if (!open.some(Boolean)) return base;
  }
  throw new Error('no free port base found');
}

interface Loop {
  child: ChildProcess;
  output(): string;
  /** Resolves when a line matching `re` was printed; rejects when the loop exits first or after `ms`. */
  waitFor(re: RegExp, ms?: number): Promise<void>;
  exited: Promise<number | null>;
}

/** `npm start` (or `node scripts/start.mjs`) as the leader of its own process group, as a terminal runs it. */
function startLoop(stateDir: string, base: number, via: 'npm' | 'node'): Loop {
  const args = ['--state-dir', stateDir, '--port-base', String(base)];
  const [cmd, argv] = via === 'npm' ? ['npm', ['start', '--silent', '--', ...args]] : [process.execPath, ['scripts/start.mjs', ...args]];
  const child = spawn(cmd, argv, {
    cwd: root,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    // No tenant: the sandbox. The test runner did the set-up (a rebuild now would race other suites).
    env: { ...process.env, POSTROOM_APPS: '', POSTROOM_START_SKIP_SETUP: '1', POSTROOM_SCHEDULE: '0 0 0 1 1 *' },
  });
  let out = '';
  const waiters = new Set<() => void>();
  const onData = (b: Buffer) => {
    out += b.toString('utf8');
    for (const w of waiters) w();
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return {
    child,
    output: () => out,
    exited,
    waitFor(re, ms = 30_000) {
      return new Promise<void>((resolveWait, reject) => {
        const check = () => {
          if (!re.test(out)) return;
          done();
          resolveWait();
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`no ${re} within ${ms} ms; output:\n${out}`));
        }, ms);
        const done = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        void exited.then((code) => {
          if (!waiters.has(check)) return;
          done();
          reject(new Error(`exited (${code}) before ${re}; output:\n${out}`));
        });
        check();
      });
    },
  };
}

/** /proc/<pid>/stat fields after the command: [state, ppid, pgrp, …]. */
async function statOf(pid: number): Promise<string[] | undefined> {
  const s = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  return s?.replace(/^.*\) /, '').split(' ');
}

/**
 * The processes of a sandbox: every process naming the state dir in its
 * command line (Dovecot master, Azurite, run-local), the members of their
 * process groups (Dovecot's children), and the descendants of `leader`.
 */
async function sandboxProcesses(stateDir: string, leader?: number): Promise<Map<number, string>> {
  const all = new Map<number, { cmd: string; ppid: number; pgrp: number }>();
  for (const e of await readdir('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const st = await statOf(Number(e));
    const cmd = (await readFile(`/proc/${e}/cmdline`, 'utf8').catch(() => '')).split('\0').join(' ').trim();
    // Zombies are gone but for their exit status (all threads: a Node main thread exits before its pool).
    if (!st || !(await isRunning(Number(e)))) continue;
    all.set(Number(e), { cmd, ppid: Number(st[1]), pgrp: Number(st[2]) });
  }
  const found = new Map<number, string>();
  const groups = new Set<number>();
  for (const [pid, p] of all) {
    if (!p.cmd.includes(stateDir)) continue;
    found.set(pid, p.cmd);
    groups.add(p.pgrp);
  }
  for (const [pid, p] of all) if (groups.has(p.pgrp) && pid !== process.pid) found.set(pid, p.cmd);
  if (leader !== undefined) {
    let grew = true;
    const tree = new Set([leader]);
    while (grew) {
      grew = false;
      for (const [pid, p] of all) {
        if (tree.has(p.ppid) && !tree.has(pid)) {
          tree.add(pid);
          grew = true;
        }
      }
    }
    for (const pid of tree) if (all.has(pid)) found.set(pid, all.get(pid)!.cmd);
  }
  return found;
}

/** Waits until none of the sandbox's processes is left (or `ms` passed) and returns those left. */
async function leftAfter(stateDir: string, pids: number[], ms = 20_000): Promise<string[]> {
  const deadline = Date.now() + ms;
  for (;;) {
    const now = await sandboxProcesses(stateDir);
    const left: string[] = [...now].map(([p, c]) => `${p} ${c}`);
    for (const p of pids) if (!now.has(p) && (await isRunning(p))) left.push(`${p} (was part of the sandbox)`);
    if (!left.length || Date.now() > deadline) return left;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Ends what a failed test left (the group may be gone already). */
function killGroup(child: ChildProcess): void {
  try {
    process.kill(-child.pid!, 'SIGKILL');
  } catch {
    /* gone */
  }
}

async function openPorts(base: number): Promise<number[]> {
  const open = await Promise.all(OFFSETS.map(async (o) => ((await isPortOpen(base + o)) ? base + o : 0)));
  return open.filter(Boolean);
}

describe('the local loop (npm start)', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'postroom-loop-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('Ctrl-C (SIGINT to the whole group, npm as group leader) leaves no process and no open port; SIGHUP on the next run too', async () => {
    const stateDir = join(dir, 'state');
    const base = await freeBase();
    for (const [via, sig] of [
      ['npm', 'SIGINT'],
      ['node', 'SIGHUP'],
    ] as const) {
      const loop = startLoop(stateDir, base, via);
      try {
        // The first run until its first poll; the second (same state) once it is up, to keep the suite short.
        await loop.waitFor(via === 'npm' ? /\[poll\] / : /Ctrl-C to stop/);
        const pids = [...(await sandboxProcesses(stateDir, loop.child.pid))].map(([p]) => p);
        assert.ok(pids.length >= 5, `sandbox processes found: ${pids.length}`);
        const t0 = Date.now();
        process.kill(-loop.child.pid!, sig);
        const left = await leftAfter(stateDir, pids);
        assert.deepEqual(left, [], `${via} + ${sig}: processes left:\n${left.join('\n')}\noutput:\n${loop.output()}`);
        assert.deepEqual(await openPorts(base), [], `${via} + ${sig}: ports still open`);
        assert.match(loop.output(), new RegExp(`${sig} received: stopping`));
        // npm re-raises the signal on itself once its script ended; start.mjs exits 0 after a clean stop.
        if (via === 'node') assert.equal(await loop.exited, 0, `${via} + ${sig}: exit code`);
        assert.ok(Date.now() - t0 < 12_000, `stopped in ${Date.now() - t0} ms`);
      } finally {
        killGroup(loop.child);
      }
    }
  });

  it('an orphan of a crashed run (SIGKILL) is stopped and reported by the next start, not reused; SIGTERM then stops all', async () => {
    // The state of the test before (seeded already: faster).
    const stateDir = join(dir, 'state');
    const base = await freeBase();
    const first = startLoop(stateDir, base, 'node');
    await first.waitFor(/Ctrl-C to stop/);
    // A crash: the node processes die, the sandbox's own process groups stay.
    const masterPid = Number((await readFile(join(stateDir, 'dovecot', 'run', 'master.pid'), 'utf8')).trim());
    const azuritePid = Number((await readFile(join(stateDir, 'azurite', 'azurite.pid'), 'utf8')).trim());
    process.kill(-first.child.pid!, 'SIGKILL');
    await first.exited;
    await new Promise((r) => setTimeout(r, 300));
    assert.ok(await isRunning(masterPid), 'Dovecot outlived the crash (the case to handle)');
    assert.ok(await isRunning(azuritePid), 'Azurite outlived the crash (the case to handle)');

    const second = startLoop(stateDir, base, 'node');
    try {
      await second.waitFor(/\[poll\] /);
      assert.match(second.output(), new RegExp(`Dovecot left running by an earlier run \\(pid ${masterPid}`));
      assert.match(second.output(), new RegExp(`stopped what an earlier run left running: Dovecot \\(pid ${masterPid}, \\d+ process\\(es\\)\\), Azurite \\(pid ${azuritePid}\\)`));
      assert.equal(await isRunning(masterPid), false, 'the orphaned Dovecot is gone');
      assert.equal(await isRunning(azuritePid), false, 'the orphaned Azurite is gone');
      const pids = [...(await sandboxProcesses(stateDir, second.child.pid))].map(([p]) => p);
      process.kill(-second.child.pid!, 'SIGTERM');
      const left = await leftAfter(stateDir, pids);
      assert.deepEqual(left, [], `processes left:\n${left.join('\n')}`);
      assert.deepEqual(await openPorts(base), []);
    } finally {
      killGroup(second.child);
    }
  });

  it('refuses clearly when a port it needs is held by another process: names the port, the holder and the fix; starts nothing', async () => {
    const stateDir = join(dir, 'state-busy');
    const base = await freeBase();
    const holder: Server = createServer();
    await new Promise<void>((r) => holder.listen(base + 993, '127.0.0.1', r));
    try {
      const loop = startLoop(stateDir, base, 'node');
      const code = await loop.exited;
      assert.equal(code, 1, loop.output());
      const out = loop.output();
      assert.match(out, new RegExp(`port ${base + 993} \\(Dovecot IMAP\\) is held by pid ${process.pid}: .*node`));
      assert.match(out, new RegExp(`kill ${process.pid}`));
      assert.match(out, /POSTROOM_SANDBOX_PORT_BASE=/);
      assert.doesNotMatch(out, new RegExp(`port ${base + 995}`), 'only the busy port is named');
      assert.deepEqual(await leftAfter(stateDir, [], 2_000), []);
      assert.deepEqual(await openPorts(base), [base + 993], 'nothing else was started');
    } finally {
      await new Promise((r) => holder.close(r));
    }
  });
});

describe('the host stand-in honours host.json', () => {
  let stack: Stack;
  let dir: string;
  before(async () => {
    stack = await startStack();
    dir = await mkdtemp(join(tmpdir(), 'postroom-hostjson-'));
  });
  after(async () => {
    await stack?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("reads the project's host.json as the Functions host does", () => {
    assert.deepEqual(readHostQueueSettings(join(root, 'host.json')), {
      maxDequeueCount: 5,
      visibilityTimeoutSeconds: 30,
      batchSize: 4,
      newBatchThreshold: 2,
      messageEncoding: 'base64',
    });
    assert.deepEqual(readHostQueueSettings(join(dir, 'missing.json')), {
      maxDequeueCount: 5,
      visibilityTimeoutSeconds: 0,
      batchSize: 16,
      newBatchThreshold: 8,
      messageEncoding: 'base64',
    });
  });

  it('a failed try comes back after visibilityTimeout; after maxDequeueCount tries it is in <queue>-poison, logged with what to do; a non-base64 body is poisoned untried', async () => {
    const hostJson = join(dir, 'host.json');
    await writeFile(
      hostJson,
      JSON.stringify({
        version: '2.0',
        extensions: { queues: { maxDequeueCount: 2, visibilityTimeout: '00:00:02', batchSize: 1, newBatchThreshold: 0, messageEncoding: 'base64' } },
      }),
    );
    const rt = await stack.runtime([{ address: MAILBOXES.neg, protocol: 'imap' }], { env: { POSTROOM_JOBS_QUEUE: 'jobs-hostjson', POSTROOM_OUTPUT_QUEUE: 'out-hostjson' } });
    const events: Array<{ at: number; ok: boolean; poisoned: boolean; dequeueCount: number }> = [];
    const host = await startLocalHost({
      runtime: rt,
      logger: rt.log,
      schedule: '0 0 0 1 1 *',
      hostJson,
      pollIntervalMs: 100,
      onHandled: (e) => events.push({ at: Date.now(), ...e }),
    });
    try {
      const jobs = await rt.storage.queue('jobs-hostjson');
      await jobs.sendMessage(Buffer.from('{"not":"a job"}').toString('base64'));
      await jobs.sendMessage('{"plain":"json, not base64"}');
      for (let i = 0; i < 100 && events.filter((e) => e.poisoned).length < 2; i++) await new Promise((r) => setTimeout(r, 100));
    } finally {
      await host.stop();
    }
    const tries = events.filter((e) => e.dequeueCount >= 1 && !(e.poisoned && e.dequeueCount === 1));
    assert.equal(tries.length, 2, JSON.stringify(events));
    const gap = tries[1].at - tries[0].at;
    assert.ok(gap >= 1_900 && gap < 5_000, `second try ${gap} ms after the first (visibilityTimeout 2 s)`);
    assert.deepEqual(
      tries.map((e) => [e.dequeueCount, e.poisoned]),
      [
        [1, false],
        [2, true],
      ],
    );
    assert.equal(events.filter((e) => e.poisoned && e.dequeueCount === 1).length, 1, 'the plain-text body went to poison at once');
    const poison = await rt.storage.queue('jobs-hostjson-poison');
    const { peekedMessageItems } = await poison.peekMessages({ numberOfMessages: 10 });
    assert.equal(peekedMessageItems.length, 2);
    const lines = rt.log.lines.join('\n');
    assert.match(lines, /try 1 of 2 failed; it runs again in 2 s \(host\.json visibilityTimeout\)/);
    assert.match(
      lines,
      /gave up after 2 tries \(host\.json maxDequeueCount 2\); the message was moved to jobs-hostjson-poison\. Last error: .*It will not be retried\. .*`postroom poison list`.*`postroom poison replay`/,
    );
    assert.match(lines, /moved a message to jobs-hostjson-poison without running it: its body is not base64/);
    assert.doesNotMatch(lines, /will retry/);
  });
});
