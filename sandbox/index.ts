import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { silentLogger, type Logger } from '../shared/logger.js';
import { startAzurite, stopOrphanAzurite, type Azurite } from './azurite.js';
import { ensureCertificates, type SandboxCertificates } from './ca.js';
import { ensureDovecotInstalled, startDovecot, stopOrphanDovecot, type Dovecot } from './dovecot.js';
import { assertPortsFree, type NeededPort } from './ports.js';
import { startTokenEndpoint, type SandboxApp, type TokenEndpoint } from './token-endpoint.js';
import { startSmtpServer, type SmtpSandbox } from './smtp.js';

export const SANDBOX_TENANT = '72f988bf-0000-4000-8000-00000000c0de';
/** The sandbox's app registration: all three Exchange roles, admin-consented. */
export const SANDBOX_APP: SandboxApp = {
  name: 'postroom-sandbox',
  clientId: '0a5bd0c5-0000-4000-8000-00000000a001',
  clientSecret: 'sandbox-secret-value',
  roles: ['IMAP.AccessAsApp', 'POP.AccessAsApp', 'SMTP.SendAsApp'],
};
export const SANDBOX_MAILBOXES = Object.freeze({
  shared: 'shared-inbox@contoso.test',
  archive: 'invoices@contoso.test',
  pop: 'pop-inbox@contoso.test',
});
/** Where the sandbox's notifications go (captured by the SMTP server, never delivered). */
export const SANDBOX_OPS = 'ops@contoso.test';

export interface SandboxOptions {
  dir: string;
  /** Fixed ports (npm start) or free ones (tests) when omitted. */
  ports?: { token?: number; imap?: number; pop3?: number; smtp?: number; blob?: number; queue?: number; table?: number };
  apps?: SandboxApp[];
  grants?: Array<{ appId: string; mailbox: string }>;
  inMemoryStorage?: boolean;
  /**
   * Azurite in its own process group too (Dovecot always is): a terminal's
   * Ctrl-C then reaches only the caller, which stops its work before storage
   * goes. The caller must stop() the sandbox on every signal (npm start does).
   */
  detached?: boolean;
  tokenTtlSeconds?: number;
  logger?: Logger;
}

export interface Sandbox {
  certs: SandboxCertificates;
  token: TokenEndpoint;
  dovecot: Dovecot;
  azurite: Azurite;
  /** SMTP requiring STARTTLS + XOAUTH2 app tokens; captured mail is in `smtp.dir` as .eml. */
  smtp: SmtpSandbox;
  /** The Postroom app settings that point at this sandbox (merge your own over them). */
  env(mailboxes?: unknown[], app?: SandboxApp): Record<string, string>;
  stop(): Promise<void>;
}

/**
 * Stops what an earlier run of the sandbox in `dir` left running (a crash or
 * SIGKILL skips stop()): its Dovecot (master and children) and its Azurite,
 * found by their pid files and checked to be ours. Each one is logged.
 */
export async function stopSandboxOrphans(dir: string, logger: Logger = silentLogger): Promise<string[]> {
  const stopped: string[] = [];
  const dovecot = await stopOrphanDovecot(join(dir, 'dovecot'), logger);
  if (dovecot) stopped.push(`Dovecot (pid ${dovecot.pid}, ${dovecot.processes} process(es))`);
  const azurite = await stopOrphanAzurite(join(dir, 'azurite'));
  if (azurite !== undefined) {
    logger.warn(`found an Azurite left running by an earlier run (pid ${azurite}, data ${join(dir, 'azurite')}): stopped it`);
    stopped.push(`Azurite (pid ${azurite})`);
  }
  return stopped;
}

/** The fixed ports of a sandbox, named for a refusal. */
export function sandboxPorts(ports: NonNullable<SandboxOptions['ports']>): NeededPort[] {
  const names: Record<string, string> = {
    token: 'token endpoint (HTTPS)',
    imap: 'Dovecot IMAP',
    pop3: 'Dovecot POP3',
    smtp: 'SMTP',
    blob: 'Azurite blob',
    queue: 'Azurite queue',
    table: 'Azurite table',
  };
  return Object.entries(ports)
    .filter((e): e is [string, number] => e[1] !== undefined)
    .map(([k, port]) => ({ port, what: names[k] ?? k }));
}

/**
 * Starts the local stack: a generated CA, an Entra-like token endpoint
 * (oidc-provider over HTTPS), Azurite, and Dovecot checking app tokens and
 * per-app mailbox grants like Exchange Online.
 */
export async function startSandbox(o: SandboxOptions): Promise<Sandbox> {
  const log = o.logger ?? silentLogger;
  await mkdir(o.dir, { recursive: true });
  await ensureDovecotInstalled(log);
  // Before the port check: an orphan of ours holds exactly these ports.
  await stopSandboxOrphans(o.dir, log);
  await assertPortsFree(sandboxPorts(o.ports ?? {}));
  const certs = await ensureCertificates(join(o.dir, 'certs'));
  const apps = o.apps ?? [SANDBOX_APP];
  const started: Array<{ stop(): Promise<void> }> = [];
  try {
    const token = await startTokenEndpoint({ port: o.ports?.token, tenantId: SANDBOX_TENANT, apps, cert: certs.cert, key: certs.key, ttlSeconds: o.tokenTtlSeconds, logger: log });
    started.push(token);
    const grants = o.grants ?? Object.values(SANDBOX_MAILBOXES).map((mailbox) => ({ appId: SANDBOX_APP.clientId, mailbox }));
    const [azurite, dovecot, smtp] = await Promise.all([
      startAzurite({
        dir: join(o.dir, 'azurite'),
        blobPort: o.ports?.blob,
        queuePort: o.ports?.queue,
        tablePort: o.ports?.table,
        inMemory: o.inMemoryStorage,
        detached: o.detached,
      }).then((a) => {
        started.push(a);
        return a;
      }),
      startDovecot({
        dir: join(o.dir, 'dovecot'),
        imapPort: o.ports?.imap,
        pop3Port: o.ports?.pop3,
        certFile: certs.certFile,
        keyFile: certs.keyFile,
        issuer: token.issuer,
        kid: token.kid,
        publicKeyPem: token.publicKeyPem,
        tenantId: SANDBOX_TENANT,
        grants,
        log,
      }).then((d) => {
        started.push(d);
        return d;
      }),
      startSmtpServer({
        port: o.ports?.smtp,
        cert: certs.cert,
        key: certs.key,
        issuer: token.issuer,
        publicKeyPem: token.publicKeyPem,
        tenantId: SANDBOX_TENANT,
        grants,
        dir: join(o.dir, 'smtp-captured'),
        logger: log,
      }).then((s) => {
        started.push(s);
        return s;
      }),
    ]);
    return {
      certs,
      token,
      dovecot,
      azurite,
      smtp,
      env(mailboxes, app = apps[0]) {
        return {
          POSTROOM_SANDBOX: 'true',
          POSTROOM_STORAGE: azurite.connectionString,
          POSTROOM_CA_FILE: certs.caFile,
          POSTROOM_APPS: JSON.stringify([
            {
              name: 'sandbox',
              tenantId: SANDBOX_TENANT,
              clientId: app.clientId,
              secret: { value: app.clientSecret },
              authorityHost: token.authorityHost,
              imapHost: `127.0.0.1:${dovecot.imapPort}`,
              pop3Host: `127.0.0.1:${dovecot.pop3Port}`,
              smtpHost: `127.0.0.1:${smtp.port}`,
            },
          ]),
          POSTROOM_MAILBOXES: JSON.stringify(
            mailboxes ?? [
              { address: SANDBOX_MAILBOXES.shared, protocol: 'imap', notify: { to: [SANDBOX_OPS] } },
              { address: SANDBOX_MAILBOXES.archive, protocol: 'imap', postAction: 'move:Archive', notify: { to: [SANDBOX_OPS], digest: false, perMessage: true } },
              { address: SANDBOX_MAILBOXES.pop, protocol: 'pop3' },
            ],
          ),
        };
      },
      async stop() {
        await Promise.allSettled(started.reverse().map((s) => s.stop()));
      },
    };
  } catch (e) {
    await Promise.allSettled(started.reverse().map((s) => s.stop()));
    throw e;
  }
}
