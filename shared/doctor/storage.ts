/**
 * Storage: the output queue, the jobs queue, the blob containers and the
 * state table, each reached with the runtime's own clients (the identity in
 * use), after a TCP check of its endpoint (the SDKs retry a closed port for
 * half a minute).
 */
import type { StorageConfig } from '../config/index.js';
import type { Runtime } from '../runtime.js';
import { PostroomError } from '../errors.js';
import { describeStorageCredential } from '../storage.js';
import { checkReachable } from './network.js';
import { failed, timed, withTimeout, type DoctorRun } from './types.js';

type Service = 'blob' | 'queue' | 'table';

/** The checks of every storage resource Postroom uses. */
export async function checkStorage(runtime: Runtime, run: DoctorRun): Promise<void> {
  const cfg = runtime.config.storage;
  const who = cfg.connectionString ? 'the connection string' : describeStorageCredential(cfg);
  const resources: Array<{ service: Service; name: string; use: (signal: AbortSignal) => Promise<string> }> = [
    {
      service: 'queue',
      name: cfg.outputQueue,
      use: async (s) => `${(await (await runtime.storage.queue(cfg.outputQueue)).getProperties({ abortSignal: s })).approximateMessagesCount ?? 0} message(s) waiting`,
    },
    {
      service: 'queue',
      name: cfg.jobsQueue,
      use: async (s) => `${(await (await runtime.storage.queue(cfg.jobsQueue)).getProperties({ abortSignal: s })).approximateMessagesCount ?? 0} job(s) waiting`,
    },
    { service: 'blob', name: cfg.blobContainer, use: (s) => readContainer(runtime, cfg.blobContainer, s) },
    { service: 'blob', name: cfg.leaseContainer, use: (s) => readContainer(runtime, cfg.leaseContainer, s) },
    { service: 'table', name: cfg.stateTable, use: (s) => readTable(runtime, cfg.stateTable, s) },
  ];
  const unreachable = new Map<Service, string | undefined>();
  for (const r of resources) {
    const subject = `${r.service} ${r.name}`;
    const endpoint = endpointOf(cfg, r.service);
    if (endpoint && !unreachable.has(r.service)) unreachable.set(r.service, await checkReachable(endpoint.host, endpoint.port, run.timeoutMs));
    const down = unreachable.get(r.service);
    if (down) {
      run.add(failed('storage', subject, 0, new PostroomError('StorageUnavailable', `${r.service} endpoint not reachable (${down})`, { subject: endpoint!.url })));
      continue;
    }
    const t = await timed(() => withTimeout(r.use(AbortSignal.timeout(run.timeoutMs * 2)), run.timeoutMs * 2, `${r.service} ${r.name}`));
    if (t.error) run.add(failed('storage', subject, t.ms, storageError(t.error, `${r.service} ${r.name}`, who)));
    else run.add({ layer: 'storage', subject, status: 'ok', ms: t.ms, detail: `${t.value} with ${who}` });
  }
}

async function readContainer(runtime: Runtime, name: string, signal: AbortSignal): Promise<string> {
  const p = await (await runtime.storage.container(name)).getProperties({ abortSignal: signal });
  return `container readable (last modified ${p.lastModified?.toISOString() ?? '?'})`;
}

async function readTable(runtime: Runtime, name: string, signal: AbortSignal): Promise<string> {
  const page = await (await runtime.storage.table(name)).listEntities({ abortSignal: signal }).byPage({ maxPageSize: 1 }).next();
  return `table readable (${page.done || !page.value.length ? 'empty' : 'has rows'})`;
}

function storageError(e: unknown, what: string, who: string): PostroomError {
  if (e instanceof PostroomError && e.code !== 'Timeout') return e;
  const err = e as { statusCode?: number; code?: string; message?: string };
  const why =
    err.statusCode === 403
      ? `access denied to ${who}: it needs the Storage ${what.startsWith('blob') ? 'Blob' : what.startsWith('queue') ? 'Queue' : 'Table'} Data Contributor role`
      : `${err.code ?? err.statusCode ?? 'error'}: ${(err.message ?? String(e)).split('\n')[0]}`;
  return new PostroomError('StorageUnavailable', why, { subject: what, cause: e });
}

/** The endpoint of a service, from the service URIs or the connection string. */
export function endpointOf(cfg: StorageConfig, service: Service): { url: string; host: string; port: number } | undefined {
  let url = cfg.serviceUris?.[service];
  if (!url && cfg.connectionString) url = fromConnectionString(cfg.connectionString, service);
  if (!url) return undefined;
  try {
    const u = new URL(url);
    return {
      url: `${u.protocol}//${u.host}${u.pathname}`.replace(/\/$/, ''),
      host: u.hostname.replace(/^\[|\]$/g, ''),
      port: Number(u.port || (u.protocol === 'http:' ? 80 : 443)),
    };
  } catch {
    return undefined;
  }
}

const DEV_PORTS: Record<Service, number> = { blob: 10000, queue: 10001, table: 10002 };

function fromConnectionString(cs: string, service: Service): string | undefined {
  const parts = new Map(
    cs
      .split(';')
      .filter(Boolean)
      .map((kv) => {
        const i = kv.indexOf('=');
        return [kv.slice(0, i).trim().toLowerCase(), kv.slice(i + 1).trim()] as const;
      }),
  );
  if (parts.get('usedevelopmentstorage') === 'true') return `http://127.0.0.1:${DEV_PORTS[service]}/devstoreaccount1`;
  const explicit = parts.get(`${service}endpoint`);
  if (explicit) return explicit;
  const account = parts.get('accountname');
  if (!account) return undefined;
  return `${parts.get('defaultendpointsprotocol') ?? 'https'}://${account}.${service}.${parts.get('endpointsuffix') ?? 'core.windows.net'}`;
}
