/**
 * Direct probes for `narrowAuthRefusal`: one short session per protocol with
 * a given token to a given mailbox (IMAP: authenticate and open the folder
 * read-only; POP3: authenticate and STAT; SMTP: EHLO, STARTTLS, AUTH). They
 * use the same clients and error mappers as the poll and the sender; the
 * doctor and the poll may plug in their own adapters instead.
 */
import { rootCertificates } from 'node:tls';
import { isIP } from 'node:net';
import type { AppConfig } from '../config/index.js';
import { PostroomError } from '../errors.js';
import { mapImapError } from '../imap/errors.js';
import { mapSmtpError } from '../notify/smtp.js';
import type { Pop3Client } from '../pop3/client.js';
import type { AuthProbes, ProbeResult } from './narrow.js';

/** Where and as whom one probe connects. */
export interface ProbeTarget {
  /** Server host name; certificates are verified against it (or the IP, when it is one). */
  host: string;
  /** Server port (IMAP 993, POP3 995, SMTP 587 on Exchange Online). */
  port: number;
  /** The mailbox (XOAUTH2 `user=`). */
  mailbox: string;
  /** The app access token to try; secret: never logged or put into a result. */
  token: string;
  /** IMAP/POP3: `implicit` (993/995, default) or `starttls`. SMTP always uses STARTTLS. */
  tls?: 'implicit' | 'starttls';
  /** Extra CA (PEM), added to the public roots. */
  ca?: string;
  /** IMAP folder to open; default INBOX. */
  folder?: string;
  /** Connect and greeting budget; default 15 s. */
  timeoutMs?: number;
}

/** A mapped failure as a probe result: a refusal, "authenticated but not connected", or no verdict. */
export function probeResultOf(e: unknown): ProbeResult {
  const err = e instanceof PostroomError ? e : undefined;
  const detail = (err?.responseText ?? err?.detail ?? (e instanceof Error ? e.message : String(e))).slice(0, 200);
  if (!err) return { outcome: 'error', detail };
  if (err.code === 'AuthenticationFailed' || err.code === 'SmtpAuthDisabled') return { outcome: 'refused', code: err.code, detail };
  if (err.code === 'MailboxNotConnected') return { outcome: 'not-connected', code: err.code, detail };
  return { outcome: 'error', code: err.code, detail };
}

/** IMAP: XOAUTH2, then open the folder read-only (Exchange says "not connected" there without FullAccess). */
export async function probeImap(t: ProbeTarget): Promise<ProbeResult> {
  const { ImapFlow } = await import('imapflow');
  const subject = `${t.mailbox} via IMAP ${t.host}:${t.port}`;
  const client = new ImapFlow({
    host: t.host,
    port: t.port,
    secure: (t.tls ?? 'implicit') === 'implicit',
    doSTARTTLS: t.tls === 'starttls' ? true : undefined,
    tls: { minVersion: 'TLSv1.2', rejectUnauthorized: true, ...(t.ca ? { ca: [...rootCertificates, t.ca] } : {}) },
    auth: { user: t.mailbox, accessToken: t.token },
    logger: false,
    disableAutoIdle: true,
    connectionTimeout: t.timeoutMs ?? 15_000,
    greetingTimeout: t.timeoutMs ?? 15_000,
    clientInfo: { name: 'Postroom doctor' },
  });
  client.on('error', () => undefined);
  try {
    await client.connect();
    const box = await client.mailboxOpen(t.folder ?? 'INBOX', { readOnly: true });
    return { outcome: 'ok', detail: `opened ${box.path} (${box.exists} messages)` };
  } catch (e) {
    return probeResultOf(mapImapError(e, subject));
  } finally {
    await client.logout().catch(() => client.close());
  }
}

/** POP3: AUTH XOAUTH2 in two steps, then STAT. */
export async function probePop3(t: ProbeTarget): Promise<ProbeResult> {
  const { Pop3Client: Client } = await import('../pop3/client.js');
  let client: Pop3Client | undefined;
  try {
    client = await Client.connect({
      host: t.host,
      port: t.port,
      tls: t.tls ?? 'implicit',
      ca: t.ca ? [...rootCertificates, t.ca].join('\n') : undefined,
      mailbox: t.mailbox,
      connectTimeoutMs: t.timeoutMs ?? 15_000,
      minVersion: 'TLSv1.2',
    });
    await client.authXoauth2(t.mailbox, t.token);
    const s = await client.stat();
    await client.quit().catch(() => undefined);
    return { outcome: 'ok', detail: `STAT ${s.count} messages` };
  } catch (e) {
    return probeResultOf(e);
  } finally {
    client?.destroy();
  }
}

/** SMTP: EHLO, STARTTLS (required), AUTH XOAUTH2; nothing is sent. */
export async function probeSmtp(t: ProbeTarget): Promise<ProbeResult> {
  const nodemailer = await import('nodemailer');
  const transport = nodemailer.createTransport({
    host: t.host,
    port: t.port,
    secure: false,
    requireTLS: true,
    tls: { minVersion: 'TLSv1.2', rejectUnauthorized: true, ...(t.ca ? { ca: [...rootCertificates, t.ca] } : {}), ...(isIP(t.host) ? {} : { servername: t.host }) },
    connectionTimeout: t.timeoutMs ?? 15_000,
    greetingTimeout: t.timeoutMs ?? 15_000,
    auth: { type: 'OAuth2', user: t.mailbox, accessToken: t.token },
    logger: false,
  } as Parameters<typeof nodemailer.createTransport>[0]);
  try {
    await transport.verify();
    return { outcome: 'ok', detail: 'AUTH accepted' };
  } catch (e) {
    return probeResultOf(mapSmtpError(e, `${t.mailbox} via SMTP ${t.host}:${t.port}`));
  } finally {
    transport.close();
  }
}

/** Options of `directProbes`: the app whose endpoints are probed, and the token and mailbox to probe with. */
export interface DirectProbesOptions {
  /** The app registration: its endpoints are where the probes connect unless `endpoints` overrides them. */
  app: AppConfig;
  /** The mailbox address (XOAUTH2 `user=`). */
  mailbox: string;
  /** The refused app access token to try over each protocol; secret. */
  token: string;
  /** Extra CA (PEM) added to the public roots, for private or test stacks; absent: public roots only. */
  ca?: string;
  /** Milliseconds each probe may take to connect and get the greeting; default 15000. */
  timeoutMs?: number;
  /** IMAP folder to open; default INBOX. */
  folder?: string;
  /** Per-protocol `{ host, port }` overrides (a mailbox's own host); default the app's endpoints. */
  endpoints?: Partial<Record<'imap' | 'pop3' | 'smtp', { host: string; port: number }>>;
}

/** The three direct probes for `narrowAuthRefusal`, at the app's endpoints. */
export function directProbes(o: DirectProbesOptions): AuthProbes {
  const at = (p: 'imap' | 'pop3' | 'smtp'): ProbeTarget => ({
    ...(o.endpoints?.[p] ?? o.app.endpoints[p]),
    mailbox: o.mailbox,
    token: o.token,
    ca: o.ca,
    timeoutMs: o.timeoutMs,
    folder: o.folder,
  });
  return { imap: () => probeImap(at('imap')), pop3: () => probePop3(at('pop3')), smtp: () => probeSmtp(at('smtp')) };
}
