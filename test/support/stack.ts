/**
 * The real local stack for integration suites: one sandbox (token endpoint,
 * Azurite, Dovecot) per suite on free ports, extra apps for negative cases,
 * the Key Vault stand-in, and helpers to build runtimes and read results.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QueueClient } from '@azure/storage-queue';
import { BlobServiceClient } from '@azure/storage-blob';
import { loadConfig } from '../../shared/config/index.js';
import { memoryLogger } from '../../shared/logger.js';
import { createRuntime, type Runtime } from '../../shared/runtime.js';
import { resetTokenProviders } from '../../shared/auth/token-provider.js';
import { startSandbox, SANDBOX_APP, SANDBOX_TENANT, type Sandbox } from '../../sandbox/index.js';
import type { SandboxApp } from '../../sandbox/token-endpoint.js';
import { startKeyVault, type KeyVaultEndpoint } from './keyvault-endpoint.js';

export const NO_IMAP_APP: SandboxApp = { name: 'pop-only', clientId: '0a5bd0c5-0000-4000-8000-00000000a002', clientSecret: 'pop-only-secret', roles: ['POP.AccessAsApp'] };
export const NO_POP_APP: SandboxApp = { name: 'imap-only', clientId: '0a5bd0c5-0000-4000-8000-00000000a003', clientSecret: 'imap-only-secret', roles: ['IMAP.AccessAsApp'] };

export interface Stack {
  sandbox: Sandbox;
  vault: KeyVaultEndpoint;
  dir: string;
  /** A runtime over the sandbox for the given mailboxes (settings merged over the sandbox's). */
  runtime(mailboxes: unknown[], opts?: { env?: Record<string, string>; app?: SandboxApp; keyVault?: boolean }): Promise<Runtime & { log: ReturnType<typeof memoryLogger> }>;
  /** Decoded JSON messages now in a queue (peeked, not removed). */
  queueMessages(queue: string): Promise<any[]>;
  blobBytes(container: string, name: string): Promise<Buffer>;
  blobProperties(container: string, name: string): Promise<{ contentType?: string; contentLength?: number }>;
  stop(): Promise<void>;
}

/** Every mailbox any suite uses is granted to the main app; the ungranted one is not. */
export const MAILBOXES = {
  happy: 'shared-inbox@contoso.test',
  incr: 'incremental@contoso.test',
  uidv: 'resync@contoso.test',
  seen: 'seen@contoso.test',
  move: 'move@contoso.test',
  del: 'delete@contoso.test',
  crash: 'crash@contoso.test',
  race: 'race@contoso.test',
  vault: 'vault@contoso.test',
  neg: 'negative@contoso.test',
  ungranted: 'ceo@contoso.test',
  pop: 'pop-inbox@contoso.test',
  popdel: 'pop-delete@contoso.test',
  popcrash: 'pop-crash@contoso.test',
  proxy: 'proxy@contoso.test',
  proxyDrop: 'proxy-drop@contoso.test',
  poison: 'poison@contoso.test',
};

export async function startStack(): Promise<Stack> {
  const dir = await mkdtemp(join(tmpdir(), 'postroom-test-'));
  const grants = Object.entries(MAILBOXES)
    .filter(([k]) => k !== 'ungranted')
    .flatMap(([, mailbox]) => [SANDBOX_APP, NO_IMAP_APP, NO_POP_APP].map((a) => ({ appId: a.clientId, mailbox })));
  const sandbox = await startSandbox({ dir, apps: [SANDBOX_APP, NO_IMAP_APP, NO_POP_APP], grants, inMemoryStorage: true });
  const vault = await startKeyVault({
    cert: sandbox.certs.cert,
    key: sandbox.certs.key,
    authority: sandbox.token.authority,
    publicKeyPem: sandbox.token.publicKeyPem,
    secrets: { 'postroom-client-secret': SANDBOX_APP.clientSecret },
  });
  const conn = sandbox.azurite.connectionString;
  return {
    sandbox,
    vault,
    dir,
    async runtime(mailboxes, opts = {}) {
      resetTokenProviders();
      const env: Record<string, string> = { ...sandbox.env(mailboxes, opts.app), POSTROOM_CONCURRENCY: '4', ...opts.env };
      let credential;
      if (opts.keyVault) {
        const apps = JSON.parse(env.POSTROOM_APPS);
        apps[0].secret = { vaultUrl: vault.vaultUrl, name: 'postroom-client-secret' };
        env.POSTROOM_APPS = JSON.stringify(apps);
        const { ClientSecretCredential } = await import('@azure/identity');
        // The Function App's managed identity in Azure; here an app of the local issuer.
        credential = new ClientSecretCredential(SANDBOX_TENANT, SANDBOX_APP.clientId, SANDBOX_APP.clientSecret, {
          authorityHost: sandbox.token.authorityHost,
          disableInstanceDiscovery: true,
          tlsOptions: { ca: sandbox.certs.ca },
        });
      }
      const log = memoryLogger();
      const config = loadConfig(env);
      const rt = createRuntime({
        config,
        logger: log,
        credential,
        secretClientOptions: { tlsOptions: { ca: sandbox.certs.ca }, disableChallengeResourceVerification: true },
      });
      return Object.assign(rt, { log });
    },
    async queueMessages(queue) {
      const q = new QueueClient(conn, queue);
      if (!(await q.exists())) return [];
      // Peek is non-destructive but shows at most 32: suites keep their queues smaller.
      const { peekedMessageItems } = await q.peekMessages({ numberOfMessages: 32 });
      if (peekedMessageItems.length === 32) throw new Error(`queue ${queue} has 32+ messages: too many to peek`);
      return peekedMessageItems.map((m) => JSON.parse(Buffer.from(m.messageText, 'base64').toString('utf8')));
    },
    async blobBytes(container, name) {
      return BlobServiceClient.fromConnectionString(conn).getContainerClient(container).getBlobClient(name).downloadToBuffer();
    },
    async blobProperties(container, name) {
      const p = await BlobServiceClient.fromConnectionString(conn).getContainerClient(container).getBlobClient(name).getProperties();
      return { contentType: p.contentType, contentLength: p.contentLength };
    },
    async stop() {
      await vault.stop().catch(() => undefined);
      await sandbox.stop();
      await rm(dir, { recursive: true, force: true }).catch(() => undefined);
    },
  };
}
