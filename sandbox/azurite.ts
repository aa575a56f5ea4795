import { spawn, type ChildProcess } from 'node:child_process';
import { request } from 'node:http';
import { readFileSync } from 'node:fs';
import { mkdir, readFile, readlink, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';
import { assertPortsFree, freePort, isRunning, processCommand } from './ports.js';

/** Azurite's fixed development account (public, documented by Microsoft; not a secret). */
export const AZURITE_ACCOUNT = 'devstoreaccount1';
export const AZURITE_KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';

export interface AzuriteOptions {
  /** Where Azurite keeps its data (ignored with `inMemory`). */
  dir: string;
  /** Ports on 127.0.0.1; free ones are picked for those omitted. */
  blobPort?: number;
  queuePort?: number;
  tablePort?: number;
  inMemory?: boolean;
  /** How long to wait for all three services; default 30 s. */
  startTimeoutMs?: number;
  /**
   * Its own process group, so that a terminal's Ctrl-C reaches only the owner,
   * which stops the work using storage before storage. The owner must stop()
   * it (an exit of the owner's process still kills it; a SIGKILL leaves it to
   * the next start, which finds it by its pid file).
   */
  detached?: boolean;
  /** Told when an Azurite left running by an earlier run on `dir` was found and stopped. */
  onOrphanStopped?: (pid: number) => void;
}

export interface Azurite {
  /** An explicit http:// connection string (TableClient needs `allowInsecureConnection: true` with it). */
  connectionString: string;
  blobPort: number;
  queuePort: number;
  tablePort: number;
  /**
   * Stops and starts it again on the same ports. In memory that empties it:
   * benchmarks use it so that every run starts from the same empty store
   * (Azurite's blob metadata makes each write slower as a container fills).
   */
  restart(): Promise<void>;
  /** The process's CPU time so far (user + system, ms; Linux /proc), for benchmarks. */
  cpuMs(): number;
  stop(): Promise<void>;
}

const require = createRequire(import.meta.url);

function azuriteBin(): string {
  return require.resolve('azurite/dist/src/azurite.js');
}

/** Whether an Azurite service answers on the port (its `Server` header says so). */
function probe(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path: `/${AZURITE_ACCOUNT}?comp=list`, method: 'GET', timeout: 1_000, agent: false }, (res) => {
      res.resume();
      resolve(String(res.headers.server ?? '').startsWith('Azurite'));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
}

function waitForExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.off('exit', onExit);
      resolve(false);
    }, ms);
    const onExit = () => {
      clearTimeout(timer);
      resolve(true);
    };
    child.once('exit', onExit);
  });
}

async function kill(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  if (await waitForExit(child, 5_000)) return;
  child.kill('SIGKILL');
  await waitForExit(child, 5_000);
}

class EarlyExit extends Error {}

const PID_FILE = 'azurite.pid';

/**
 * Stops an Azurite left running by an earlier run on `dir` (its pid file
 * names a live Azurite whose working directory is `dir`: every instance is
 * started there). Returns its pid, or undefined when there was none.
 */
export async function stopOrphanAzurite(dir: string): Promise<number | undefined> {
  const base = resolve(dir);
  const pidFile = join(base, PID_FILE);
  const pid = Number((await readFile(pidFile, 'utf8').catch(() => '')).trim());
  if (!Number.isInteger(pid) || pid <= 1 || pid === process.pid) return undefined;
  const ours = (await processCommand(pid))?.includes('azurite') === true && (await readlink(`/proc/${pid}/cwd`).catch(() => '')) === base;
  if (!ours) {
    await rm(pidFile, { force: true });
    return undefined;
  }
  const alive = () => isRunning(pid);
  for (const sig of ['SIGTERM', 'SIGKILL'] as const) {
    try {
      process.kill(pid, sig);
    } catch {
      /* gone */
    }
    for (let i = 0; i < 100 && (await alive()); i++) await new Promise((r) => setTimeout(r, 30));
    if (!(await alive())) break;
  }
  if (await alive()) throw new Error(`could not stop the Azurite left running by an earlier run (pid ${pid}); stop it by hand: kill -9 ${pid}`);
  await rm(pidFile, { force: true });
  return pid;
}

async function startOnce(o: AzuriteOptions, ports: { blob: number; queue: number; table: number }): Promise<Omit<Azurite, 'restart'>> {
  const args = [
    azuriteBin(),
    '--silent',
    ...(o.inMemory ? ['--inMemoryPersistence'] : ['--location', o.dir]),
    '--blobHost',
    '127.0.0.1',
    '--blobPort',
    String(ports.blob),
    '--queueHost',
    '127.0.0.1',
    '--queuePort',
    String(ports.queue),
    '--tableHost',
    '127.0.0.1',
    '--tablePort',
    String(ports.table),
    // Without it Azurite keeps resolving telemetry hosts offline, can spin at 100% CPU and ignore SIGTERM.
    '--disableTelemetry',
    // The SDKs send API versions newer than Azurite 3.35 knows (400 InvalidHeaderValue otherwise).
    '--skipApiVersionCheck',
  ];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: o.dir, detached: o.detached === true });
  // Lets the next start find it if this process dies without stop() (SIGKILL, crash).
  const pidFile = join(o.dir, PID_FILE);
  if (child.pid !== undefined) await writeFile(pidFile, `${child.pid}\n`);
  let output = '';
  const keep = (b: Buffer) => {
    output = (output + b.toString('utf8')).slice(-4_000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  // A crashed test run must not leave Azurite behind.
  const onParentExit = () => child.kill('SIGKILL');
  process.once('exit', onParentExit);
  let exited = false;
  child.once('exit', () => {
    exited = true;
  });

  const deadline = Date.now() + (o.startTimeoutMs ?? 30_000);
  try {
    const pending = new Set([ports.blob, ports.queue, ports.table]);
    while (pending.size) {
      if (exited) throw new EarlyExit(`azurite exited during start-up (code ${child.exitCode}): ${output.trim()}`);
      if (Date.now() > deadline) throw new Error(`azurite did not start within ${o.startTimeoutMs ?? 30_000} ms: ${output.trim()}`);
      for (const p of [...pending]) if (await probe(p)) pending.delete(p);
      if (pending.size) await new Promise((r) => setTimeout(r, 50));
    }
  } catch (e) {
    await kill(child);
    process.off('exit', onParentExit);
    await rm(pidFile, { force: true });
    throw e;
  }

  const host = 'http://127.0.0.1';
  const connectionString =
    `DefaultEndpointsProtocol=http;AccountName=${AZURITE_ACCOUNT};AccountKey=${AZURITE_KEY};` +
    `BlobEndpoint=${host}:${ports.blob}/${AZURITE_ACCOUNT};` +
    `QueueEndpoint=${host}:${ports.queue}/${AZURITE_ACCOUNT};` +
    `TableEndpoint=${host}:${ports.table}/${AZURITE_ACCOUNT};`;
  let stopping: Promise<void> | undefined;
  return {
    connectionString,
    blobPort: ports.blob,
    queuePort: ports.queue,
    tablePort: ports.table,
    cpuMs() {
      // /proc/<pid>/stat: fields 14 and 15 (utime, stime) in clock ticks (USER_HZ = 100 on Linux).
      const f = readFileSync(`/proc/${child.pid}/stat`, 'utf8')
        .replace(/^.*\) /, '')
        .split(' ');
      return (Number(f[11]) + Number(f[12])) * 10;
    },
    stop() {
      stopping ??= kill(child).finally(() => {
        process.off('exit', onParentExit);
        return rm(pidFile, { force: true });
      });
      return stopping;
    },
  };
}

/**
 * Starts Azurite (blob, queue, table) from this project's node_modules on
 * 127.0.0.1 and resolves once all three services answer.
 */
export async function startAzurite(o: AzuriteOptions): Promise<Azurite> {
  await mkdir(o.dir, { recursive: true });
  o = { ...o, dir: resolve(o.dir) };
  const orphan = await stopOrphanAzurite(o.dir);
  if (orphan !== undefined) o.onOrphanStopped?.(orphan);
  const picked = o.blobPort === undefined || o.queuePort === undefined || o.tablePort === undefined;
  // Fixed ports held by someone else would be answered by that process (another Azurite looks just like ours).
  await assertPortsFree(
    [
      { port: o.blobPort, what: 'Azurite blob' },
      { port: o.queuePort, what: 'Azurite queue' },
      { port: o.tablePort, what: 'Azurite table' },
    ].filter((p): p is { port: number; what: string } => p.port !== undefined),
  );
  // A port we picked can be taken by someone else before Azurite binds it; pick again then.
  for (let attempt = 1; ; attempt++) {
    const ports = {
      blob: o.blobPort ?? (await freePort()),
      queue: o.queuePort ?? (await freePort()),
      table: o.tablePort ?? (await freePort()),
    };
    if (new Set([ports.blob, ports.queue, ports.table]).size < 3) {
      if (!picked) throw new TypeError('blobPort, queuePort and tablePort must differ');
      continue;
    }
    try {
      let current = await startOnce(o, ports);
      return {
        ...current,
        async restart() {
          await current.stop();
          current = await startOnce(o, ports);
        },
        cpuMs: () => current.cpuMs(),
        stop: () => current.stop(),
      };
    } catch (e) {
      if (!(e instanceof EarlyExit) || !picked || attempt >= 3) throw e;
    }
  }
}
