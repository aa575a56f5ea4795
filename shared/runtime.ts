import type { TokenCredential } from '@azure/core-auth';
import type { AppConfig, MailboxConfig, PostroomConfig } from './config/index.js';
import { loadConfig } from './config/index.js';
import { createAppTokenProvider, type TokenProvider } from './auth/token-provider.js';
import { protocolTokenGetter } from './auth/protocol-token.js';
import { createAppCredential, type AppCredential } from './auth/credentials.js';
import { createStorageClients, storageCredential, type StorageClients } from './storage.js';
import { createTableStateStore } from './checkpoint/table-state.js';
import { consoleLogger, type Logger } from './logger.js';
import type { StateStore } from './state.js';
import type { CreateSource, MailSource } from './source.js';
import type { SmtpSender, SmtpSenderOptions } from './notify/smtp.js';
import { trustedCas } from './tls.js';
import { fixContextOf } from './diagnose/context.js';

/**
 * Everything one process needs, built lazily once: config, clients, token
 * providers, and the SMTP sender pool. Use cases take the parts they need.
 */
export interface Runtime {
  /** Validated, frozen settings. */
  readonly config: PostroomConfig;
  /** The process logger (level from the settings); use cases take their invocation's logger instead where they have one. */
  readonly logger: Logger;
  /** The clock (injected in tests). */
  readonly now: () => Date;
  /** Blob containers, queues and tables, built on first use and shared by every use case. */
  readonly storage: StorageClients;
  /** Checkpoints, delivered-id sets, poll status, alert state. */
  readonly state: StateStore;
  /** The app's token provider (one per app per process). */
  tokens(app: AppConfig): TokenProvider;
  /** The app's credential behind its token provider (the same instance: a Key Vault read here is cached for it). */
  credential(app: AppConfig): AppCredential;
  /** The mailbox's source, picked by protocol; the token getter is checked for the protocol's role. */
  source(mailbox: MailboxConfig, logger?: Logger, hooks?: SourceHooks): Promise<MailSource>;
  /** The pooled sender for `from` over the app's SMTP endpoint (one per app and sender per process). */
  smtpSender(app: AppConfig, from: string, options?: SmtpSenderOptions): Promise<SmtpSender>;
  /** Closes pooled connections (SMTP); the Functions host calls it on `appTerminate`. */
  close(): void;
}

/** Observation hooks of a source (benchmarks). */
export interface SourceHooks {
  /** Called with every protocol command sent. */
  onCommand?: (command: string) => void;
}

/** Options of {@link createRuntime}. */
export interface CreateRuntimeOptions {
  /** Validated settings (`loadConfig`); their warnings are logged once here. */
  config: PostroomConfig;
  /** Process logger; default a console logger at the settings' level with prefix `postroom`. */
  logger?: Logger;
  /** Clock for statuses, messages and notifications; default `() => new Date()`. */
  now?: () => Date;
  /** Credential for Key Vault; default DefaultAzureCredential. */
  credential?: TokenCredential;
  /** Extra SecretClient options (tests: a local vault). */
  secretClientOptions?: Record<string, unknown>;
}

/** Each protocol folder's entry, loaded when its first mailbox is polled. */
const SOURCES: Readonly<Record<MailboxConfig['protocol'], () => Promise<CreateSource>>> = Object.freeze({
  imap: async () => (await import('./imap/index.js')).createSource,
  pop3: async () => (await import('./pop3/index.js')).createSource,
});

/**
 * Builds a runtime from validated settings.
 *
 * @example
 * ```ts
 * const runtime = createRuntime({ config: loadConfig(process.env) });
 * const result = await pollMailbox(runtime, runtime.config.mailboxes[0]);
 * ```
 */
export function createRuntime(o: CreateRuntimeOptions): Runtime {
  const { config } = o;
  const logger = o.logger ?? consoleLogger({ level: config.logLevel, prefix: 'postroom' });
  for (const w of config.warnings) logger.warn(w);
  const storage = createStorageClients(config.storage);
  const { tokens, credentialOf } = createAppAuth(config, o, logger);
  const senders = createSenderPool(config, tokens, logger);
  const state = createTableStateStore(() => storage.table(config.storage.stateTable));
  return {
    config,
    logger,
    now: o.now ?? (() => new Date()),
    storage,
    state,
    tokens,
    credential: credentialOf,
    async source(mailbox, log = logger, hooks = {}) {
      const createSource = await SOURCES[mailbox.protocol]();
      const subject = `mailbox ${mailbox.address} via ${mailbox.host}:${mailbox.port}`;
      return createSource(mailbox, {
        getToken: protocolTokenGetter(tokens(mailbox.app).getToken, { protocol: mailbox.protocol, app: mailbox.app, mailbox: mailbox.address, subject }),
        state,
        logger: log,
        ca: config.ca,
        batchSize: config.poll.batchSize,
        maxMessages: config.poll.maxMessagesPerPoll,
        connectTimeoutMs: config.poll.connectTimeoutMs,
        onCommand: hooks.onCommand,
      });
    },
    smtpSender: senders.get,
    close: senders.close,
  };
}

/** One credential and one token provider per app per process. */
function createAppAuth(config: PostroomConfig, o: CreateRuntimeOptions, logger: Logger) {
  const providers = new Map<string, TokenProvider>();
  const credentials = new Map<string, AppCredential>();
  const credentialOf = (app: AppConfig): AppCredential => {
    let c = credentials.get(app.name);
    if (!c) {
      const ca = trustedCas(config.ca);
      const clientOptions = o.secretClientOptions ?? (ca ? { tlsOptions: { ca } } : undefined);
      c = createAppCredential(app, { logger, credential: o.credential ?? storageCredential(config.storage), clientOptions });
      credentials.set(app.name, c);
    }
    return c;
  };
  const tokens = (app: AppConfig): TokenProvider => {
    let p = providers.get(app.name);
    if (!p) {
      p = createAppTokenProvider(app, { credential: credentialOf(app), logger, ca: config.ca });
      providers.set(app.name, p);
    }
    return p;
  };
  return { tokens, credentialOf };
}

/** One pooled SMTP sender per (app, sender, endpoint): Exchange counts connections per mailbox. */
function createSenderPool(config: PostroomConfig, tokens: (app: AppConfig) => TokenProvider, logger: Logger) {
  const pool = new Map<string, Promise<SmtpSender>>();
  return {
    get(app: AppConfig, from: string, options: SmtpSenderOptions = {}): Promise<SmtpSender> {
      const { host, port } = app.endpoints.smtp;
      const key = `${app.name}|${from.toLowerCase()}|${host}:${port}`;
      // The promise is stored, so that concurrent first sends share one pool.
      let sender = pool.get(key);
      if (!sender) {
        const subject = `${from} via SMTP ${host}:${port}`;
        const getToken = protocolTokenGetter(tokens(app).getToken, { protocol: 'smtp', app, mailbox: from, subject });
        sender = import('./notify/smtp.js').then((m) =>
          m.createSmtpSender(
            {
              endpoint: { host, port },
              from,
              getToken,
              ca: config.ca,
              connectTimeoutMs: config.poll.connectTimeoutMs,
              logger,
              fixContext: fixContextOf(app, { mailbox: from, from, protocol: 'smtp' }),
            },
            options,
          ),
        );
        sender.catch(() => pool.delete(key));
        pool.set(key, sender);
      }
      return sender;
    },
    close(): void {
      for (const s of pool.values())
        void s.then(
          (x) => x.close(),
          () => undefined,
        );
      pool.clear();
    },
  };
}

let processRuntime: Runtime | undefined;

/**
 * The process-wide runtime for the Functions host, from app settings.
 * Throws `ConfigInvalid` (listing every problem) before any work is done.
 */
export function getRuntime(): Runtime {
  processRuntime ??= createRuntime({ config: loadConfig(process.env) });
  return processRuntime;
}

/** Replaces the process runtime (local host, tests). */
export function setRuntime(r: Runtime | undefined): void {
  processRuntime = r;
}

/** Closes the process runtime's pooled connections, if one was built (host shutdown). */
export function closeRuntime(): void {
  processRuntime?.close();
}
