/**
 * The Node worker's runtime settings as the deployment ships them (infra/azuredeploy.json):
 * `languageWorkers__node__arguments` (V8 flags the Functions host passes to the worker) and the
 * glibc allocator's `MALLOC_*` variables (read at process start, so they go in the environment,
 * not in flags). The memory figure runs its poll with them, so that it measures what ships.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** What a bench child needs to run as the deployed worker does. */
export interface WorkerSettings {
  /** Node/V8 flags, e.g. `--max-semi-space-size=4`. */
  execArgv: string[];
  /** Environment variables read at process start (`MALLOC_ARENA_MAX`). */
  env: Record<string, string>;
  /** `name=value` of each setting, for the report. */
  describe: string;
}

interface Template {
  parameters: Record<string, { defaultValue?: unknown }>;
  resources: { type: string; properties?: { siteConfig?: { appSettings?: { name: string; value: unknown }[] } } }[];
}

/** Reads the worker settings from the template at `root`/infra/azuredeploy.json (parameter defaults resolved). */
export function shippedWorkerSettings(root: string): WorkerSettings {
  const t = JSON.parse(readFileSync(join(root, 'infra', 'azuredeploy.json'), 'utf8')) as Template;
  const site = t.resources.find((r) => r.type === 'Microsoft.Web/sites' && r.properties?.siteConfig?.appSettings);
  if (!site) throw new Error('infra/azuredeploy.json: no Microsoft.Web/sites with app settings');
  const value = (v: unknown): string => {
    const m = /^\[parameters\('([^']+)'\)\]$/.exec(String(v));
    return String(m ? (t.parameters[m[1]]?.defaultValue ?? '') : v);
  };
  const settings = site.properties!.siteConfig!.appSettings!.filter((s) => s.name === 'languageWorkers__node__arguments' || s.name.startsWith('MALLOC_'));
  const args = settings.find((s) => s.name === 'languageWorkers__node__arguments');
  const env = Object.fromEntries(settings.filter((s) => s.name.startsWith('MALLOC_')).map((s) => [s.name, value(s.value)]));
  return {
    execArgv: args ? value(args.value).split(/\s+/).filter(Boolean) : [],
    env,
    describe: settings.map((s) => `${s.name}=${value(s.value)}`).join(', ') || 'none',
  };
}
