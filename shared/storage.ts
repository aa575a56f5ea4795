import type { ContainerClient, BlobServiceClient } from '@azure/storage-blob';
import type { QueueClient, QueueServiceClient } from '@azure/storage-queue';
import type { TableClient } from '@azure/data-tables';
import type { StorageConfig } from './config/index.js';

/**
 * Storage clients, built lazily once per process (the SDKs cost ~100 ms each
 * to import, so a cold start that never touches tables never loads them).
 */
export interface StorageClients {
  container(name: string): Promise<ContainerClient>;
  queue(name: string): Promise<QueueClient>;
  table(name: string): Promise<TableClient>;
}

export function createStorageClients(config: StorageConfig): StorageClients {
  let blobService: Promise<BlobServiceClient> | undefined;
  let queueService: Promise<QueueServiceClient> | undefined;
  const containers = new Map<string, Promise<ContainerClient>>();
  const queues = new Map<string, Promise<QueueClient>>();
  const tables = new Map<string, Promise<TableClient>>();
  const credential = () => import('@azure/identity').then((m) => new m.DefaultAzureCredential());
  const insecure = config.connectionString ? /DefaultEndpointsProtocol=http;|=http:\/\//i.test(config.connectionString) : false;

  const blobs = () =>
    (blobService ??= (async () => {
      const { BlobServiceClient } = await import('@azure/storage-blob');
      return config.connectionString
        ? BlobServiceClient.fromConnectionString(config.connectionString)
        : new BlobServiceClient(`https://${config.accountName}.blob.core.windows.net`, await credential());
    })());
  const queuesSvc = () =>
    (queueService ??= (async () => {
      const { QueueServiceClient } = await import('@azure/storage-queue');
      return config.connectionString
        ? QueueServiceClient.fromConnectionString(config.connectionString)
        : new QueueServiceClient(`https://${config.accountName}.queue.core.windows.net`, await credential());
    })());

  const memo = <T>(map: Map<string, Promise<T>>, name: string, make: () => Promise<T>): Promise<T> => {
    let p = map.get(name);
    if (!p) {
      p = make();
      p.catch(() => map.delete(name));
      map.set(name, p);
    }
    return p;
  };

  return {
    container: (name) =>
      memo(containers, name, async () => {
        const c = (await blobs()).getContainerClient(name);
        await c.createIfNotExists();
        return c;
      }),
    queue: (name) =>
      memo(queues, name, async () => {
        const q = (await queuesSvc()).getQueueClient(name);
        await q.createIfNotExists();
        return q;
      }),
    table: (name) =>
      memo(tables, name, async () => {
        const { TableClient } = await import('@azure/data-tables');
        const t = config.connectionString
          ? TableClient.fromConnectionString(config.connectionString, name, { allowInsecureConnection: insecure })
          : new TableClient(`https://${config.accountName}.table.core.windows.net`, name, await credential());
        await t.createTable().catch((e: { statusCode?: number }) => {
          if (e.statusCode !== 409) throw e;
        });
        return t;
      }),
  };
}
