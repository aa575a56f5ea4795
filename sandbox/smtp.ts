import { randomUUID, createPublicKey, type KeyObject } from 'node:crypto';
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { request } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet } from 'jose';
import { SMTPServer } from 'smtp-server';
import { silentLogger, type Logger } from '../shared/logger.js';

/** An app that may authenticate as (send from) `mailbox`: the sandbox's New-ServicePrincipal + grant. */
export interface SmtpGrant {
  appId: string;
  mailbox: string;
}

/** The sandbox's `Add-RecipientPermission -Identity <from> -Trustee <mailbox> -AccessRights SendAs`. */
export interface SmtpSendAs {
  /** Limit the permission to one app; any app authenticated as `mailbox` otherwise. */
  appId?: string;
  mailbox: string;
  from: string;
}

/** A scripted reply: the next `times` connections get it at `stage` instead of the real answer. */
export interface SmtpFault {
  /** Default `auth`. */
  stage?: 'auth' | 'mail' | 'data';
  code: number;
  /** Reply text after the code, e.g. `4.3.2 Concurrent connections limit exceeded`. */
  message: string;
  /** Default 1. */
  times?: number;
}

/** Exchange Online's exact replies, for faults. */
export const EXCHANGE_SMTP_REPLIES = Object.freeze({
  concurrency: { code: 432, message: '4.3.2 Concurrent connections limit exceeded' },
  authDisabled: {
    code: 535,
    message: '5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information.',
  },
  authDisabledMailbox: {
    code: 535,
    message: '5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox. Visit https://aka.ms/smtp_auth_disabled for more information.',
  },
  authFailed: { code: 535, message: '5.7.3 Authentication unsuccessful' },
  sendAsDenied: {
    code: 554,
    message:
      '5.2.0 STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; Failed to process message due to a permanent exception with message Cannot submit message.',
  },
} as const satisfies Record<string, Omit<SmtpFault, 'stage' | 'times'>>);

export interface SmtpServerOptions {
  /** Port on 127.0.0.1; a free one when omitted. */
  port?: number;
  /** PEM certificate and key for STARTTLS. */
  cert: string;
  key: string;
  /** Issuer every accepted token must carry (the token endpoint's `issuer`). */
  issuer: string;
  /** Where to read signing keys; or give `publicKeyPem`. Fetched once, trusting `ca`. */
  jwksUri?: string;
  publicKeyPem?: string;
  /** CA (PEM) to trust when fetching `jwksUri`. */
  ca?: string;
  audience?: string;
  /** When set, a token whose `tid` differs is refused with 535 5.7.3. */
  tenantId?: string;
  grants: SmtpGrant[];
  sendAs?: SmtpSendAs[];
  failures?: SmtpFault[];
  /** Mailboxes with SMTP AUTH off (`Set-CASMailbox -SmtpClientAuthenticationDisabled $true`): AUTH gets 535 5.7.139. */
  smtpAuthDisabled?: string[];
  /** Apps whose service principal Exchange does not know: AUTH gets 535 5.7.3. */
  unregisteredApps?: string[];
  /** Exchange allows 3 concurrent SMTP connections per mailbox; the 4th authenticated one gets 432 4.3.2. */
  maxConnectionsPerMailbox?: number;
  /** Where captured messages are written as .eml; a fresh dir under os.tmpdir() when omitted (kept after stop). */
  dir?: string;
  logger?: Logger;
}

export interface CapturedMessage {
  id: string;
  /** The mailbox the app authenticated as (XOAUTH2 `user=`). */
  user: string;
  appId: string;
  mailFrom: string;
  rcptTo: string[];
  raw: Buffer;
  /** The .eml file under `dir`. */
  file: string;
  receivedAt: Date;
}

export interface SmtpSandbox {
  port: number;
  /** Where captured messages are written (one .eml each). */
  dir: string;
  messages(): CapturedMessage[];
  /** Queues more scripted replies (same meaning as the `failures` option). */
  fail(fault: SmtpFault): void;
  /** The sandbox's `Set-CASMailbox <mailbox> -SmtpClientAuthenticationDisabled`; effective for the next AUTH. */
  setSmtpAuthEnabled(mailbox: string, enabled: boolean): void;
  /** Registers (New-ServicePrincipal) or unregisters an app's service principal; effective for the next AUTH. */
  setServicePrincipal(appId: string, registered: boolean): void;
  /** AUTH attempts so far (successful or not), optionally for one mailbox. */
  authAttempts(mailbox?: string): number;
  /** Most authenticated connections seen at once for a mailbox. */
  peakConnections(mailbox: string): number;
  /** Authenticated connections open now for a mailbox. */
  activeConnections(mailbox: string): number;
  stop(): Promise<void>;
}

const ROLE = 'SMTP.SendAsApp';

interface SessionUser {
  mailbox: string;
  appId: string;
}

function replyError(code: number, message: string): Error & { responseCode: number } {
  return Object.assign(new Error(message), { responseCode: code });
}

function fetchJwks(uri: string, ca: string | undefined): Promise<JSONWebKeySet> {
  return new Promise((resolve, reject) => {
    const req = request(uri, { ca, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        try {
          if (res.statusCode !== 200) throw new Error(`JWKS ${uri} answered ${res.statusCode}`);
          resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')) as JSONWebKeySet);
        } catch (e) {
          // JSON.parse's SyntaxError or the status Error above.
          reject(e instanceof Error ? e : new Error(String(e)));
        }
      });
    });
    req.on('error', reject);
    req.end();
  });
}

/** The address in a From header (`"Name" <a@b>` or `a@b`), lower-cased. */
function headerFrom(raw: Buffer): string | undefined {
  const end = raw.indexOf('\r\n\r\n');
  const head = raw
    .subarray(0, end < 0 ? raw.length : end)
    .toString('utf8')
    .replace(/\r\n[ \t]+/g, ' ');
  const line = head.split('\r\n').find((l) => /^from:/i.test(l));
  if (!line) return undefined;
  const m = /<([^>]+)>/.exec(line) ?? /([^\s:<>,"]+@[^\s<>,"]+)/.exec(line.slice(5));
  return m?.[1]?.trim().toLowerCase();
}

/**
 * Starts an Exchange-Online-like submission server (smtp.office365.com:587)
 * on 127.0.0.1: plain on connect, STARTTLS required before AUTH, only
 * XOAUTH2 offered, app tokens verified (RS256, iss, aud, exp, the
 * SMTP.SendAsApp role) and the app's grant on the `user=` mailbox checked,
 * SendAs enforced on the envelope and header From. Accepted messages are
 * kept in memory and written as .eml files to `dir`.
 */
export async function startSmtpServer(o: SmtpServerOptions): Promise<SmtpSandbox> {
  const logger = o.logger ?? silentLogger;
  const audience = o.audience ?? 'https://outlook.office365.com';
  const maxPerMailbox = o.maxConnectionsPerMailbox ?? 3;
  if (!o.jwksUri && !o.publicKeyPem) throw new TypeError('startSmtpServer needs jwksUri or publicKeyPem');
  const key: KeyObject | ReturnType<typeof createLocalJWKSet> = o.publicKeyPem ? createPublicKey(o.publicKeyPem) : createLocalJWKSet(await fetchJwks(o.jwksUri!, o.ca));
  const dir = o.dir ?? (await mkdtemp(join(tmpdir(), 'postroom-smtp-')));
  await mkdir(dir, { recursive: true });

  const grants = new Set(o.grants.map((g) => `${g.appId} ${g.mailbox.toLowerCase()}`));
  const sendAs = (o.sendAs ?? []).map((s) => ({ ...s, mailbox: s.mailbox.toLowerCase(), from: s.from.toLowerCase() }));
  const authDisabled = new Set((o.smtpAuthDisabled ?? []).map((m) => m.toLowerCase()));
  const unregistered = new Set(o.unregisteredApps ?? []);
  const faults: Array<Required<SmtpFault>> = [];
  const fail = (f: SmtpFault) => faults.push({ stage: f.stage ?? 'auth', code: f.code, message: f.message, times: f.times ?? 1 });
  for (const f of o.failures ?? []) fail(f);

  const captured: CapturedMessage[] = [];
  const attempts = new Map<string, number>();
  const active = new Map<string, Set<string>>();
  const peak = new Map<string, number>();
  const sessionUsers = new Map<string, SessionUser>();
  // Each fault answers the next `times` arrivals at its stage (AUTH happens once per connection).
  const faultFor = (stage: SmtpFault['stage']): Required<SmtpFault> | undefined => {
    const next = faults.find((x) => x.times > 0 && x.stage === stage);
    if (next) next.times -= 1;
    return next;
  };

  const mayFrom = (user: SessionUser, from: string): boolean =>
    from === user.mailbox || sendAs.some((s) => s.mailbox === user.mailbox && s.from === from && (s.appId === undefined || s.appId === user.appId));

  const server = new SMTPServer({
    name: 'localhost',
    banner: 'Microsoft ESMTP MAIL Service ready (Postroom sandbox)',
    secure: false,
    key: o.key,
    cert: o.cert,
    minVersion: 'TLSv1.2',
    authMethods: ['XOAUTH2'],
    authOptional: false,
    hideSTARTTLS: false,
    allowInsecureAuth: false,
    // Exchange writes its own enhanced codes into the reply text (e.g. "535 5.7.3 ..."); smtp-server would add a second one.
    hideENHANCEDSTATUSCODES: true,
    hideDSN: true,
    size: 35 * 1024 * 1024,
    logger: false,
    disableReverseLookup: true,
    // Sandbox: on stop, give open sessions 1 s (not 30) before they get 421 and are closed.
    closeTimeout: 1000,
    onAuth(auth, session, cb) {
      const user = (auth.username ?? '').toLowerCase();
      attempts.set(user, (attempts.get(user) ?? 0) + 1);
      const f = faultFor('auth');
      if (f) return cb(replyError(f.code, f.message));
      const refuse = (why: string) => {
        logger.debug('smtp sandbox: authentication refused', { user, why });
        cb(replyError(EXCHANGE_SMTP_REPLIES.authFailed.code, EXCHANGE_SMTP_REPLIES.authFailed.message));
      };
      if (auth.method !== 'XOAUTH2' || !auth.accessToken) return refuse('not XOAUTH2');
      jwtVerify(auth.accessToken, key as KeyObject, { issuer: o.issuer, audience, algorithms: ['RS256'] }).then(
        ({ payload }) => {
          const roles = Array.isArray(payload.roles) ? (payload.roles as unknown[]) : [];
          const appId = typeof payload.appid === 'string' ? payload.appid : '';
          const tid = typeof payload.tid === 'string' ? payload.tid : '';
          if (o.tenantId && tid.toLowerCase() !== o.tenantId.toLowerCase()) return refuse(`token from tenant ${String(payload.tid)}`);
          if (!roles.includes(ROLE)) return refuse(`token lacks ${ROLE}`);
          if (authDisabled.has(user)) {
            const r = EXCHANGE_SMTP_REPLIES.authDisabledMailbox;
            return cb(replyError(r.code, r.message));
          }
          if (unregistered.has(appId)) return refuse(`app ${appId} has no service principal`);
          if (!grants.has(`${appId} ${user}`)) return refuse(`app ${appId} has no grant on ${user}`);
          const open = active.get(user) ?? new Set<string>();
          if (open.size >= maxPerMailbox) {
            return cb(replyError(EXCHANGE_SMTP_REPLIES.concurrency.code, EXCHANGE_SMTP_REPLIES.concurrency.message));
          }
          open.add(session.id);
          active.set(user, open);
          peak.set(user, Math.max(peak.get(user) ?? 0, open.size));
          const u: SessionUser = { mailbox: user, appId };
          sessionUsers.set(session.id, u);
          cb(null, { user: u });
        },
        (e: Error & { code?: string }) => refuse(e.code ?? e.message),
      );
    },
    onMailFrom(address, session, cb) {
      const f = faultFor('mail');
      if (f) return cb(replyError(f.code, f.message));
      const user = session.user as SessionUser;
      if (!mayFrom(user, address.address.toLowerCase())) {
        return cb(replyError(EXCHANGE_SMTP_REPLIES.sendAsDenied.code, EXCHANGE_SMTP_REPLIES.sendAsDenied.message));
      }
      cb();
    },
    onData(stream, session, cb) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('error', (e) => cb(e));
      stream.on('end', () => {
        const f = faultFor('data');
        if (f) return cb(replyError(f.code, f.message));
        const user = session.user as SessionUser;
        const raw = Buffer.concat(chunks);
        const from = headerFrom(raw);
        if (!from || !mayFrom(user, from)) {
          return cb(replyError(EXCHANGE_SMTP_REPLIES.sendAsDenied.code, EXCHANGE_SMTP_REPLIES.sendAsDenied.message));
        }
        const id = randomUUID();
        const file = join(dir, `${new Date().toISOString().replace(/[:.]/g, '-')}-${id}.eml`);
        const env = session.envelope;
        writeFile(file, raw).then(
          () => {
            captured.push({
              id,
              user: user.mailbox,
              appId: user.appId,
              mailFrom: env.mailFrom ? env.mailFrom.address : '',
              rcptTo: env.rcptTo.map((r) => r.address),
              raw,
              file,
              receivedAt: new Date(),
            });
            cb(null, `2.6.0 <${id}@localhost> [Hostname=localhost] Queued mail for delivery`);
          },
          (e: Error) => cb(e),
        );
      });
    },
    onClose(session) {
      const u = sessionUsers.get(session.id);
      if (u) active.get(u.mailbox)?.delete(session.id);
      sessionUsers.delete(session.id);
    },
  });
  // Without a listener, a probe that drops the connection mid-handshake crashes the process.
  server.on('error', (e) => logger.debug('smtp sandbox: connection error', { error: e }));

  await new Promise<void>((resolve, reject) => {
    server.server.once('error', reject);
    server.listen(o.port ?? 0, '127.0.0.1', () => {
      server.server.off('error', reject);
      resolve();
    });
  });
  const port = (server.server.address() as AddressInfo).port;
  logger.info(`smtp sandbox listening on 127.0.0.1:${port}; captured messages go to ${dir}`);

  let stopping: Promise<void> | undefined;
  return {
    port,
    dir,
    messages: () => [...captured],
    fail,
    setSmtpAuthEnabled(mailbox, enabled) {
      if (enabled) authDisabled.delete(mailbox.toLowerCase());
      else authDisabled.add(mailbox.toLowerCase());
    },
    setServicePrincipal(appId, registered) {
      if (registered) unregistered.delete(appId);
      else unregistered.add(appId);
    },
    authAttempts: (mailbox) => (mailbox === undefined ? [...attempts.values()].reduce((a, b) => a + b, 0) : (attempts.get(mailbox.toLowerCase()) ?? 0)),
    peakConnections: (mailbox) => peak.get(mailbox.toLowerCase()) ?? 0,
    activeConnections: (mailbox) => active.get(mailbox.toLowerCase())?.size ?? 0,
    stop() {
      stopping ??= new Promise<void>((resolve) => server.close(() => resolve()));
      return stopping;
    },
  };
}
