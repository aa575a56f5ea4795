import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { loadConfig, type PostroomConfig } from '../config/index.js';

/** Where the CLI's settings came from, for messages. */
export interface CliSettings {
  /** The merged settings: the environment over local.settings.json's `Values`. */
  readonly env: Readonly<Record<string, string | undefined>>;
  /** The local.settings.json read, when one was. */
  readonly file?: string;
}

/** Options of {@link readCliSettings}. */
export interface ReadCliSettingsOptions {
  /** The process environment (default `process.env`). */
  env?: Readonly<Record<string, string | undefined>>;
  /** local.settings.json to read; default `./local.settings.json` in `cwd`, skipped when absent. */
  file?: string;
  /** Directory that `file` (or the default local.settings.json) is resolved against; default `process.cwd()`. */
  cwd?: string;
}

/**
 * Settings as `func start` sees them: every variable set in the environment
 * wins; a setting absent from it comes from local.settings.json's `Values`.
 * A missing default file is fine; a named one that is missing or not JSON is
 * a usage error (`TypeError`).
 */
export function readCliSettings(o: ReadCliSettingsOptions = {}): CliSettings {
  const env = o.env ?? process.env;
  const file = resolve(o.cwd ?? process.cwd(), o.file ?? 'local.settings.json');
  if (!existsSync(file)) {
    if (o.file) throw new TypeError(`settings file ${file} does not exist`);
    return { env };
  }
  let values: Record<string, unknown>;
  try {
    values = (JSON.parse(readFileSync(file, 'utf8')) as { Values?: Record<string, unknown> }).Values ?? {};
  } catch (e) {
    throw new TypeError(`${file} is not valid JSON (${(e as Error).message})`);
  }
  const merged: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(values)) if (typeof v === 'string') merged[k] = v;
  for (const [k, v] of Object.entries(env)) if (v !== undefined) merged[k] = v;
  return { env: merged, file };
}

/** Loads and validates the merged settings; throws `ConfigInvalid` listing every problem. */
export function loadCliConfig(settings: CliSettings): PostroomConfig {
  return loadConfig(settings.env);
}
