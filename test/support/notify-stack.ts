import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { ensureCertificates, type SandboxCertificates } from '../../sandbox/ca.js';
import { startTokenEndpoint, type TokenEndpoint } from '../../sandbox/token-endpoint.js';
import { startAzurite, type Azurite } from '../../sandbox/azurite.js';
import { startSmtpServer, type SmtpSandbox } from '../../sandbox/smtp.js';
import { freePort } from '../../sandbox/ports.js';
import { loadConfig } from '../../shared/config/index.js';
import { createRuntime, type Runtime } from '../../shared/runtime.js';
import { memoryLogger, type Logger } from '../../shared/logger.js';

export const TENANT = 'c0ffee00-0000-4000-8000-000000000041';
export const MAILBOX = 'inbox@contoso.test';
export const OPS = 'ops@contoso.test';
/** Has SMTP.SendAsApp and a grant on MAILBOX. */
export const APP_OK = { clientId: 'notify-app', clientSecret: 'notify-secret', roles: ['IMAP.AccessAsApp', 'SMTP.SendAsApp'] };
/** Has the role but no grant (no New-ServicePrincipal / mailbox permission). */
export const APP_NOGRANT = { clientId: 'nogrant-app', clientSecret: 'nogrant-secret', roles: ['SMTP.SendAsApp'] };
/** Lacks SMTP.SendAsApp (permission not added or not consented). */
export const APP_NOROLE = { clientId: 'norole-app', clientSecret: 'norole-secret', roles: ['IMAP.AccessAsApp'] };

export interface NotifyStack {
  dir: string;
  certs: SandboxCertificates;
  te: TokenEndpoint;
  az: Azurite;
  smtp: SmtpSandbox;
  /** A closed port: IMAP polls against it fail at once with ConnectionFailed. */
  deadPort: number;
  /** A fresh Runtime; first closes the SMTP pools of earlier ones and waits until the server saw them go. */
  runtime(o?: { app?: typeof APP_OK; notify?: Record<string, unknown>; env?: Record<string, string> }): Promise<{ runtime: Runtime; logger: Logger & { lines: string[] } }>;
  stop(): Promise<void>;
}

/** Token endpoint + Azurite + the SMTP sandbox, and Runtimes built from settings the way production builds them. */
export async function startNotifyStack(): Promise<NotifyStack> {
  const dir = await mkdtemp(join(tmpdir(), 'postroom-notify-'));
  const certs = await ensureCertificates(join(dir, 'certs'));
  const te = await startTokenEndpoint({ tenantId: TENANT, apps: [APP_OK, APP_NOGRANT, APP_NOROLE], cert: certs.cert, key: certs.key });
  const az = await startAzurite({ dir: join(dir, 'azurite'), inMemory: true });
  const smtp = await startSmtpServer({
    cert: certs.cert,
    key: certs.key,
    issuer: te.issuer,
    jwksUri: te.jwksUri,
    ca: certs.ca,
    grants: [{ appId: APP_OK.clientId, mailbox: MAILBOX }],
    dir: join(dir, 'smtp'),
  });
  const deadPort = await freePort();
  const runtimes: Runtime[] = [];
  return {
    dir,
    certs,
    te,
    az,
    smtp,
    deadPort,
    async runtime(o = {}) {
      // Tests run one after another: an earlier test's pooled connections must not hold the mailbox's 3 slots.
      for (const r of runtimes) r.close();
      for (const deadline = Date.now() + 5_000; smtp.activeConnections(MAILBOX) > 0 && Date.now() < deadline;) {
        await new Promise((r) => setTimeout(r, 10));
      }
      const app = o.app ?? APP_OK;
      const suffix = randomUUID().slice(0, 8);
      const env: Record<string, string> = {
        POSTROOM_SANDBOX: 'true',
        POSTROOM_STORAGE: az.connectionString,
        POSTROOM_CA_FILE: certs.caFile,
        POSTROOM_NOTIFY_QUEUE: `notify-${suffix}`,
        POSTROOM_JOBS_QUEUE: `jobs-${suffix}`,
        POSTROOM_STATE_TABLE: `state${suffix}`,
        POSTROOM_LEASE_CONTAINER: `leases-${suffix}`,
        POSTROOM_CONNECT_TIMEOUT_MS: '2000',
        POSTROOM_APPS: JSON.stringify([
          {
            name: 'main',
            tenantId: TENANT,
            clientId: app.clientId,
            secret: { value: app.clientSecret },
            authorityHost: te.authorityHost,
            smtpHost: `127.0.0.1:${smtp.port}`,
            imapHost: `127.0.0.1:${deadPort}`,
          },
        ]),
        POSTROOM_MAILBOXES: JSON.stringify([{ address: MAILBOX, notify: { to: [OPS], failureThreshold: 2, ...(o.notify ?? {}) } }]),
        ...(o.env ?? {}),
      };
      const logger = memoryLogger();
      const runtime = createRuntime({ config: loadConfig(env), logger });
      runtimes.push(runtime);
      return { runtime, logger };
    },
    async stop() {
      for (const r of runtimes) r.close();
      await smtp.stop();
      await az.stop();
      await te.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Takes every message off a queue, decoded from base64. */
export async function drainQueue(runtime: Runtime, name: string): Promise<Array<{ text: string; bytes: number }>> {
  const q = await runtime.storage.queue(name);
  const out: Array<{ text: string; bytes: number }> = [];
  for (;;) {
    const { receivedMessageItems } = await q.receiveMessages({ numberOfMessages: 32 });
    if (!receivedMessageItems.length) return out;
    for (const m of receivedMessageItems) {
      out.push({ text: m.messageText, bytes: Buffer.byteLength(m.messageText, 'utf8') });
      await q.deleteMessage(m.messageId, m.popReceipt);
    }
  }
}
