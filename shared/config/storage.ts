/**
 * Storage settings: one connection, `POSTROOM_STORAGE`, read the way the
 * Functions host reads a trigger connection, so the same app settings serve
 * the queue triggers and Postroom's own blob, queue and table clients.
 *
 * - `POSTROOM_STORAGE` = a connection string (local, Azurite), or
 * - `POSTROOM_STORAGE__queueServiceUri` / `__blobServiceUri` / `__tableServiceUri`
 *   (+ `__credential=managedidentity`, `__clientId`) for identity-based access, or
 * - `POSTROOM_STORAGE__accountName`: a shorthand from which the three service
 *   URIs are derived for `POSTROOM_CLOUD` (the host itself does not read it for
 *   trigger connections, so the template sets the URIs).
 */
export type StorageCloudName = 'public' | 'usgov' | 'usgovdod' | 'china';

/** Storage endpoint suffix per Azure cloud (`https://<account>.<service>.<suffix>`). */
export const STORAGE_SUFFIXES: Readonly<Record<StorageCloudName, string>> = Object.freeze({
  public: 'core.windows.net',
  usgov: 'core.usgovcloudapi.net',
  usgovdod: 'core.usgovcloudapi.net',
  china: 'core.chinacloudapi.cn',
});

/** The three storage services Postroom uses, as absolute URIs without a trailing slash. */
export interface StorageServiceUris {
  /** Blob service, e.g. `https://<account>.blob.core.windows.net` (`POSTROOM_STORAGE__blobServiceUri`). */
  readonly blob: string;
  /** Queue service, e.g. `https://<account>.queue.core.windows.net` (`POSTROOM_STORAGE__queueServiceUri`). */
  readonly queue: string;
  /** Table service, e.g. `https://<account>.table.core.windows.net` (`POSTROOM_STORAGE__tableServiceUri`). */
  readonly table: string;
}

/**
 * How identity-based storage (and Key Vault) authenticate. `managedidentity`:
 * `ManagedIdentityCredential` (user-assigned when `clientId` is set);
 * `default`: `DefaultAzureCredential`, only when nothing is configured (local).
 */
export type StorageCredentialConfig = { readonly kind: 'managedidentity'; readonly clientId?: string } | { readonly kind: 'default' };

/** Storage access (`POSTROOM_STORAGE*`) and the names of the queues, containers and table Postroom uses. */
export interface StorageConfig {
  /** A connection string; undefined in identity mode. */
  readonly connectionString?: string;
  /** Service URIs in identity mode (given, or derived from the account name and cloud). */
  readonly serviceUris?: StorageServiceUris;
  /** The account name, when given as the shorthand or recognisable from the service URIs. */
  readonly accountName?: string;
  /** The Azure cloud the storage (and the Function App) live in; default `public`. */
  readonly cloud: StorageCloudName;
  /** The credential for identity mode; also the one used for Key Vault. */
  readonly credential: StorageCredentialConfig;
  /** Fan-out queue of poll jobs (`POSTROOM_JOBS_QUEUE`, default `postroom-jobs`); failed jobs end in `<name>-poison`. */
  readonly jobsQueue: string;
  /** Queue of ingested messages (`POSTROOM_OUTPUT_QUEUE`, default `postroom-messages`). */
  readonly outputQueue: string;
  /** Queue of notification jobs (`POSTROOM_NOTIFY_QUEUE`, default `postroom-notifications`). */
  readonly notifyQueue: string;
  /** Container for raw messages, attachments and long bodies (`POSTROOM_BLOB_CONTAINER`, default `postroom-messages`). */
  readonly blobContainer: string;
  /** Container of the per-mailbox lease blobs (`POSTROOM_LEASE_CONTAINER`, default `postroom-leases`). */
  readonly leaseContainer: string;
  /** Table of checkpoints, POP3 UIDL sets, poll status and notification state (`POSTROOM_STATE_TABLE`, default `postroomstate`). */
  readonly stateTable: string;
}

/** Settings read here (merged into the config module's SETTINGS list). */
export const STORAGE_SETTINGS = Object.freeze([
  'POSTROOM_STORAGE',
  'POSTROOM_STORAGE__queueServiceUri',
  'POSTROOM_STORAGE__blobServiceUri',
  'POSTROOM_STORAGE__tableServiceUri',
  'POSTROOM_STORAGE__credential',
  'POSTROOM_STORAGE__clientId',
  'POSTROOM_STORAGE__accountName',
  'POSTROOM_CLOUD',
] as const);

type Env = Readonly<Record<string, string | undefined>>;

const QUEUE_RE = /^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$/;
const TABLE_RE = /^[A-Za-z][A-Za-z0-9]{2,62}$/;
const ACCOUNT_RE = /^[a-z0-9]{3,24}$/;
const GUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const SERVICES = ['queue', 'blob', 'table'] as const;

/** The service URIs of an account in a cloud. */
export function storageServiceUris(accountName: string, cloud: StorageCloudName = 'public'): StorageServiceUris {
  const uri = (service: string) => `https://${accountName}.${service}.${STORAGE_SUFFIXES[cloud]}`;
  return { blob: uri('blob'), queue: uri('queue'), table: uri('table') };
}

/**
 * Reads the storage settings; every problem is appended to `problems`
 * (the caller reports them all at once).
 */
export function parseStorageSettings(env: Env, problems: string[]): StorageConfig {
  const get = (k: string) => env[k]?.trim() || undefined;
  const cloud = parseCloud(get('POSTROOM_CLOUD'), problems);
  const connectionString = get('POSTROOM_STORAGE');
  const accountName = get('POSTROOM_STORAGE__accountName');
  const given = { queue: get('POSTROOM_STORAGE__queueServiceUri'), blob: get('POSTROOM_STORAGE__blobServiceUri'), table: get('POSTROOM_STORAGE__tableServiceUri') };
  const identity = accountName !== undefined || SERVICES.some((s) => given[s] !== undefined);
  const credential = parseCredential(get('POSTROOM_STORAGE__credential'), get('POSTROOM_STORAGE__clientId'), problems);

  let serviceUris: StorageServiceUris | undefined;
  if (connectionString && identity) {
    problems.push('POSTROOM_STORAGE: both a connection string and POSTROOM_STORAGE__* service settings are set; keep one (identity-based in Azure, a connection string locally)');
  } else if (connectionString && credential.kind !== 'default') {
    problems.push('POSTROOM_STORAGE__credential/__clientId: apply to identity-based storage only; remove them or replace the connection string with POSTROOM_STORAGE__*ServiceUri');
  } else if (!connectionString && !identity) {
    problems.push(
      'POSTROOM_STORAGE: missing (a storage connection string locally, or POSTROOM_STORAGE__queueServiceUri, __blobServiceUri and __tableServiceUri — or the shorthand __accountName — for identity-based access)',
    );
  } else if (identity) {
    serviceUris = resolveServiceUris(given, accountName, cloud, problems);
  }

  const name = (setting: string, def: string, re: RegExp, what: string): string => {
    const v = get(setting) ?? def;
    if (!re.test(v)) problems.push(`${setting}: "${v}" is not a valid ${what} name`);
    return v;
  };
  return {
    connectionString: identity ? undefined : connectionString,
    serviceUris,
    accountName: accountName ?? (serviceUris ? accountFromUri(serviceUris.blob) : undefined),
    cloud,
    credential,
    jobsQueue: name('POSTROOM_JOBS_QUEUE', 'postroom-jobs', QUEUE_RE, 'queue'),
    outputQueue: name('POSTROOM_OUTPUT_QUEUE', 'postroom-messages', QUEUE_RE, 'queue'),
    notifyQueue: name('POSTROOM_NOTIFY_QUEUE', 'postroom-notifications', QUEUE_RE, 'queue'),
    blobContainer: name('POSTROOM_BLOB_CONTAINER', 'postroom-messages', QUEUE_RE, 'blob container'),
    leaseContainer: name('POSTROOM_LEASE_CONTAINER', 'postroom-leases', QUEUE_RE, 'blob container'),
    stateTable: name('POSTROOM_STATE_TABLE', 'postroomstate', TABLE_RE, 'table'),
  };
}

function parseCloud(raw: string | undefined, problems: string[]): StorageCloudName {
  const v = (raw ?? 'public').toLowerCase();
  if (v in STORAGE_SUFFIXES) return v as StorageCloudName;
  problems.push(`POSTROOM_CLOUD: "${raw}" is not one of ${Object.keys(STORAGE_SUFFIXES).join(', ')}`);
  return 'public';
}

function parseCredential(kind: string | undefined, clientId: string | undefined, problems: string[]): StorageCredentialConfig {
  if (kind === undefined) {
    if (clientId !== undefined)
      problems.push('POSTROOM_STORAGE__clientId: set POSTROOM_STORAGE__credential=managedidentity too (the Functions host ignores a client id without it)');
    return { kind: 'default' };
  }
  if (kind.toLowerCase() !== 'managedidentity') {
    problems.push(`POSTROOM_STORAGE__credential: "${kind}" is not supported; use "managedidentity" (or leave it unset for DefaultAzureCredential locally)`);
    return { kind: 'default' };
  }
  if (clientId !== undefined && !GUID_RE.test(clientId)) {
    problems.push(`POSTROOM_STORAGE__clientId: "${clientId}" is not a GUID (the user-assigned identity's client id)`);
  }
  return clientId ? { kind: 'managedidentity', clientId } : { kind: 'managedidentity' };
}

/** Given URIs win; an account name fills in the rest. Without one, all three are required. */
function resolveServiceUris(
  given: Record<(typeof SERVICES)[number], string | undefined>,
  accountName: string | undefined,
  cloud: StorageCloudName,
  problems: string[],
): StorageServiceUris | undefined {
  if (accountName !== undefined && !ACCOUNT_RE.test(accountName)) {
    problems.push(`POSTROOM_STORAGE__accountName: "${accountName}" is not a storage account name (3-24 lower-case letters and digits)`);
  }
  const derived = accountName ? storageServiceUris(accountName, cloud) : undefined;
  const out: Partial<Record<(typeof SERVICES)[number], string>> = {};
  for (const s of SERVICES) {
    const setting = `POSTROOM_STORAGE__${s}ServiceUri`;
    const v = given[s] ?? derived?.[s];
    if (v === undefined) {
      problems.push(`${setting}: missing (Postroom uses queues, blobs and tables: set all three service URIs, or POSTROOM_STORAGE__accountName)`);
      continue;
    }
    let url: URL | undefined;
    try {
      url = new URL(v);
    } catch {
      problems.push(`${setting}: "${v}" is not a URI (e.g. https://<account>.${s}.${STORAGE_SUFFIXES[cloud]})`);
      continue;
    }
    if (url.protocol !== 'https:') {
      problems.push(`${setting}: "${v}" must be https (bearer tokens are never sent in clear text)`);
    }
    out[s] = v.replace(/\/+$/, '');
  }
  return out.blob && out.queue && out.table ? { blob: out.blob, queue: out.queue, table: out.table } : undefined;
}

function accountFromUri(uri: string): string | undefined {
  const m = /^https:\/\/([a-z0-9]{3,24})\.blob\./.exec(uri);
  return m?.[1];
}
