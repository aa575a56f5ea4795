import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QueueServiceClient } from '@azure/storage-queue';
import { TableClient } from '@azure/data-tables';
import { BlobServiceClient } from '@azure/storage-blob';
import { startAzurite, type Azurite } from '../sandbox/azurite.js';
import { isPortOpen } from '../sandbox/ports.js';

describe('sandbox Azurite', () => {
  let dir: string;
  let azurite: Azurite;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'postroom-azurite-'));
    azurite = await startAzurite({ dir: join(dir, 'data') });
  });

  after(async () => {
    await azurite?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('returns an explicit http connection string naming its three ports', () => {
    const cs = azurite.connectionString;
    assert.match(cs, /^DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=[^;]+;/);
    assert.ok(cs.includes(`BlobEndpoint=http://127.0.0.1:${azurite.blobPort}/devstoreaccount1;`));
    assert.ok(cs.includes(`QueueEndpoint=http://127.0.0.1:${azurite.queuePort}/devstoreaccount1;`));
    assert.ok(cs.includes(`TableEndpoint=http://127.0.0.1:${azurite.tablePort}/devstoreaccount1;`));
    assert.equal(new Set([azurite.blobPort, azurite.queuePort, azurite.tablePort]).size, 3);
  });

  it('serves queues: send then receive a message', async () => {
    const queue = QueueServiceClient.fromConnectionString(azurite.connectionString).getQueueClient('sandbox-test');
    await queue.create();
    await queue.sendMessage('hello from the sandbox');
    const got = await queue.receiveMessages({ numberOfMessages: 1 });
    assert.equal(got.receivedMessageItems.length, 1);
    assert.equal(got.receivedMessageItems[0].messageText, 'hello from the sandbox');
  });

  it('serves tables: write then read an entity', async () => {
    const table = TableClient.fromConnectionString(azurite.connectionString, 'sandboxtest', { allowInsecureConnection: true });
    await table.createTable();
    await table.createEntity({ partitionKey: 'p', rowKey: 'r', uidNext: 42 });
    const entity = await table.getEntity<{ uidNext: number }>('p', 'r');
    assert.equal(entity.uidNext, 42);
  });

  it('serves blobs and persists to the given directory', async () => {
    const container = BlobServiceClient.fromConnectionString(azurite.connectionString).getContainerClient('sandbox-test');
    await container.create();
    const blob = container.getBlockBlobClient('a/b.txt');
    await blob.upload('blob body', 9);
    const buf = await blob.downloadToBuffer();
    assert.equal(buf.toString('utf8'), 'blob body');
    assert.ok((await readdir(join(dir, 'data'))).some((f) => f.startsWith('__azurite_db_')));
  });

  it("reports its own process's CPU time, which grows as it serves requests", async () => {
    const queue = QueueServiceClient.fromConnectionString(azurite.connectionString).getQueueClient('sandbox-cpu');
    await queue.create();
    const before = azurite.cpuMs();
    assert.ok(before > 0, 'start-up alone costs CPU');
    const t0 = performance.now();
    let n = 0;
    // Enough requests for at least one clock tick (10 ms) of Azurite's CPU, however fast the machine.
    while (azurite.cpuMs() === before && performance.now() - t0 < 20_000) {
      await queue.sendMessage(`m${n++}`);
    }
    assert.ok(azurite.cpuMs() > before, `no CPU counted after ${n} requests`);
  });

  it('closes its ports on stop (and stop is idempotent)', async () => {
    const a = await startAzurite({ dir: join(dir, 'mem'), inMemory: true });
    assert.equal(await isPortOpen(a.queuePort), true);
    await a.stop();
    await a.stop();
    assert.equal(await isPortOpen(a.blobPort), false);
    assert.equal(await isPortOpen(a.queuePort), false);
    assert.equal(await isPortOpen(a.tablePort), false);
  });
});
