import { isIP } from 'node:net';
import type * as Nodemailer from 'nodemailer';
import type { Transporter } from 'nodemailer';
import type { HostPort } from '../config/index.js';
import { withContext, type FixContext, type PostroomError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { AccessToken, TokenGetter } from '../auth/token.js';
import { trustContext } from '../tls.js';
import { createRateLimiter, type RateLimiter } from './rate-limit.js';
import { CONCURRENCY_BACKOFF_MS, mapSmtpError } from './smtp-errors.js';

export { mapSmtpError } from './smtp-errors.js';

/** Exchange Online: at most 3 concurrent SMTP connections per mailbox. */
export const SMTP_MAX_CONNECTIONS = 3;
/** Exchange Online: at most 30 messages a minute per mailbox. */
export const SMTP_MESSAGES_PER_MINUTE = 30;

/** Tuning of one sender; applies when the sender is first made. */
export interface SmtpSenderOptions {
  /** Pooled connections per sender in this process; at most 3 (Exchange's limit). */
  maxConnections?: number;
  /** Messages per minute per sender in this process; at most 30. */
  messagesPerMinute?: number;
  /** Close the pool once no send has been in flight this long, so idle connections do not hold the mailbox's 3 slots. Default 5 s. */
  idleTimeoutMs?: number;
}

/** What a sender is built from (the runtime provides it). */
export interface SmtpSenderDeps {
  /** The app's SMTP endpoint (port 587, STARTTLS). */
  readonly endpoint: HostPort;
  /** The sender mailbox: XOAUTH2 `user=` and From. */
  readonly from: string;
  /** The app's token getter, checked for SMTP.SendAsApp. */
  readonly getToken: TokenGetter;
  /** Extra CA (PEM) added to the default trust. */
  readonly ca?: string;
  /** Milliseconds before the TCP connect to the SMTP server is given up (the greeting then has 30 s of its own); the runtime passes POSTROOM_CONNECT_TIMEOUT_MS. */
  readonly connectTimeoutMs: number;
  /** Default logger of sends (pool errors at debug level); a send may pass its own. */
  readonly logger: Logger;
  /** The app's ids, filled into the fixes of errors (issue 12). */
  readonly fixContext?: FixContext;
}

/** One message to send. */
export interface OutgoingMail {
  /** Recipient addresses; all go in the To header of one message. */
  to: readonly string[];
  /** Subject line; must already be header-safe (one line, no control characters). */
  subject: string;
  /** Plain-text body. */
  text: string;
  /** HTML body; every untrusted value in it must already be escaped. */
  html: string;
  /** Without angle brackets, e.g. `<uuid>@postroom`. */
  messageId: string;
  /** Extra headers, e.g. `Auto-Submitted: auto-generated`; values must be header-safe. */
  headers?: Record<string, string>;
}

/** A message the server accepted. */
export interface SendResult {
  /** The Message-ID as nodemailer reports it (with angle brackets), for finding the message in the recipient's mailbox. */
  messageId: string;
  /** The server's final reply. */
  response: string;
  /** 2 when the first try was refused at AUTH and the fresh-token retry sent it. */
  tries: number;
}

/** One pooled, paced SMTP sender for one sender mailbox (XOAUTH2 `user=` and From). */
export interface SmtpSender {
  /** The sender mailbox: XOAUTH2 `user=` and From address of every message. */
  readonly from: string;
  /** Sends one message, paced and pooled; refreshes the token and tries once more when AUTH is refused. Throws a mapped PostroomError. */
  send(mail: OutgoingMail, options?: { signal?: AbortSignal; logger?: Logger }): Promise<SendResult>;
  /** Closes the pooled connections; a later send opens a new pool. */
  /**
   * Connects as `send` would (EHLO, STARTTLS, AUTH XOAUTH2 as `from`) on a
   * connection of its own, sends nothing, and quits (the doctor). Refused
   * once, it retries with a fresh token, as `send` does.
   */
  verify(options?: { signal?: AbortSignal }): Promise<{ tries: number }>;
  /**
   *
   */
  close(): void;
}

/**
 * A sender for one mailbox: a nodemailer pool of at most 3 connections and
 * a 30-a-minute pacer. Across instances nothing here coordinates: the
 * Functions host bounds it (host.json queues.batchSize x instance count); a
 * 432 4.3.2 beyond that is backed off and retried through the queue.
 */
export async function createSmtpSender(deps: SmtpSenderDeps, options: SmtpSenderOptions = {}): Promise<SmtpSender> {
  const { from, endpoint } = deps;
  const subject = `${from} via SMTP ${endpoint.host}:${endpoint.port}`;
  const perMinute = Math.max(1, Math.min(options.messagesPerMinute ?? SMTP_MESSAGES_PER_MINUTE, SMTP_MESSAGES_PER_MINUTE));
  const limiter: RateLimiter = createRateLimiter({ limit: perMinute, windowMs: 60_000 });
  const pool = await createIdlePool(deps, options);
  return {
    from,
    async send(mail, o = {}) {
      const log = o.logger ?? deps.logger;
      for (let tries = 1; ; tries++) {
        pool.token = await deps.getToken({ renew: tries > 1, signal: o.signal });
        await limiter.acquire(o.signal);
        try {
          const info = await pool.send(toNodemailer(from, mail));
          return { messageId: info.messageId, response: info.response, tries };
        } catch (e) {
          // Authenticated as `from` and sent as `from`: the fix says so, with the app's real ids.
          const err: PostroomError = deps.fixContext ? withContext<PostroomError>(mapSmtpError(e, subject), deps.fixContext) : mapSmtpError(e, subject);
          if (err.code === 'AuthenticationFailed' && tries === 1) {
            log.warn('SMTP refused the app token; retrying once with a fresh one', { sender: from, reply: err.responseText });
            continue;
          }
          if (err.code === 'SmtpConcurrencyLimit') limiter.pause(err.retryAfterMs ?? CONCURRENCY_BACKOFF_MS);
          throw err;
        }
      }
    },
    async verify(o = {}) {
      for (let tries = 1; ; tries++) {
        const token = await deps.getToken({ renew: tries > 1, signal: o.signal });
        try {
          await verifyOnce(deps, options, token);
          return { tries };
        } catch (e) {
          const err = deps.fixContext ? withContext<PostroomError>(mapSmtpError(e, subject), deps.fixContext) : mapSmtpError(e, subject);
          if (err.code === 'AuthenticationFailed' && tries === 1) continue;
          throw err;
        }
      }
    },
    close: pool.close,
  };
}

/** The sender's own transport settings, unpooled, for one EHLO/STARTTLS/AUTH/QUIT. */
async function verifyOnce(deps: SmtpSenderDeps, options: SmtpSenderOptions, token: AccessToken): Promise<void> {
  const nodemailer = await import('nodemailer');
  const transport = nodemailer.createTransport({ ...(transportOptions(deps, options, () => token) as object), pool: false } as Parameters<typeof nodemailer.createTransport>[0]);
  try {
    await transport.verify();
  } finally {
    transport.close();
  }
}

function toNodemailer(from: string, mail: OutgoingMail) {
  return { from, to: [...mail.to], subject: mail.subject, text: mail.text, html: mail.html, messageId: `<${mail.messageId}>`, headers: mail.headers };
}

/** A nodemailer pool opened on demand and closed once idle; `token` is what its connections authenticate with. */
interface IdlePool {
  token: AccessToken | undefined;
  send(message: ReturnType<typeof toNodemailer>): Promise<{ messageId: string; response: string }>;
  close(): void;
}

/**
 * Every open connection, idle or not, counts against the mailbox's 3 (across
 * all instances), so the pool is closed once it has been idle for a few seconds.
 */
async function createIdlePool(deps: SmtpSenderDeps, options: SmtpSenderOptions): Promise<IdlePool> {
  const nodemailer = await import('nodemailer');
  const idleMs = options.idleTimeoutMs ?? 5_000;
  let transporter: Transporter | undefined;
  let inFlight = 0;
  let idleTimer: NodeJS.Timeout | undefined;
  const pool: IdlePool = {
    token: undefined,
    async send(message) {
      clearTimeout(idleTimer);
      if (!transporter) {
        transporter = nodemailer.createTransport(transportOptions(deps, options, () => pool.token));
        transporter.on('error', (e: Error) => deps.logger.debug('smtp pool error', { sender: deps.from, error: e }));
      }
      const t = transporter;
      inFlight++;
      try {
        return (await t.sendMail(message)) as { messageId: string; response: string };
      } finally {
        if (--inFlight === 0) {
          idleTimer = setTimeout(pool.close, idleMs);
          idleTimer.unref();
        }
      }
    },
    close() {
      clearTimeout(idleTimer);
      idleTimer = undefined;
      transporter?.close();
      transporter = undefined;
    },
  };
  return pool;
}

function transportOptions(deps: SmtpSenderDeps, options: SmtpSenderOptions, current: () => AccessToken | undefined) {
  const { host, port } = deps.endpoint;
  return {
    pool: true,
    maxConnections: Math.max(1, Math.min(options.maxConnections ?? SMTP_MAX_CONNECTIONS, SMTP_MAX_CONNECTIONS)),
    maxMessages: 100,
    host,
    port,
    // Port 587: plain connect, then STARTTLS is mandatory (never AUTH in clear).
    secure: false,
    requireTLS: true,
    tls: { minVersion: 'TLSv1.2', rejectUnauthorized: true, ...trustContext(deps.ca), ...(isIP(host) ? {} : { servername: host }) },
    connectionTimeout: deps.connectTimeoutMs,
    greetingTimeout: 30_000,
    socketTimeout: 60_000,
    auth: {
      type: 'OAuth2',
      user: deps.from,
      // A pooled connection asks for its token when it opens; `send` has just put a
      // fresh (msal-cached) one here. A fixed `accessToken` would outlive its 60-90 min.
      // nodemailer's own `renew` is ignored: the one fresh-token retry is `send`'s.
      provisionCallback: (_user: string, _renew: boolean, cb: (err: Error | null, token?: string, expires?: number) => void) => {
        const token = current();
        if (!token) cb(new Error('no access token'));
        else cb(null, token.token, token.expiresOn.getTime());
      },
    },
    logger: false,
  } as Parameters<typeof Nodemailer.createTransport>[0];
}
