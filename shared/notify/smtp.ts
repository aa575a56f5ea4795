import { rootCertificates } from 'node:tls';
import { isIP } from 'node:net';
import type { Transporter } from 'nodemailer';
import type { AppConfig } from '../config/index.js';
import { PROTOCOL_ROLES } from '../config/index.js';
import { PostroomError, withContext } from '../errors.js';
import { fixContextOf } from '../diagnose/context.js';
import type { Logger } from '../logger.js';
import type { Runtime } from '../runtime.js';
import { requireRole } from '../auth/jwt.js';
import type { AccessToken } from '../auth/token-provider.js';
import { createRateLimiter, type RateLimiter } from './rate-limit.js';

/** Exchange Online: at most 3 concurrent SMTP connections per mailbox. */
export const SMTP_MAX_CONNECTIONS = 3;
/** Exchange Online: at most 30 messages a minute per mailbox. */
export const SMTP_MESSAGES_PER_MINUTE = 30;
/** Exchange gives no back-off with 432 4.3.2; its limits are per minute, so wait about one. */
const CONCURRENCY_BACKOFF_MS = 60_000;

export interface SmtpSenderOptions {
  /** Pooled connections per sender in this process; at most 3 (Exchange's limit). */
  maxConnections?: number;
  /** Messages per minute per sender in this process; at most 30. */
  messagesPerMinute?: number;
  /** Close the pool once no send has been in flight this long, so idle connections do not hold the mailbox's 3 slots. Default 5 s. */
  idleTimeoutMs?: number;
}

export interface OutgoingMail {
  to: readonly string[];
  subject: string;
  text: string;
  html: string;
  /** Without angle brackets, e.g. `<uuid>@postroom`. */
  messageId: string;
  headers?: Record<string, string>;
}

export interface SendResult {
  messageId: string;
  response: string;
  /** 2 when the first try was refused at AUTH and the fresh-token retry sent it. */
  tries: number;
}

/** One pooled, paced SMTP sender for one sender mailbox (XOAUTH2 `user=` and From). */
export interface SmtpSender {
  readonly from: string;
  send(mail: OutgoingMail, options?: { signal?: AbortSignal; logger?: Logger }): Promise<SendResult>;
  close(): void;
}

interface NodemailerError extends Error {
  code?: string;
  response?: string;
  responseCode?: number;
  command?: string;
}

const TLS_CODES = /^(ETLS|CERT_|UNABLE_TO_|DEPTH_ZERO|SELF_SIGNED|ERR_TLS|ERR_SSL|HOSTNAME_MISMATCH|ERR_TLS_CERT_ALTNAME_INVALID)/;
const NET_CODES = new Set(['ECONNECTION', 'ETIMEDOUT', 'ESOCKET', 'EDNS', 'ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ENOTFOUND', 'EPIPE']);

/**
 * Maps a nodemailer error (with Exchange Online's reply) to a coded
 * PostroomError whose `fix` names the admin step.
 */
export function mapSmtpError(e: unknown, subject: string): PostroomError {
  if (e instanceof PostroomError) return e;
  const err = (e ?? {}) as NodemailerError;
  if (err.name === 'AbortError' || err.name === 'TimeoutError') return new PostroomError('Aborted', err.message, { subject, cause: e });
  const text = String(err.response ?? '').split(/\r?\n/)[0]!.slice(0, 400);
  const rc = err.responseCode;
  const enhanced = /\b([245]\.\d{1,3}\.\d{1,3})\b/.exec(text)?.[1];
  const common = { subject, responseText: text || undefined, serverResponseCode: enhanced ?? (rc ? String(rc) : err.code), cause: e };
  const detail = text || `${err.code ?? 'error'}: ${err.message ?? String(e)}`;
  if (enhanced === '5.7.139' || /SmtpClientAuthentication is disabled/i.test(text)) return new PostroomError('SmtpAuthDisabled', detail, common);
  if (rc === 432 || enhanced === '4.3.2') {
    // Jitter so that instances refused together do not come back together.
    const retryAfterMs = Math.round(CONCURRENCY_BACKOFF_MS * (0.75 + Math.random() * 0.5));
    return new PostroomError('SmtpConcurrencyLimit', detail, { ...common, retryAfterMs });
  }
  if (/SendAsDenied/i.test(text) || enhanced === '5.7.60') return new PostroomError('SendAsDenied', detail, common);
  if (err.code === 'EAUTH' || rc === 535) return new PostroomError('AuthenticationFailed', detail, common);
  if (TLS_CODES.test(String(err.code ?? '')) || /certificate|STARTTLS|TLS/i.test(err.message ?? '')) {
    if (!(rc && rc >= 400)) return new PostroomError('TlsFailed', detail, common);
  }
  if (NET_CODES.has(String(err.code ?? ''))) return new PostroomError('ConnectionFailed', detail, common);
  if (rc && rc >= 500) return new PostroomError('SendFailed', detail, { ...common, retryable: false });
  return new PostroomError('SendFailed', detail, common);
}

type SenderMap = Map<string, Promise<SmtpSender>>;
const senders = new WeakMap<Runtime, SenderMap>();

/**
 * The sender for `from` (app-only XOAUTH2 as that mailbox), one per sender
 * per runtime (= per process): a nodemailer pool of at most 3 connections
 * and a 30-a-minute pacer, shared by every notification from that mailbox.
 * Options apply when the sender is first made.
 *
 * Across instances nothing here coordinates: the Functions host bounds it
 * (host.json queues.batchSize x instance count); a 432 4.3.2 beyond that is
 * backed off and retried through the queue.
 */
export async function getSmtpSender(runtime: Runtime, app: AppConfig, from: string, options: SmtpSenderOptions = {}): Promise<SmtpSender> {
  let map = senders.get(runtime);
  if (!map) senders.set(runtime, (map = new Map()));
  const { host, port } = app.endpoints.smtp;
  const key = `${app.name}|${from.toLowerCase()}|${host}:${port}`;
  // The promise is stored, so that concurrent first sends share one pool.
  let sender = map.get(key);
  if (!sender) {
    sender = createSmtpSender(runtime, app, from, options);
    sender.catch(() => map.delete(key));
    map.set(key, sender);
  }
  return sender;
}

/** Closes every pooled SMTP connection of `runtime` (tests, shutdown). */
export function closeSmtpSenders(runtime: Runtime): void {
  const map = senders.get(runtime);
  if (!map) return;
  for (const s of map.values()) void s.then((x) => x.close(), () => undefined);
  senders.delete(runtime);
}

async function createSmtpSender(runtime: Runtime, app: AppConfig, from: string, options: SmtpSenderOptions): Promise<SmtpSender> {
  const nodemailer = await import('nodemailer');
  const { host, port } = app.endpoints.smtp;
  const subject = `${from} via SMTP ${host}:${port}`;
  const role = PROTOCOL_ROLES.smtp;
  const provider = runtime.tokens(app);
  const maxConnections = Math.max(1, Math.min(options.maxConnections ?? SMTP_MAX_CONNECTIONS, SMTP_MAX_CONNECTIONS));
  const perMinute = Math.max(1, Math.min(options.messagesPerMinute ?? SMTP_MESSAGES_PER_MINUTE, SMTP_MESSAGES_PER_MINUTE));
  const limiter: RateLimiter = createRateLimiter({ limit: perMinute, windowMs: 60_000 });
  const ca = runtime.config.ca;
  let current: AccessToken | undefined;

  // Every open connection, idle or not, counts against the mailbox's 3 (across all
  // instances), so the pool is closed once it has been idle for a few seconds.
  const idleMs = options.idleTimeoutMs ?? 5_000;
  let transporter: Transporter | undefined;
  let inFlight = 0;
  let idleTimer: NodeJS.Timeout | undefined;
  const open = (): Transporter => {
    const t: Transporter = nodemailer.createTransport({
      pool: true,
      maxConnections,
      maxMessages: 100,
      host,
      port,
      // Port 587: plain connect, then STARTTLS is mandatory (never AUTH in clear).
      secure: false,
      requireTLS: true,
      tls: {
        minVersion: 'TLSv1.2',
        rejectUnauthorized: true,
        // `ca` replaces Node's trust store: keep the public roots for the real Exchange host.
        ...(ca ? { ca: [...rootCertificates, ca] } : {}),
        ...(isIP(host) ? {} : { servername: host }),
      },
      connectionTimeout: runtime.config.poll.connectTimeoutMs,
      greetingTimeout: 30_000,
      socketTimeout: 60_000,
      auth: {
        type: 'OAuth2',
        user: from,
        // A pooled connection asks for its token when it opens; `send` has just put a
        // fresh (msal-cached) one here. A fixed `accessToken` would outlive its 60-90 min.
        // nodemailer's own `renew` is ignored: the one fresh-token retry is `send`'s.
        provisionCallback: (_user: string, _renew: boolean, cb: (err: Error | null, token?: string, expires?: number) => void) => {
          if (!current) cb(new Error('no access token'));
          else cb(null, current.token, current.expiresOn.getTime());
        },
      },
      logger: false,
    } as Parameters<typeof nodemailer.createTransport>[0]);
    t.on('error', (e: Error) => runtime.logger.debug('smtp pool error', { sender: from, error: e }));
    return t;
  };
  const close = () => {
    clearTimeout(idleTimer);
    idleTimer = undefined;
    transporter?.close();
    transporter = undefined;
  };
  const sendOnce = async (message: Parameters<Transporter['sendMail']>[0]) => {
    clearTimeout(idleTimer);
    const t = (transporter ??= open());
    inFlight++;
    try {
      return (await t.sendMail(message)) as { messageId: string; response: string };
    } finally {
      if (--inFlight === 0) {
        idleTimer = setTimeout(close, idleMs);
        idleTimer.unref();
      }
    }
  };

  return {
    from,
    async send(mail, o = {}) {
      const log = o.logger ?? runtime.logger;
      let attempts = 0;
      for (let renew = false; ; renew = true) {
        current = await provider.getToken({ renew, signal: o.signal });
        // A token without the role would get Exchange's bare 535 5.7.3; say precisely what is missing.
        requireRole(current.token, role, subject);
        await limiter.acquire(o.signal);
        attempts++;
        try {
          const info = await sendOnce({
            from,
            to: [...mail.to],
            subject: mail.subject,
            text: mail.text,
            html: mail.html,
            messageId: `<${mail.messageId}>`,
            headers: mail.headers,
          });
          return { messageId: info.messageId, response: info.response, tries: attempts };
        } catch (e) {
          // Authenticated as `from` and sent as `from`: the fix says so (issue 12).
          const err = withContext(mapSmtpError(e, subject), fixContextOf(app, { mailbox: from, from, protocol: 'smtp' })) as PostroomError;
          if (err.code === 'AuthenticationFailed' && !renew) {
            log.warn('SMTP refused the app token; retrying once with a fresh one', { sender: from, reply: err.responseText });
            continue;
          }
          if (err.code === 'SmtpConcurrencyLimit') limiter.pause(err.retryAfterMs ?? CONCURRENCY_BACKOFF_MS);
          throw err;
        }
      }
    },
    close,
  };
}
