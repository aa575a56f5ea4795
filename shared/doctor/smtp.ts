/**
 * Per sender (app + From mailbox): DNS, TCP, then the SMTP sender's own
 * transport (EHLO, STARTTLS, AUTH XOAUTH2; `SmtpSender.verify`), and with
 * `--send-test <to>` one real message through `SmtpSender.send`.
 */
import { randomUUID } from 'node:crypto';
import type { AppConfig, MailboxConfig } from '../config/index.js';
import type { Runtime } from '../runtime.js';
import { fixContextOf } from '../diagnose/context.js';
import { narrowAuthRefusal } from '../diagnose/narrow.js';
import { directProbes } from '../diagnose/probes.js';
import { withContext, type PostroomError } from '../errors.js';
import { withoutFix } from '../cli/context.js';
import { checkNetwork } from './network.js';
import { diagnosed, failed, timed, withTimeout, type DoctorRun } from './types.js';

/** One sender mailbox of one app. */
export interface SmtpSenderTarget {
  /**
   *
   */
  app: AppConfig;
  /**
   *
   */
  from: string;
}

/** The senders to check: each mailbox's notification sender; with `all`, every mailbox itself when it has none. */
export function smtpSenders(mailboxes: readonly MailboxConfig[], all: boolean): SmtpSenderTarget[] {
  const out = new Map<string, SmtpSenderTarget>();
  for (const m of mailboxes) {
    const from = m.notify?.from ?? (all ? m.address : undefined);
    if (from) out.set(`${m.app.name}|${from.toLowerCase()}`, { app: m.app, from });
  }
  return [...out.values()];
}

/** The checks of one sender; `tokenOk` false skips AUTH and the test message. */
export async function checkSender(runtime: Runtime, t: SmtpSenderTarget, tokenOk: boolean, sendTest: string | undefined, run: DoctorRun): Promise<void> {
  const { host, port } = t.app.endpoints.smtp;
  const subject = `smtp:${t.from}`;
  const context = fixContextOf(t.app, { mailbox: t.from, from: t.from, protocol: 'smtp' });
  if (!(await checkNetwork({ host, port, tls: 'starttls', subject, context, ca: runtime.config.ca }, run)) || !tokenOk) return;
  const sender = await runtime.smtpSender(t.app, t.from);
  const v = await timed(() => withTimeout(sender.verify(), run.timeoutMs * 3, `SMTP ${host}:${port}`));
  if (v.error) {
    const err = withContext(v.error, context) as PostroomError;
    if (err.code !== 'AuthenticationFailed') return void run.add(failed('smtp', subject, v.ms, err));
    const started = performance.now();
    const { token, expiresOn } = await runtime.tokens(t.app).getToken();
    const probe = directProbes({ app: t.app, mailbox: t.from, token, ca: runtime.config.ca, timeoutMs: run.timeoutMs });
    const d = await narrowAuthRefusal({ refused: 'smtp', token, expiresOn, app: t.app, mailbox: t.from, probe, error: err });
    return void run.add(diagnosed('smtp', subject, v.ms + Math.round(performance.now() - started), d, withoutFix(err)));
  }
  run.add({
    layer: 'smtp',
    subject,
    status: 'ok',
    ms: v.ms,
    detail: `${host}:${port}: EHLO, STARTTLS, AUTH XOAUTH2 as ${t.from} accepted${v.value!.tries > 1 ? ' (with a fresh token)' : ''}`,
  });
  if (!sendTest) return;
  const s = await timed(() =>
    withTimeout(
      sender.send({
        to: [sendTest],
        subject: 'Postroom doctor: test message',
        text: `Sent by postroom doctor from ${t.from} (app ${t.app.clientId}) at ${new Date().toISOString()}.`,
        html: `<p>Sent by postroom doctor from ${t.from} (app ${t.app.clientId}).</p>`,
        messageId: `${randomUUID()}@postroom`,
      }),
      run.timeoutMs * 3,
      `SMTP send via ${host}:${port}`,
    ),
  );
  if (s.error) return void run.add(failed('send', subject, s.ms, withContext(s.error, context)));
  run.add({ layer: 'send', subject, status: 'ok', ms: s.ms, detail: `test message to ${sendTest} accepted: ${s.value!.response}` });
}
