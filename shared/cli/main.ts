import { parseArgs } from 'node:util';
import { isPostroomError } from '../errors.js';
import { CliUsageError, createCliContext, EXIT, type CliContext, type CliIo } from './context.js';

type Command = (args: string[], ctx: CliContext) => Promise<number>;

/** Commands, loaded on demand so `setup-script` never loads the storage SDKs. */
const COMMANDS: Record<string, { load: () => Promise<Command>; usage: () => Promise<string> }> = {
  'setup-script': { load: async () => (await import('./setup-script.js')).setupScriptCommand, usage: async () => (await import('./setup-script.js')).SETUP_SCRIPT_USAGE },
  poll: { load: async () => (await import('./poll.js')).pollCommand, usage: async () => (await import('./poll.js')).POLL_USAGE },
  status: { load: async () => (await import('./status.js')).statusCommand, usage: async () => (await import('./status.js')).STATUS_USAGE },
  poison: { load: async () => (await import('./poison.js')).poisonCommand, usage: async () => (await import('./poison.js')).POISON_USAGE },
  doctor: { load: async () => (await import('./doctor.js')).doctorCommand, usage: async () => (await import('./doctor.js')).DOCTOR_USAGE },
};

const USAGE = `Usage: postroom [--settings <local.settings.json>] [--verbose] <command> [options]

Commands:
  setup-script   the Exchange Online / Entra / Key Vault admin setup for the configured apps and mailboxes
  poll           poll the mailboxes once (--once) or repeatedly, with a summary
  status         last poll, result, lag, counts and last error of every mailbox
  poison         list, show, replay or purge the jobs and notifications poison queues
  doctor         layer-by-layer setup check (settings, Key Vault, token, mail servers, SMTP, storage)

Settings come from the environment; a setting absent there is read from local.settings.json's "Values"
(./local.settings.json, or --settings <file>), as \`func start\` does.
Exit codes: 0 ok, 1 failures, 2 bad settings or usage.
\`postroom <command> --help\` describes a command.`;

/**
 * Runs one command line and returns its exit code; never throws for bad
 * input (usage and settings problems are exit 2, printed to stderr).
 */
export async function main(argv: readonly string[], io: CliIo): Promise<number> {
  const split = splitCommand(argv);
  if (typeof split === 'string') {
    io.stderr.write(`postroom: ${split}\n\n${USAGE}\n`);
    return EXIT.usage;
  }
  const { name, rest, settings, verbose, help } = split;
  const ctx = createCliContext(io, { settingsFile: settings, verbose });
  if (name === 'help') {
    // `npx postroom --help` is npx's own help: `postroom help [command]` gets there too.
    const about = rest[0] ? COMMANDS[rest[0]] : undefined;
    ctx.out(about ? await about.usage() : USAGE);
    return rest[0] && !about ? EXIT.usage : EXIT.ok;
  }
  const command = name ? COMMANDS[name] : undefined;
  if (!command) {
    (name ? ctx.err : ctx.out)(name ? `postroom: unknown command "${name}"\n\n${USAGE}` : USAGE);
    return name || !help ? EXIT.usage : EXIT.ok;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    ctx.out(await command.usage());
    return EXIT.ok;
  }
  return run(command, rest, ctx);
}

/** Global options (before the command), the command's name, and its own arguments; a string on a usage error. */
function splitCommand(argv: readonly string[]): { name?: string; rest: string[]; settings?: string; verbose: boolean; help: boolean } | string {
  const options = { settings: { type: 'string' }, verbose: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } as const;
  const { tokens } = parseArgs({ args: [...argv], options, strict: false, allowPositionals: true, tokens: true });
  const first = tokens.find((t) => t.kind === 'positional');
  const globals = first ? argv.slice(0, first.index) : [...argv];
  try {
    const { values } = parseArgs({ args: globals, options, strict: true });
    return {
      name: first?.kind === 'positional' ? first.value : undefined,
      rest: first ? argv.slice(first.index + 1) : [],
      settings: values.settings,
      verbose: values.verbose === true,
      help: values.help === true,
    };
  } catch (e) {
    return (e as Error).message;
  }
}

async function run(command: (typeof COMMANDS)[string], args: string[], ctx: CliContext): Promise<number> {
  try {
    return await (
      await command.load()
    )(args, ctx);
  } catch (e) {
    if (isPostroomError(e, 'ConfigInvalid')) {
      ctx.err(`postroom: ${e.message}`);
      return EXIT.usage;
    }
    if (e instanceof CliUsageError || (e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      ctx.err(`postroom: ${(e as Error).message}\n\n${await command.usage()}`);
      return EXIT.usage;
    }
    if (e instanceof TypeError && /settings file|is not valid JSON/.test(e.message)) {
      ctx.err(`postroom: ${e.message}`);
      return EXIT.usage;
    }
    ctx.err(`postroom: ${isPostroomError(e) ? e.message : `failed: ${(e as Error)?.stack ?? String(e)}`}`);
    return EXIT.failed;
  }
}
