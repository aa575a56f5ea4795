import type { ContainerClient, BlobServiceClient } from '@azure/storage-blob';
import type { QueueClient, QueueServiceClient } from '@azure/storage-queue';
import type { TableClient } from '@azure/data-tables';
import type { AccessToken, GetTokenOptions, TokenCredential } from '@azure/core-auth';
import type { StorageConfig } from './config/index.js';

/**
 * The process's Azure credential, chosen deterministically from the storage
 * settings: `ManagedIdentityCredential({ clientId })` when
 * `POSTROOM_STORAGE__credential=managedidentity` (user-assigned with
 * `__clientId`), `DefaultAzureCredential` only when nothing is configured
 * (local development). The same credential serves Key Vault. `@azure/identity`
 * is imported on the first token request, not at start.
 *
 * @example
 * ```ts
 * const credential = storageCredential(config.storage);
 * const secrets = new SecretClient(vaultUrl, credential);
 * ```
 */
export function storageCredential(config: Pick<StorageConfig, 'credential'>): TokenCredential {
  let inner: Promise<TokenCredential> | undefined;
  const make = async (): Promise<TokenCredential> => {
    const identity = await import('@azure/identity');
    const c = config.credential;
    if (c.kind === 'managedidentity') return c.clientId ? new identity.ManagedIdentityCredential({ clientId: c.clientId }) : new identity.ManagedIdentityCredential();
    return new identity.DefaultAzureCredential();
  };
  return {
    async getToken(scopes: string | string[], options?: GetTokenOptions): Promise<AccessToken | null> {
      if (!inner) {
        inner = make();
        inner.catch(() => (inner = undefined));
      }
      return (await inner).getToken(scopes, options);
    },
  };
}

/** Which credential class `storageCredential` builds (for logs and tests; no secret in it). */
export function describeStorageCredential(config: Pick<StorageConfig, 'credential'>): string {
  const c = config.credential;
  if (c.kind === 'default') return 'DefaultAzureCredential';
  return c.clientId ? `ManagedIdentityCredential(clientId ${c.clientId})` : 'ManagedIdentityCredential(system-assigned)';
}

/**
 * Retries of a blob or queue request (the SDK's default: 4 tries, up to 120 s
 * apart, no client-side limit per try). 4 tries at 0, 1.5 and 4.5 s ride out
 * a ServerBusy (503) or a restarting account and give up on a dead one
 * within ~6 s plus the tries, well inside a poll's deadline. `tryTimeoutInMs`
 * is the server-side limit of one try (the `timeout` parameter).
 */
export const STORAGE_RETRY_OPTIONS = Object.freeze({ maxTries: 4, retryDelayInMs: 1_500, maxRetryDelayInMs: 8_000, tryTimeoutInMs: 30_000 });
/** The same bounds for Table storage (core-rest-pipeline's retry: 3 retries, 0.5-4 s apart with jitter). */
export const TABLE_RETRY_OPTIONS = Object.freeze({ maxRetries: 3, retryDelayInMs: 500, maxRetryDelayInMs: 4_000 });

/**
 * Storage clients, built lazily once per process (the SDKs cost ~100 ms each
 * to import, so a cold start that never touches tables never loads them).
 */
export interface StorageClients {
  /** The blob container `name`, created on first use where allowed (a 403 on create under managed identity is tolerated); memoised per name. */
  container(name: string): Promise<ContainerClient>;
  /** The Storage queue `name`, created on first use where allowed; memoised per name. */
  queue(name: string): Promise<QueueClient>;
  /** The table `name`, created on first use where allowed; memoised per name. */
  table(name: string): Promise<TableClient>;
}

export function createStorageClients(config: StorageConfig): StorageClients {
  const services = serviceClients(config);
  const containers = new Map<string, Promise<ContainerClient>>();
  const queues = new Map<string, Promise<QueueClient>>();
  const tables = new Map<string, Promise<TableClient>>();
  const ensure = (create: () => Promise<unknown>) => ensureExists(create, config);
  return {
    container: (name) =>
      memo(containers, name, async () => {
        const c = (await services.blobs()).getContainerClient(name);
        await ensure(() => c.createIfNotExists());
        return c;
      }),
    queue: (name) =>
      memo(queues, name, async () => {
        const q = (await services.queues()).getQueueClient(name);
        await ensure(() => q.createIfNotExists());
        return q;
      }),
    table: (name) =>
      memo(tables, name, async () => {
        const t = await services.table(name);
        await ensure(() => t.createTable());
        return t;
      }),
  };
}

/** The blob and queue service clients (built once) and table clients, by connection string or service URI + credential. */
function serviceClients(config: StorageConfig) {
  let blobService: Promise<BlobServiceClient> | undefined;
  let queueService: Promise<QueueServiceClient> | undefined;
  const credential = storageCredential(config);
  const uris = (): NonNullable<StorageConfig['serviceUris']> => {
    if (!config.serviceUris) throw new TypeError('storage config has neither a connection string nor service URIs (build it with loadConfig)');
    return config.serviceUris;
  };
  const cs = config.connectionString;
  const insecure = cs ? /DefaultEndpointsProtocol=http;|=http:\/\//i.test(cs) : false;
  return {
    blobs: () =>
      (blobService ??= import('@azure/storage-blob').then(({ BlobServiceClient }) =>
        cs
          ? BlobServiceClient.fromConnectionString(cs, { retryOptions: STORAGE_RETRY_OPTIONS })
          : new BlobServiceClient(uris().blob, credential, { retryOptions: STORAGE_RETRY_OPTIONS }),
      )),
    queues: () =>
      (queueService ??= import('@azure/storage-queue').then(({ QueueServiceClient }) =>
        cs
          ? QueueServiceClient.fromConnectionString(cs, { retryOptions: STORAGE_RETRY_OPTIONS })
          : new QueueServiceClient(uris().queue, credential, { retryOptions: STORAGE_RETRY_OPTIONS }),
      )),
    table: async (name: string): Promise<TableClient> => {
      const { TableClient } = await import('@azure/data-tables');
      return cs
        ? TableClient.fromConnectionString(cs, name, { allowInsecureConnection: insecure, retryOptions: TABLE_RETRY_OPTIONS })
        : new TableClient(uris().table, name, credential, { retryOptions: TABLE_RETRY_OPTIONS });
    },
  };
}

/**
 * In Azure the template creates every queue, container and table, and the
 * identity's roles are scoped to them: creating may be refused (403) where
 * using is allowed. Carry on then; a missing resource fails on first use.
 */
async function ensureExists(create: () => Promise<unknown>, config: StorageConfig): Promise<void> {
  try {
    await create();
  } catch (e) {
    const status = (e as { statusCode?: number }).statusCode;
    if (status === 409 || (status === 403 && !config.connectionString)) return;
    throw e;
  }
}

/** One promise per name; a failed one is forgotten so the next call tries again. */
function memo<T>(map: Map<string, Promise<T>>, name: string, make: () => Promise<T>): Promise<T> {
  let p = map.get(name);
  if (!p) {
    p = make();
    p.catch(() => map.delete(name));
    map.set(name, p);
  }
  return p;
}
