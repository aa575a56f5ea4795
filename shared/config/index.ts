import { readFileSync } from 'node:fs';
import { Cron } from 'croner';
import { PostroomError } from '../errors.js';
import { parseLogLevel } from '../logger.js';
import { settingWarnings } from '../diagnose/settings.js';
import { parseApps } from './apps.js';
import { parseMailboxes } from './mailboxes.js';
import { AppSchema, issuePath } from './schema.js';
import { parseStorageSettings, STORAGE_SETTINGS } from './storage.js';
import type { AppConfig, PollSettings, PostroomConfig } from './types.js';

export { CLOUDS, DEFAULT_PORTS, PROTOCOL_ROLES } from './clouds.js';
export type { CloudName } from './clouds.js';
export { settingsJsonSchemas } from './schema.js';
export type { MailboxConfig, NotifyConfig, PollSettings, PostAction, PostroomConfig } from './types.js';
export type { AppConfig, AppCredentialConfig, CertificateSource, HostPort, SecretSource } from './apps.js';
export { parseStorageSettings, storageServiceUris, STORAGE_SUFFIXES } from './storage.js';
export type { StorageConfig, StorageCloudName, StorageCredentialConfig, StorageServiceUris } from './storage.js';

/** Settings Postroom reads; all prefixed POSTROOM_ (AZURE_* belong to DefaultAzureCredential). */
export const SETTINGS = Object.freeze([
  'POSTROOM_SCHEDULE',
  ...STORAGE_SETTINGS,
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
  'POSTROOM_POLL_DEADLINE_SECONDS',
  'POSTROOM_LOG_LEVEL',
] as const);

type Env = Readonly<Record<string, string | undefined>>;

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
  const sandbox = /^(1|true|yes)$/i.test(env.POSTROOM_SANDBOX ?? '');
  const schedule = parseSchedule(env, problems);
  const storage = parseStorageSettings(env, problems);
  const { ca, caFile } = readCaFile(env, problems);
  const apps = readApps(env, sandbox, problems, warnings);
  const mailboxes = parseMailboxes(readJson('POSTROOM_MAILBOXES', env.POSTROOM_MAILBOXES, problems), apps, problems);
  const logLevel = readLogLevel(env, problems);
  const poll = parsePoll(env, problems);
  warnings.push(...settingWarnings([...apps.values()], mailboxes).map((w) => w.message));
  if (problems.length) {
    throw new PostroomError('ConfigInvalid', `${problems.length} problem(s):\n- ${problems.join('\n- ')}`, { subject: 'Postroom settings' });
  }
  return deepFreeze({ schedule, sandbox, ca, caFile, storage, apps: [...apps.values()], mailboxes, poll, logLevel, warnings });
}

/** The NCRONTAB of the timer: six fields (seconds first), each within its range. */
function parseSchedule(env: Env, problems: string[]): string {
  const schedule = env.POSTROOM_SCHEDULE?.trim() || '0 */5 * * * *';
  const why = schedule.split(/\s+/).length !== 6 ? 'it needs six fields, seconds first' : cronError(schedule);
  if (why) problems.push(`POSTROOM_SCHEDULE: "${schedule}" is not a valid NCRONTAB expression (${why}; e.g. "0 */5 * * * *")`);
  return schedule;
}

function cronError(pattern: string): string | undefined {
  try {
    new Cron(pattern, { paused: true }).stop();
    return undefined;
  } catch (e) {
    return (e as Error).message;
  }
}

/** The log level: `POSTROOM_LOG_LEVEL`, read by the logger's one parser. */
function readLogLevel(env: Env, problems: string[]): PostroomConfig['logLevel'] {
  const raw = env.POSTROOM_LOG_LEVEL;
  const level = parseLogLevel(raw);
  if (raw?.trim() && !level) problems.push(`POSTROOM_LOG_LEVEL: "${raw.trim()}" is not one of debug, info, warn, error`);
  return level ?? 'info';
}

function parsePoll(env: Env, problems: string[]): PollSettings {
  const int = (name: string, def: number, min: number, max: number): number => {
    const raw = env[name];
    if (raw === undefined || raw === '') return def;
    const n = Number(raw);
    if (Number.isInteger(n) && n >= min && n <= max) return n;
    problems.push(`${name}: "${raw}" must be a whole number from ${min} to ${max}`);
    return def;
  };
  return {
    batchSize: int('POSTROOM_BATCH_SIZE', 50, 1, 1000),
    concurrency: int('POSTROOM_CONCURRENCY', 16, 1, 64),
    maxMessagesPerPoll: int('POSTROOM_MAX_MESSAGES_PER_POLL', 5000, 1, 1_000_000),
    leaseSeconds: int('POSTROOM_LEASE_SECONDS', 60, 15, 60),
    connectTimeoutMs: int('POSTROOM_CONNECT_TIMEOUT_MS', 15000, 100, 120000),
    deadlineSeconds: int('POSTROOM_POLL_DEADLINE_SECONDS', 240, 5, 3600),
  };
}

function readCaFile(env: Env, problems: string[]): { ca?: string; caFile?: string } {
  const caFile = env.POSTROOM_CA_FILE?.trim() || undefined;
  if (!caFile) return {};
  try {
    const ca = readFileSync(caFile, 'utf8');
    if (!ca.includes('-----BEGIN CERTIFICATE-----')) problems.push(`POSTROOM_CA_FILE: ${caFile} holds no PEM certificate`);
    return { ca, caFile };
  } catch (e) {
    problems.push(`POSTROOM_CA_FILE: cannot read ${caFile} (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
    return { caFile };
  }
}

/**
 * `POSTROOM_APPS` entry by entry: an entry that fails the schema is reported
 * and left out, and the others are still resolved, so that mailboxes naming
 * them are checked too and every problem is listed at once.
 */
function readApps(env: Env, sandbox: boolean, problems: string[], warnings: string[]): Map<string, AppConfig> {
  const raw = readJson('POSTROOM_APPS', env.POSTROOM_APPS, problems);
  if (raw === undefined) return new Map();
  if (!Array.isArray(raw) || raw.length === 0) {
    problems.push('POSTROOM_APPS: must be a JSON array of at least one app registration');
    return new Map();
  }
  const apps = raw.map((entry, i) => {
    const r = AppSchema.safeParse(entry);
    if (r.success) return r.data;
    for (const issue of r.error.issues) problems.push(`POSTROOM_APPS[${i}]${issuePath(issue.path)}: ${issue.message}`);
    return undefined;
  });
  return parseApps(apps, { sandbox, problems, warnings });
}

function readJson(setting: string, raw: string | undefined, problems: string[]): unknown {
  if (raw === undefined || raw.trim() === '') {
    problems.push(`${setting}: missing (a JSON array; see docs/settings.md)`);
    return undefined;
  }
  try {
    return JSON.parse(raw);
  } catch (e) {
    problems.push(`${setting}: not valid JSON (${(e as Error).message})`);
    return undefined;
  }
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object' && !Object.isFrozen(o) && !Buffer.isBuffer(o)) {
    Object.freeze(o);
    for (const v of Object.values(o as object)) deepFreeze(v);
  }
  return o;
}
