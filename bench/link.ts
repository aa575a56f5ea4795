/**
 * A user-space link emulator (kernel netem is not available on these machines): a TCP proxy
 * that delivers every chunk RTT/2 after it arrived, in each direction, as a wire does. Chunks
 * are not serialized behind one another: each carries its own due time and a per-direction
 * queue is drained by one timer, so a stream of chunks keeps flowing at full rate, only late.
 * An optional bandwidth cap adds each chunk's serialization time (the link is busy until the
 * previous chunk has left). TLS passes through untouched: the proxy never looks inside.
 *
 * Each listener has a key (e.g. a mailbox), so connections can be counted per key: how many
 * were open at once, and how many times a connection waited for the other side ("turns": a
 * client flight following a server flight, i.e. the round trips a request/response protocol
 * waits for).
 */
import { createServer, connect, type Server, type Socket, type AddressInfo } from 'node:net';

/** Where a listener forwards to and how the emulated link behaves. */
export interface LinkOptions {
  /** The real server. */
  target: { host: string; port: number };
  /** Round-trip time added, in ms (half each way). 0 forwards at once. */
  rttMs: number;
  /** Optional bandwidth cap per direction and connection, bytes per second. */
  bytesPerSecond?: number;
}

/** Per-key counters of one link. */
export interface LinkCounters {
  /** Connections accepted. */
  connections: number;
  /** Connections open right now. */
  open: number;
  /** Most connections open at the same time. */
  maxOpen: number;
  /** Client flights that followed a server flight (round trips waited, all connections). */
  turns: number;
  /** Bytes client → server and server → client. */
  up: number;
  down: number;
}

export interface Link {
  /** Listens on a new loopback port for `key` (default: one shared key); resolves to the port. */
  listen(key?: string): Promise<number>;
  /** Counters by key. */
  counters(): Record<string, LinkCounters>;
  /** Sums of the counters over every key (maxOpen: the largest of any one key). */
  totals(): LinkCounters;
  /** Zeroes the counters (open connections stay counted as open). */
  reset(): void;
  stop(): Promise<void>;
}

const HIGH_WATER = 32 * 1024 * 1024;

/**
 * One direction of a connection: chunks wait in a FIFO with their due times and leave on a
 * timer. The source is paused while more than HIGH_WATER bytes are queued (the link's buffer),
 * and resumed when the queue has drained and the destination accepts writes again.
 */
function pipeDelayed(from: Socket, to: Socket, o: LinkOptions, onChunk: (n: number) => void): void {
  const half = o.rttMs / 2;
  const queue: Array<{ due: number; chunk: Buffer | null }> = [];
  let queued = 0;
  let timer: NodeJS.Timeout | undefined;
  let freeAt = 0;
  let lastDue = 0;
  const flush = () => {
    timer = undefined;
    const now = performance.now();
    while (queue.length && queue[0].due <= now + 0.5) {
      const { chunk } = queue.shift()!;
      if (chunk === null) {
        to.end();
        continue;
      }
      queued -= chunk.length;
      if (!to.destroyed) to.write(chunk);
    }
    if (queue.length) arm();
    if (from.isPaused() && queued < HIGH_WATER / 2 && !to.writableNeedDrain) from.resume();
  };
  const arm = () => {
    if (timer || !queue.length) return;
    timer = setTimeout(flush, Math.max(0, queue[0].due - performance.now()));
  };
  const push = (chunk: Buffer | null) => {
    const now = performance.now();
    let sent = now;
    if (chunk && o.bytesPerSecond) {
      // The link is busy with earlier bytes until freeAt; this chunk's last byte leaves after its own serialization.
      freeAt = Math.max(now, freeAt) + (chunk.length * 1000) / o.bytesPerSecond;
      sent = freeAt;
    }
    // FIFO: never overtake an earlier chunk (their due times are never decreasing anyway).
    const due = Math.max(sent + half, lastDue);
    lastDue = due;
    if (half === 0 && !o.bytesPerSecond && !queue.length) {
      if (chunk === null) to.end();
      else if (!to.destroyed) to.write(chunk);
      return;
    }
    queue.push({ due, chunk });
    if (chunk) queued += chunk.length;
    arm();
  };
  from.on('data', (chunk: Buffer) => {
    onChunk(chunk.length);
    push(chunk);
    if (queued > HIGH_WATER || to.writableNeedDrain) from.pause();
  });
  to.on('drain', () => {
    if (from.isPaused() && queued < HIGH_WATER / 2) from.resume();
  });
  from.on('end', () => push(null));
  from.on('close', () => {
    // An abortive close (reset) is passed on after the same delay, so the peer sees it in order.
    if (!from.readableEnded) setTimeout(() => to.destroy(), half);
  });
  from.on('error', () => undefined);
}

function zero(): LinkCounters {
  return { connections: 0, open: 0, maxOpen: 0, turns: 0, up: 0, down: 0 };
}

/** Starts a link emulator; call `listen()` for each port you need. */
export function startLink(o: LinkOptions): Link {
  const servers: Server[] = [];
  const sockets = new Set<Socket>();
  const byKey = new Map<string, LinkCounters>();
  const counter = (key: string) => {
    let c = byKey.get(key);
    if (!c) byKey.set(key, (c = zero()));
    return c;
  };
  const accept = (key: string) => (client: Socket) => {
    const c = counter(key);
    c.connections++;
    c.maxOpen = Math.max(c.maxOpen, ++c.open);
    const server = connect({ host: o.target.host, port: o.target.port });
    client.setNoDelay(true);
    server.setNoDelay(true);
    sockets.add(client).add(server);
    // Turns: the client speaks again after the server spoke. The greeting counts as the first server flight.
    let lastFromServer = false;
    pipeDelayed(client, server, o, (n) => {
      counter(key).up += n;
      if (lastFromServer) counter(key).turns++;
      lastFromServer = false;
    });
    pipeDelayed(server, client, o, (n) => {
      counter(key).down += n;
      lastFromServer = true;
    });
    let closed = false;
    const done = () => {
      if (closed) return;
      closed = true;
      counter(key).open--;
    };
    client.once('close', () => (sockets.delete(client), done()));
    server.once('close', () => sockets.delete(server));
    server.once('error', () => client.destroy());
  };
  return {
    async listen(key = 'default') {
      const s = createServer({ noDelay: true }, accept(key));
      await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
      servers.push(s);
      counter(key);
      return (s.address() as AddressInfo).port;
    },
    counters: () => Object.fromEntries([...byKey].map(([k, v]) => [k, { ...v }])),
    totals() {
      const t = zero();
      for (const c of byKey.values()) {
        t.connections += c.connections;
        t.open += c.open;
        t.maxOpen = Math.max(t.maxOpen, c.maxOpen);
        t.turns += c.turns;
        t.up += c.up;
        t.down += c.down;
      }
      return t;
    },
    reset() {
      for (const c of byKey.values()) Object.assign(c, { ...zero(), open: c.open, maxOpen: c.open });
    },
    async stop() {
      for (const s of sockets) s.destroy();
      await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
    },
  };
}
