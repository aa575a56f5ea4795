/**
 * Dependencies that fail without an answer: a listener that accepts TCP
 * connections and never sends a byte (a black-holed host: a firewall that
 * drops, a hung server), and a port on which nothing listens (refused).
 */
import { createServer, type Socket } from 'node:net';
import { once } from 'node:events';
import { freePort } from '../../sandbox/ports.js';

/** A listener on 127.0.0.1 that accepts and never answers. */
export interface BlackHole {
  readonly port: number;
  /** Connections accepted so far. */
  readonly accepted: number;
  close(): Promise<void>;
}

export async function startBlackHole(): Promise<BlackHole> {
  const sockets = new Set<Socket>();
  let accepted = 0;
  const server = createServer((s) => {
    accepted++;
    sockets.add(s);
    s.on('error', () => undefined);
    s.once('close', () => sockets.delete(s));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  return {
    port,
    get accepted() {
      return accepted;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
  };
}

/** A port of 127.0.0.1 on which nothing listens (connections are refused). */
export function refusingPort(): Promise<number> {
  return freePort();
}
