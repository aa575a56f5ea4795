/**
 * A small HTTP proxy in front of one Azurite service that answers a share of
 * the requests as Azure Storage does when it sheds load: `503 ServerBusy`
 * with Azure's error body (XML for blobs and queues, JSON for tables when the
 * client asks for JSON). The other requests are forwarded unchanged.
 *
 * The share is counted in operations (the SDK keeps `x-ms-client-request-id`
 * across the retries of one operation): every `everyNth` operation is refused
 * on its first `busyTries` tries. Refusing every nth request instead would
 * make a run's outcome a lottery (an operation whose 4 tries all land on a
 * refused slot, ~1 % each at 1 in 3).
 */
import { createServer, request, type IncomingMessage, type ServerResponse } from 'node:http';
import { once } from 'node:events';
import { randomUUID } from 'node:crypto';
import type { AddressInfo, Socket } from 'node:net';

/** Options of {@link startStorageBusyProxy}. */
export interface StorageBusyProxyOptions {
  /** The Azurite service's port on 127.0.0.1. */
  targetPort: number;
  /** Every `everyNth` operation is answered 503 ServerBusy (the 3rd, 6th, ...). 0: none. */
  everyNth: number;
  /** How many tries of a chosen operation are refused before it is let through; default 2. */
  busyTries?: number;
}

/** A running proxy. */
export interface StorageBusyProxy {
  /** Its port on 127.0.0.1. */
  readonly port: number;
  /** Requests answered 503 so far. */
  readonly busy: number;
  /** Requests forwarded so far. */
  readonly forwarded: number;
  close(): Promise<void>;
}

const MESSAGE = 'The server is currently unable to receive requests. Please retry your request.';

function answerBusy(req: IncomingMessage, res: ServerResponse): void {
  const requestId = randomUUID();
  const json = /json/i.test(String(req.headers.accept ?? ''));
  const body = json
    ? JSON.stringify({ 'odata.error': { code: 'ServerBusy', message: { lang: 'en-US', value: `${MESSAGE}\nRequestId:${requestId}\nTime:${new Date().toISOString()}` } } })
    : `<?xml version="1.0" encoding="utf-8"?><Error><Code>ServerBusy</Code><Message>${MESSAGE}\nRequestId:${requestId}\nTime:${new Date().toISOString()}</Message></Error>`;
  res.writeHead(503, {
    'content-type': json ? 'application/json;odata=minimalmetadata;streaming=true;charset=utf-8' : 'application/xml',
    'content-length': Buffer.byteLength(body),
    'x-ms-error-code': 'ServerBusy',
    'x-ms-request-id': requestId,
    'x-ms-version': String(req.headers['x-ms-version'] ?? '2021-12-02'),
  });
  res.end(body);
}

/** Starts the proxy on a free port of 127.0.0.1. */
export async function startStorageBusyProxy(o: StorageBusyProxyOptions): Promise<StorageBusyProxy> {
  let seen = 0;
  let busy = 0;
  let forwarded = 0;
  /** Refusals left per operation (client request id). */
  const left = new Map<string, number>();
  const refuse = (req: IncomingMessage): boolean => {
    const id = String(req.headers['x-ms-client-request-id'] ?? `anonymous-${seen}`);
    if (!left.has(id)) left.set(id, o.everyNth > 0 && ++seen % o.everyNth === 0 ? (o.busyTries ?? 2) : 0);
    const n = left.get(id)!;
    if (n > 0) left.set(id, n - 1);
    return n > 0;
  };
  const sockets = new Set<Socket>();
  const server = createServer((req, res) => {
    if (refuse(req)) {
      busy++;
      // Read the request to its end first: a client still sending would see a reset, not the 503.
      req.resume();
      req.once('end', () => answerBusy(req, res));
      return;
    }
    forwarded++;
    const upstream = request({ host: '127.0.0.1', port: o.targetPort, method: req.method, path: req.url, headers: req.headers }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    });
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as AddressInfo).port,
    get busy() {
      return busy;
    },
    get forwarded() {
      return forwarded;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
  };
}
