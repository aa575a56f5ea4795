import type { ImapFlow } from 'imapflow';
import type { MailboxConfig } from '../config/index.js';
import { isPostroomError, type PostroomError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { SourceDeps } from '../source.js';
import { trustContext } from '../tls.js';
import { droppedAfterLogin } from '../diagnose/connection.js';
import { mapImapError } from './errors.js';
import { applyLeanSession } from './lean-session.js';
import { limitThrottleWaits, throttledError, type ThrottleState } from './throttle.js';

/** One authenticated IMAP connection to one mailbox, and how to name it in errors. */
export interface ImapSession {
  /** The authenticated imapflow client, with the folder not yet opened. */
  readonly client: ImapFlow;
  /** The mailbox the session is for. */
  readonly mailbox: MailboxConfig;
  /** Logger of the session (the poll's). */
  readonly logger: Logger;
  /** `mailbox a@b (INBOX) via host:port`: the subject of every error. */
  readonly subject: string;
  /** Maps any imapflow/socket error to a coded PostroomError for this mailbox. */
  fail(e: unknown): PostroomError;
}

/** The subject line errors name for an IMAP mailbox. */
export function imapSubject(mailbox: MailboxConfig): string {
  return `mailbox ${mailbox.address} (${mailbox.folder}) via ${mailbox.host}:${mailbox.port}`;
}

/**
 * Connects and authenticates with XOAUTH2. A cached token may have been
 * revoked or have expired early: one refusal is retried with a fresh token.
 */
export async function openImapSession(mailbox: MailboxConfig, deps: SourceDeps, options: OpenImapSessionOptions = {}): Promise<ImapSession> {
  const subject = imapSubject(mailbox);
  const throttle: ThrottleState = {};
  const fail = (e: unknown) => (throttle.gaveUpMs !== undefined ? throttledError(throttle.gaveUpMs, subject, e) : mapImapError(e, subject));
  let client: ImapFlow;
  try {
    client = await connect(mailbox, deps, { renew: false, fail, throttle, ...options });
  } catch (e) {
    if (!isPostroomError(e, 'AuthenticationFailed')) throw e;
    deps.logger.info('IMAP authentication refused; retrying once with a fresh token', { mailbox: mailbox.address });
    client = await connect(mailbox, deps, { renew: true, fail, throttle, ...options });
  }
  // Every failure from here on is past login: a broken connection is a dropped session, not an unreachable server.
  return { client, mailbox, logger: deps.logger, subject, fail: (e) => droppedAfterLogin(fail(e), { established: true }) };
}

/** Options of {@link openImapSession}. */
export interface OpenImapSessionOptions {
  /** Aborts the connection attempt. */
  signal?: AbortSignal;
  /** How long a server back-off may be waited (the poll's time left); a longer one fails the session as `Throttled` at once. */
  backoffBudgetMs?: () => number;
}

interface ConnectOptions extends OpenImapSessionOptions {
  renew: boolean;
  fail: (e: unknown) => PostroomError;
  throttle: ThrottleState;
}

async function connect(mailbox: MailboxConfig, deps: SourceDeps, o: ConnectOptions): Promise<ImapFlow> {
  const { renew, signal } = o;
  const { token } = await deps.getToken({ renew, signal });
  const { ImapFlow } = await import('imapflow');
  const client = new ImapFlow({
    host: mailbox.host,
    port: mailbox.port,
    secure: mailbox.tls === 'implicit',
    doSTARTTLS: mailbox.tls === 'starttls' ? true : undefined,
    tls: { minVersion: 'TLSv1.2', rejectUnauthorized: true, ...trustContext(deps.ca) },
    auth: { user: mailbox.address, accessToken: token },
    logger: false,
    disableAutoIdle: true,
    connectionTimeout: deps.connectTimeoutMs,
    greetingTimeout: deps.connectTimeoutMs,
    socketTimeout: 5 * 60_000,
    clientInfo: { name: 'Postroom' },
  });
  client.on('error', (e: Error) => deps.logger.debug('imap connection error', { mailbox: mailbox.address, error: e }));
  // A poll needs neither the second ID, NAMESPACE, LIST nor LSUB: each is a round trip to Exchange.
  applyLeanSession(client, { folders: [mailbox.folder] });
  if (o.backoffBudgetMs) limitThrottleWaits(client, o.backoffBudgetMs, o.throttle);
  if (deps.onCommand) countCommands(client, deps.onCommand);
  // imapflow's connect takes no signal: closing the client is how an abort reaches it.
  const onAbort = () => client.close();
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    await client.connect();
    signal?.throwIfAborted();
    return client;
  } catch (e) {
    client.close();
    throw signal?.aborted ? (signal.reason as Error) : o.fail(e);
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}

/** imapflow has no command hook; every command goes through its `exec`. */
function countCommands(client: ImapFlow, onCommand: (command: string) => void): void {
  const c = client as unknown as { exec: (cmd: string, ...rest: unknown[]) => Promise<unknown> };
  const exec = c.exec.bind(client);
  c.exec = (cmd: string, ...rest: unknown[]) => {
    onCommand(cmd);
    return exec(cmd, ...rest);
  };
}
