import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import type { z } from 'zod';
import { PostroomError } from '../errors.js';
import { CLOUDS, DEFAULT_PORTS, type CloudName, type CloudPreset } from './clouds.js';
import { AppsSchema, MailboxesSchema, type AppSettings, type MailboxSettings } from './schema.js';
import { settingWarnings } from '../diagnose/settings.js';

export { CLOUDS, DEFAULT_PORTS, PROTOCOL_ROLES } from './clouds.js';
export type { CloudName } from './clouds.js';
export { settingsJsonSchemas } from './schema.js';

export type SecretSource =
  | { readonly kind: 'keyvault'; readonly vaultUrl: string; readonly name: string; readonly version?: string }
  | { readonly kind: 'plain'; readonly value: string };

export interface AppConfig {
  readonly name: string;
  readonly cloud: CloudName;
  readonly tenantId: string;
  readonly clientId: string;
  readonly secret: SecretSource;
  /** Login host, e.g. https://login.microsoftonline.com (or an override). */
  readonly authorityHost: string;
  /** `${authorityHost}/${tenantId}` */
  readonly authority: string;
  /** Exchange resource; tokens are asked for `${resource}/.default`. */
  readonly resource: string;
  readonly scope: string;
  readonly endpoints: { readonly imap: HostPort; readonly pop3: HostPort; readonly smtp: HostPort };
  /** The Enterprise application's (service principal's) object id, when configured: filled into fixes. */
  readonly servicePrincipalObjectId?: string;
}

export interface HostPort { readonly host: string; readonly port: number }

export type PostAction =
  | { readonly kind: 'none' }
  | { readonly kind: 'seen' }
  | { readonly kind: 'delete' }
  | { readonly kind: 'move'; readonly folder: string };

export interface NotifyConfig {
  readonly to: readonly string[];
  readonly from: string;
  readonly digest: boolean;
  readonly perMessage: boolean;
  readonly failureThreshold: number;
  /** Put before every notification subject (header-safe: no control characters). */
  readonly subjectPrefix: string;
}

export interface MailboxConfig {
  /** Stable id: `${protocol}:${address}/${folder}` (address lower-cased). */
  readonly id: string;
  /** A short hash of `id`, safe in blob names and table keys. */
  readonly key: string;
  readonly address: string;
  readonly app: AppConfig;
  readonly protocol: 'imap' | 'pop3';
  readonly host: string;
  readonly port: number;
  readonly tls: 'implicit' | 'starttls';
  readonly folder: string;
  readonly postAction: PostAction;
  readonly since?: Date;
  readonly maxMessageBytes?: number;
  readonly notify?: NotifyConfig;
}

export interface StorageConfig {
  /** A connection string, or undefined when an identity-based account is named. */
  readonly connectionString?: string;
  readonly accountName?: string;
  readonly jobsQueue: string;
  readonly outputQueue: string;
  readonly notifyQueue: string;
  readonly blobContainer: string;
  readonly leaseContainer: string;
  readonly stateTable: string;
}

export interface PostroomConfig {
  readonly schedule: string;
  readonly sandbox: boolean;
  /** Contents of the CA file named by POSTROOM_CA_FILE: added to TLS trust for every client. */
  readonly ca?: string;
  readonly caFile?: string;
  readonly storage: StorageConfig;
  readonly apps: readonly AppConfig[];
  readonly mailboxes: readonly MailboxConfig[];
  readonly poll: {
    readonly batchSize: number;
    readonly concurrency: number;
    readonly maxMessagesPerPoll: number;
    readonly leaseSeconds: number;
    readonly connectTimeoutMs: number;
  };
  readonly logLevel: 'debug' | 'info' | 'warn' | 'error';
}

/** Settings Postroom reads; all prefixed POSTROOM_ (AZURE_* belong to DefaultAzureCredential). */
export const SETTINGS = Object.freeze([
  'POSTROOM_SCHEDULE',
  'POSTROOM_STORAGE',
  'POSTROOM_STORAGE__accountName',
  'POSTROOM_APPS',
  'POSTROOM_MAILBOXES',
  'POSTROOM_JOBS_QUEUE',
  'POSTROOM_OUTPUT_QUEUE',
  'POSTROOM_NOTIFY_QUEUE',
  'POSTROOM_BLOB_CONTAINER',
  'POSTROOM_LEASE_CONTAINER',
  'POSTROOM_STATE_TABLE',
  'POSTROOM_CA_FILE',
  'POSTROOM_SANDBOX',
  'POSTROOM_BATCH_SIZE',
  'POSTROOM_CONCURRENCY',
  'POSTROOM_MAX_MESSAGES_PER_POLL',
  'POSTROOM_LEASE_SECONDS',
  'POSTROOM_CONNECT_TIMEOUT_MS',
  'POSTROOM_LOG_LEVEL',
] as const);

type Env = Readonly<Record<string, string | undefined>>;

const QUEUE_RE = /^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$/;
const TABLE_RE = /^[A-Za-z][A-Za-z0-9]{2,62}$/;
const NCRONTAB_RE = /^\s*(\S+\s+){5}\S+\s*$/;

/**
 * Reads, validates and freezes Postroom's settings. Every problem found is
 * reported at once in one `ConfigInvalid` error; nothing is done before.
 *
 * @example
 * ```ts
 * const config = loadConfig(process.env);
 * for (const m of config.mailboxes) console.log(m.id, m.host, m.port);
 * ```
 */
export function loadConfig(env: Env = process.env): PostroomConfig {
  const problems: string[] = [];
  const warnings: string[] = [];

  const schedule = env.POSTROOM_SCHEDULE?.trim() || '0 */5 * * * *';
  if (!NCRONTAB_RE.test(schedule)) problems.push(`POSTROOM_SCHEDULE: "${schedule}" is not a six-field NCRONTAB expression (e.g. "0 */5 * * * *")`);

  const sandbox = /^(1|true|yes)$/i.test(env.POSTROOM_SANDBOX ?? '');

  const int = (name: string, def: number, min: number, max: number): number => {
    const raw = env[name];
    if (raw === undefined || raw === '') return def;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min || n > max) {
      problems.push(`${name}: "${raw}" must be a whole number from ${min} to ${max}`);
      return def;
    }
    return n;
  };
  const name = (setting: string, def: string, re: RegExp, what: string): string => {
    const v = env[setting]?.trim() || def;
    if (!re.test(v)) problems.push(`${setting}: "${v}" is not a valid ${what} name`);
    return v;
  };

  const connectionString = env.POSTROOM_STORAGE?.trim() || undefined;
  const accountName = env.POSTROOM_STORAGE__accountName?.trim() || undefined;
  if (!connectionString && !accountName) {
    problems.push('POSTROOM_STORAGE: missing (a storage connection string, or set POSTROOM_STORAGE__accountName for identity-based access)');
  }
  const storage: StorageConfig = {
    connectionString,
    accountName,
    jobsQueue: name('POSTROOM_JOBS_QUEUE', 'postroom-jobs', QUEUE_RE, 'queue'),
    outputQueue: name('POSTROOM_OUTPUT_QUEUE', 'postroom-messages', QUEUE_RE, 'queue'),
    notifyQueue: name('POSTROOM_NOTIFY_QUEUE', 'postroom-notifications', QUEUE_RE, 'queue'),
    blobContainer: name('POSTROOM_BLOB_CONTAINER', 'postroom-messages', QUEUE_RE, 'blob container'),
    leaseContainer: name('POSTROOM_LEASE_CONTAINER', 'postroom-leases', QUEUE_RE, 'blob container'),
    stateTable: name('POSTROOM_STATE_TABLE', 'postroomstate', TABLE_RE, 'table'),
  };

  let ca: string | undefined;
  const caFile = env.POSTROOM_CA_FILE?.trim() || undefined;
  if (caFile) {
    try {
      ca = readFileSync(caFile, 'utf8');
      if (!ca.includes('-----BEGIN CERTIFICATE-----')) problems.push(`POSTROOM_CA_FILE: ${caFile} holds no PEM certificate`);
    } catch (e) {
      problems.push(`POSTROOM_CA_FILE: cannot read ${caFile} (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
    }
  }

  const apps = parseJson('POSTROOM_APPS', env.POSTROOM_APPS, AppsSchema, problems) ?? [];
  const mailboxesRaw = parseJson('POSTROOM_MAILBOXES', env.POSTROOM_MAILBOXES, MailboxesSchema, problems) ?? [];

  const appConfigs = new Map<string, AppConfig>();
  apps.forEach((a, i) => {
    if (appConfigs.has(a.name)) problems.push(`POSTROOM_APPS[${i}].name: "${a.name}" is used twice`);
    if ('value' in a.secret && !sandbox) {
      problems.push(`POSTROOM_APPS[${i}].secret: a plain secret value is accepted only for the local sandbox (POSTROOM_SANDBOX=true); use { "vaultUrl", "name" }`);
    } else if ('value' in a.secret) {
      warnings.push(`app "${a.name}" uses a plain secret value from the settings (sandbox only)`);
    }
    appConfigs.set(a.name, resolveApp(a, i, problems));
  });

  const ids = new Set<string>();
  const mailboxes: MailboxConfig[] = [];
  mailboxesRaw.forEach((m, i) => {
    const at = `POSTROOM_MAILBOXES[${i}]`;
    let app: AppConfig | undefined;
    if (m.app !== undefined) {
      app = appConfigs.get(m.app);
      if (!app) problems.push(`${at}.app: no app named "${m.app}" in POSTROOM_APPS (have: ${[...appConfigs.keys()].join(', ') || 'none'})`);
    } else if (appConfigs.size === 1) {
      app = [...appConfigs.values()][0];
    } else if (appConfigs.size > 1) {
      problems.push(`${at}.app: required when POSTROOM_APPS has more than one app`);
    }
    const postAction = parsePostAction(m.postAction);
    if (m.protocol === 'pop3') {
      if (m.folder !== 'INBOX') problems.push(`${at}.folder: POP3 sees the Inbox only; remove "folder" or use imap`);
      if (postAction.kind === 'seen' || postAction.kind === 'move') problems.push(`${at}.postAction: POP3 supports only 'none' or 'delete'`);
    }
    if (postAction.kind === 'move' && postAction.folder === m.folder) problems.push(`${at}.postAction: moving to the polled folder itself would loop`);
    if (!app) return;
    const endpoint = app.endpoints[m.protocol];
    const id = `${m.protocol}:${m.address.toLowerCase()}/${m.folder}`;
    if (ids.has(id)) problems.push(`${at}: ${id} is configured twice`);
    ids.add(id);
    mailboxes.push(
      Object.freeze({
        id,
        key: createHash('sha256').update(id).digest('hex').slice(0, 24),
        address: m.address,
        app,
        protocol: m.protocol,
        host: m.host ?? endpoint.host,
        port: m.port ?? (m.host ? DEFAULT_PORTS[m.protocol] : endpoint.port),
        tls: m.tls,
        folder: m.folder,
        postAction,
        since: m.since ? new Date(m.since) : undefined,
        maxMessageBytes: m.maxMessageBytes,
        notify: m.notify
          ? Object.freeze({ ...m.notify, to: Object.freeze([...m.notify.to]), from: m.notify.from ?? m.address })
          : undefined,
      }),
    );
  });

  const logLevel = (env.POSTROOM_LOG_LEVEL?.trim() || 'info') as PostroomConfig['logLevel'];
  if (!['debug', 'info', 'warn', 'error'].includes(logLevel)) problems.push(`POSTROOM_LOG_LEVEL: "${logLevel}" is not one of debug, info, warn, error`);

  const poll = {
    batchSize: int('POSTROOM_BATCH_SIZE', 50, 1, 1000),
    concurrency: int('POSTROOM_CONCURRENCY', 16, 1, 64),
    maxMessagesPerPoll: int('POSTROOM_MAX_MESSAGES_PER_POLL', 5000, 1, 1_000_000),
    leaseSeconds: int('POSTROOM_LEASE_SECONDS', 60, 15, 60),
    connectTimeoutMs: int('POSTROOM_CONNECT_TIMEOUT_MS', 15000, 100, 120000),
  };

  warnings.push(...settingWarnings([...appConfigs.values()], mailboxes).map((w) => w.message));
  if (problems.length) {
    throw new PostroomError('ConfigInvalid', `${problems.length} problem(s):\n- ${problems.join('\n- ')}`, { subject: 'Postroom settings' });
  }
  return deepFreeze({
    schedule,
    sandbox,
    ca,
    caFile,
    storage,
    apps: [...appConfigs.values()],
    mailboxes,
    poll,
    logLevel,
    warnings,
  }) as PostroomConfig;
}

/** Warnings gathered while loading (e.g. a plain sandbox secret). */
export function configWarnings(config: PostroomConfig): readonly string[] {
  return (config as PostroomConfig & { warnings?: string[] }).warnings ?? [];
}

function parseJson<T extends z.ZodType>(setting: string, raw: string | undefined, schema: T, problems: string[]): z.infer<T> | undefined {
  if (raw === undefined || raw.trim() === '') {
    problems.push(`${setting}: missing (a JSON array; see docs/settings.md)`);
    return undefined;
  }
  let data: unknown;
  try {
    data = JSON.parse(raw);
  } catch (e) {
    problems.push(`${setting}: not valid JSON (${(e as Error).message})`);
    return undefined;
  }
  const result = schema.safeParse(data);
  if (!result.success) {
    for (const issue of result.error.issues) {
      const path = issue.path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`)).join('');
      problems.push(`${setting}${path}: ${issue.message}`);
    }
    return undefined;
  }
  return result.data;
}

function resolveApp(a: AppSettings, i: number, problems: string[]): AppConfig {
  const preset: CloudPreset = CLOUDS[a.cloud];
  const authorityHost = (a.authorityHost ?? preset.loginHost).replace(/\/+$/, '');
  const resource = (a.resource ?? preset.resource).replace(/\/+$/, '');
  const ep = (v: string | undefined, host: string, port: number, field: string): HostPort => {
    if (!v) return { host, port };
    const [h, p] = v.split(':');
    const n = p === undefined ? port : Number(p);
    if (!(n >= 1 && n <= 65535)) problems.push(`POSTROOM_APPS[${i}].${field}: bad port in "${v}"`);
    return { host: h!, port: n };
  };
  const secret: SecretSource =
    'value' in a.secret
      ? { kind: 'plain', value: a.secret.value }
      : { kind: 'keyvault', vaultUrl: a.secret.vaultUrl.replace(/\/+$/, ''), name: a.secret.name, version: a.secret.version };
  return {
    name: a.name,
    cloud: a.cloud,
    tenantId: a.tenantId,
    clientId: a.clientId,
    secret,
    authorityHost,
    authority: `${authorityHost}/${a.tenantId}`,
    resource,
    scope: `${resource}/.default`,
    endpoints: {
      imap: ep(a.imapHost, preset.imapHost, DEFAULT_PORTS.imap, 'imapHost'),
      pop3: ep(a.pop3Host, preset.pop3Host, DEFAULT_PORTS.pop3, 'pop3Host'),
      smtp: ep(a.smtpHost, preset.smtpHost, DEFAULT_PORTS.smtp, 'smtpHost'),
    },
    ...(a.servicePrincipalObjectId ? { servicePrincipalObjectId: a.servicePrincipalObjectId } : {}),
  };
}

function parsePostAction(v: string): PostAction {
  if (v.startsWith('move:')) return { kind: 'move', folder: v.slice(5) };
  return { kind: v as 'none' | 'seen' | 'delete' };
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object' && !Object.isFrozen(o) && !Buffer.isBuffer(o)) {
    Object.freeze(o);
    for (const v of Object.values(o as object)) deepFreeze(v);
  }
  return o;
}
