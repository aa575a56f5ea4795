import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import { ensureCertificates, type SandboxCertificates } from '../sandbox/ca.js';
import { trustContext, trustedCas } from '../shared/tls.js';

let dir: string;
let certs: SandboxCertificates;
let server: tls.Server;
let port: number;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'postroom-tls-'));
  certs = await ensureCertificates(join(dir, 'certs'));
  server = tls.createServer({ cert: certs.cert, key: certs.key }, (s) => s.end('hi'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as AddressInfo).port;
});
after(async () => {
  await new Promise<void>((r) => server.close(() => r()));
  await rm(dir, { recursive: true, force: true });
});

function handshake(options: tls.ConnectionOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ...options }, () => (s.destroy(), resolve()));
    s.once('error', reject);
  });
}

describe("trustContext: the extra CA added to Node's store, built once", () => {
  test("no extra CA: no options, Node's own store applies", () => {
    assert.deepEqual(trustContext(undefined), {});
    assert.deepEqual(trustContext(''), {});
  });

  test('one context per CA, reused by every connection; the store is kept and the extra CA added', async () => {
    const a = trustContext(certs.ca).secureContext;
    assert.ok(a);
    assert.equal(trustContext(certs.ca).secureContext, a);
    const cas = trustedCas(certs.ca)!;
    assert.equal(cas.at(-1), certs.ca);
    assert.ok(cas.length > 100, `only ${cas.length} CAs: Node's store was replaced`);
    await handshake({ secureContext: a, rejectUnauthorized: true });
    await handshake({ secureContext: a, rejectUnauthorized: true });
  });

  test('verification stays on: without the extra CA the sandbox certificate is refused', async () => {
    await assert.rejects(handshake({ rejectUnauthorized: true }), /self[- ]signed|unable to (get|verify)/i);
  });
});
