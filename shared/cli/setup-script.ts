import { parseArgs } from 'node:util';
import { renderSetupScript, type SetupScriptFormat } from '../setup/script.js';
import { CliUsageError, EXIT, type CliContext } from './context.js';

export const SETUP_SCRIPT_USAGE = `postroom setup-script [--format powershell|bash] [--function-app <name> --resource-group <group>]
  Prints the whole Exchange Online app-only setup for the configured apps and mailboxes (safe to re-run).`;

/** `postroom setup-script`: the generated admin script on stdout. */
export function setupScriptCommand(args: string[], ctx: CliContext): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      format: { type: 'string', default: 'powershell' },
      'function-app': { type: 'string' },
      'resource-group': { type: 'string' },
    },
    strict: true,
  });
  const format = values.format as SetupScriptFormat;
  if (format !== 'powershell' && format !== 'bash') return Promise.reject(new CliUsageError(`--format must be powershell or bash, not "${values.format}"`));
  const script = renderSetupScript(ctx.config(), { format, functionApp: values['function-app'], resourceGroup: values['resource-group'] });
  ctx.io.stdout.write(script);
  return Promise.resolve(EXIT.ok);
}
