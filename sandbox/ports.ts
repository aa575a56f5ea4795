import { connect, createServer } from 'node:net';

/**
 * A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it).
 * Another process may take it before the caller binds it; callers that can
 * should bind port 0 themselves instead.
 */
export async function freePort(): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0, exclusive: true }, () => {
      const address = server.address();
      if (address === null || typeof address === 'string') {
        server.close();
        reject(new Error('could not read the bound port'));
        return;
      }
      const { port } = address;
      server.close((err) => (err ? reject(err) : resolve(port)));
    });
  });
}

/** Whether something accepts TCP connections on host:port right now. */
export async function isPortOpen(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const socket = connect({ host, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1_000);
    socket.once('connect', () => done(true));
    socket.once('timeout', () => done(false));
    socket.once('error', () => done(false));
  });
}

/** Resolves once host:port accepts TCP connections; rejects after `timeoutMs`. */
export async function waitForPort(port: number, timeoutMs = 15_000, host = '127.0.0.1'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await isPortOpen(port, host))) {
    if (Date.now() > deadline) throw new Error(`${host}:${port} did not accept connections within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A process found listening on a TCP port (Linux /proc; root sees every process). */
export interface PortHolder {
  pid: number;
  /** Its command line, arguments joined by spaces (may be shortened). */
  command: string;
}

/** The socket inodes listening on `port` (IPv4 and IPv6), from /proc/net/tcp*. */
async function listeningInodes(port: number): Promise<Set<string>> {
  const { readFile } = await import('node:fs/promises');
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  const inodes = new Set<string>();
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    const text = await readFile(table, 'utf8').catch(() => '');
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      // f[1] local address "ADDR:PORT", f[3] state (0A = LISTEN), f[9] inode
      if (f.length > 9 && f[3] === '0A' && f[1].endsWith(`:${hex}`)) inodes.add(f[9]);
    }
  }
  return inodes;
}

/** The command line of a live process, or undefined when it is gone. */
export async function processCommand(pid: number): Promise<string | undefined> {
  const { readFile } = await import('node:fs/promises');
  const raw = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => undefined);
  return raw === undefined || raw === '' ? undefined : raw.replace(/\0+$/, '').split('\0').join(' ');
}

/**
 * Which process listens on 127.0.0.1/any address at `port`, when this
 * machine can tell (Linux /proc; another user's processes only as root).
 */
export async function portHolder(port: number): Promise<PortHolder | undefined> {
  const { readdir, readlink } = await import('node:fs/promises');
  const inodes = await listeningInodes(port);
  if (!inodes.size) return undefined;
  const wanted = new Set([...inodes].map((i) => `socket:[${i}]`));
  for (const entry of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(entry)) continue;
    const fds = await readdir(`/proc/${entry}/fd`).catch(() => [] as string[]);
    for (const fd of fds) {
      const target = await readlink(`/proc/${entry}/fd/${fd}`).catch(() => '');
      if (!wanted.has(target)) continue;
      const pid = Number(entry);
      const command = (await processCommand(pid)) ?? '?';
      return { pid, command: command.length > 200 ? `${command.slice(0, 200)}…` : command };
    }
  }
  return undefined;
}

/** A port the caller needs, and what it is for (named in the refusal). */
export interface NeededPort {
  port: number;
  what: string;
}

/**
 * Refuses, naming every needed port that is taken, its holder when it can be
 * told, and the fix. `hint` adds a way out (e.g. another port base).
 */
export async function assertPortsFree(ports: NeededPort[], hint = ''): Promise<void> {
  const busy: string[] = [];
  for (const p of ports) {
    if (!(await isPortOpen(p.port))) continue;
    const holder = await portHolder(p.port);
    busy.push(
      holder
        ? `port ${p.port} (${p.what}) is held by pid ${holder.pid}: ${holder.command}${ownerHint(holder)} — stop it ("kill ${holder.pid}")`
        : `port ${p.port} (${p.what}) is in use by a process this user cannot see — stop it (as root: "ss -ltnp 'sport = :${p.port}'" shows which)`,
    );
  }
  if (busy.length) throw new Error(`cannot start: ${busy.length} port(s) needed are in use:\n  ${busy.join('\n  ')}${hint ? `\n${hint}` : ''}`);
}

/** Names the sandbox a holder belongs to, when its command line tells (its pid file is the way to find it again). */
function ownerHint(holder: PortHolder): string {
  const dovecot = /\bdovecot\b.*-c (\S+)\/dovecot\.conf/.exec(holder.command);
  if (dovecot) return ` (the sandbox Dovecot of ${dovecot[1]}, pid file ${dovecot[1]}/run/master.pid: Ctrl-C the npm start that runs it)`;
  if (/azurite/.test(holder.command)) return ' (an Azurite, maybe of another sandbox or a VS Code extension)';
  return '';
}

/**
 * Whether a process still runs (Linux /proc): any of its threads is not a
 * zombie. Neither its command line (empty while it exits, before its sockets
 * close) nor its main thread's state (a zombie while other threads still
 * hold its files) tells.
 */
export async function isRunning(pid: number): Promise<boolean> {
  const { readdir, readFile } = await import('node:fs/promises');
  const tasks = await readdir(`/proc/${pid}/task`).catch(() => [] as string[]);
  for (const t of tasks) {
    const stat = await readFile(`/proc/${pid}/task/${t}/stat`, 'utf8').catch(() => undefined);
    if (stat !== undefined && stat.replace(/^.*\) /, '')[0] !== 'Z') return true;
  }
  return false;
}
