import type { TokenCredential } from '@azure/core-auth';
import type { AppConfig, MailboxConfig, PostroomConfig } from './config/index.js';
import { configWarnings, loadConfig } from './config/index.js';
import { createAppTokenProvider, type TokenProvider } from './auth/token-provider.js';
import { createAppCredential } from './auth/credentials.js';
import { createStorageClients, type StorageClients } from './storage.js';
import { createTableStateStore } from './checkpoint/table-state.js';
import { consoleLogger, type Logger } from './logger.js';
import type { StateStore } from './state.js';
import type { MailSource } from './source.js';
import { createImapSource } from './imap/source.js';
import { requireRole } from './auth/jwt.js';
import { PROTOCOL_ROLES } from './config/index.js';

/** Everything one process needs, built lazily once: config, clients, providers. */
export interface Runtime {
  readonly config: PostroomConfig;
  readonly logger: Logger;
  readonly now: () => Date;
  readonly storage: StorageClients;
  readonly state: StateStore;
  tokens(app: AppConfig): TokenProvider;
  source(mailbox: MailboxConfig, logger?: Logger, hooks?: SourceHooks): Promise<MailSource>;
}

export interface SourceHooks {
  onCommand?: (command: string) => void;
}

export interface CreateRuntimeOptions {
  config: PostroomConfig;
  logger?: Logger;
  now?: () => Date;
  /** Credential for Key Vault; default DefaultAzureCredential. */
  credential?: TokenCredential;
  /** Extra SecretClient options (tests: a local vault). */
  secretClientOptions?: Record<string, unknown>;
}

export function createRuntime(o: CreateRuntimeOptions): Runtime {
  const { config } = o;
  const logger = o.logger ?? consoleLogger({ level: config.logLevel, prefix: 'postroom' });
  for (const w of configWarnings(config)) logger.warn(w);
  const storage = createStorageClients(config.storage);
  const state = createTableStateStore(() => storage.table(config.storage.stateTable));
  const providers = new Map<string, TokenProvider>();
  const tokens = (app: AppConfig): TokenProvider => {
    let p = providers.get(app.name);
    if (!p) {
      const clientOptions = o.secretClientOptions ?? (config.ca ? { tlsOptions: { ca: config.ca } } : undefined);
      const credential = createAppCredential(app, { logger, credential: o.credential, clientOptions });
      p = createAppTokenProvider(app, { credential, logger, ca: config.ca });
      providers.set(app.name, p);
    }
    return p;
  };
  return {
    config,
    logger,
    now: o.now ?? (() => new Date()),
    storage,
    state,
    tokens,
    async source(mailbox, log = logger, hooks = {}) {
      const provider = tokens(mailbox.app);
      const getToken = async ({ renew }: { renew: boolean }) => (await provider.getToken({ renew })).token;
      if (mailbox.protocol === 'pop3') {
        const { createPop3Source } = await import('./pop3/source.js');
        const subject = `mailbox ${mailbox.address} via ${mailbox.host}:${mailbox.port}`;
        const popToken = async (opts: { renew: boolean }) => {
          const token = await getToken(opts);
          requireRole(token, PROTOCOL_ROLES.pop3, subject);
          return token;
        };
        return createPop3Source({
          mailbox: mailbox.address,
          host: mailbox.host,
          port: mailbox.port,
          tls: mailbox.tls,
          ca: config.ca,
          postAction: mailbox.postAction.kind === 'delete' ? 'delete' : 'none',
          getToken: popToken,
          maxMessageBytes: mailbox.maxMessageBytes,
          state,
          stateKey: { partition: mailbox.id, key: 'pop3-uidls' },
          batchSize: config.poll.batchSize,
          logger: log,
          connectTimeoutMs: config.poll.connectTimeoutMs,
        });
      }
      return createImapSource({
        mailbox,
        getToken,
        state,
        logger: log,
        ca: config.ca,
        batchSize: config.poll.batchSize,
        maxMessages: config.poll.maxMessagesPerPoll,
        connectTimeoutMs: config.poll.connectTimeoutMs,
        onCommand: hooks.onCommand,
      });
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
