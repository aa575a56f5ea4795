/**
 * Per mailbox: DNS, TCP, TLS, then the poll's own login and select
 * (`runtime.source(mailbox).open()`, XOAUTH2 with the fresh-token retry,
 * POP3's two-step AUTH), the folder's status, and the session closed again.
 * A refused login is narrowed down exactly as the poll does it.
 */
import type { MailboxConfig } from '../config/index.js';
import type { Runtime } from '../runtime.js';
import type { MailSession } from '../source.js';
import { silentLogger } from '../logger.js';
import { fixContextOfMailbox } from '../diagnose/context.js';
import { isPostroomError, withContext, type PostroomError } from '../errors.js';
import { asPostroomError } from '../poll/poll-errors.js';
import { diagnoseRefusal } from '../poll/diagnose-refusal.js';
import { withoutFix } from '../cli/context.js';
import { checkNetwork } from './network.js';
import { diagnosed, failed, timed, type DoctorRun } from './types.js';

/** Errors raised after login, at the folder: the login itself was accepted. */
const FOLDER_CODES = new Set(['FolderNotFound', 'MailboxNotConnected']);

/** The checks of one mailbox; `tokenOk` false skips the login (the token layer has said why). */
export async function checkMailbox(runtime: Runtime, mailbox: MailboxConfig, tokenOk: boolean, run: DoctorRun): Promise<void> {
  const context = fixContextOfMailbox(mailbox);
  const reachable = await checkNetwork({ host: mailbox.host, port: mailbox.port, tls: mailbox.tls, subject: mailbox.id, context, ca: runtime.config.ca }, run);
  if (!reachable || !tokenOk) return;
  let selectAt: number | undefined;
  const onCommand = (cmd: string) => {
    if (/^(SELECT|EXAMINE)$/i.test(cmd)) selectAt ??= performance.now();
  };
  const started = performance.now();
  const opened = await timed(async () => {
    const source = await runtime.source(mailbox, silentLogger, { onCommand });
    return source.open({ signal: AbortSignal.timeout(run.timeoutMs * 3) });
  });
  const authMs = Math.round((selectAt ?? performance.now()) - started);
  if (opened.error) return reportOpenFailure(runtime, mailbox, opened.error, { authMs, ms: opened.ms }, run);
  const session = opened.value!;
  run.add({
    layer: 'auth',
    subject: mailbox.id,
    status: 'ok',
    ms: authMs,
    detail: `${mailbox.protocol === 'imap' ? 'AUTHENTICATE XOAUTH2' : 'AUTH XOAUTH2 (two steps)'} as ${mailbox.address} accepted`,
  });
  run.add({ layer: 'folder', subject: mailbox.id, status: 'ok', ms: opened.ms - authMs, detail: describeFolder(mailbox, session) });
  await session.close().catch(() => session.abort());
}

async function reportOpenFailure(runtime: Runtime, mailbox: MailboxConfig, e: unknown, t: { authMs: number; ms: number }, run: DoctorRun): Promise<void> {
  const err = withContext<PostroomError>(isPostroomError(e) ? e : asPostroomError(e, mailbox), fixContextOfMailbox(mailbox));
  if (FOLDER_CODES.has(err.code)) {
    run.add({ layer: 'auth', subject: mailbox.id, status: 'ok', ms: t.authMs, detail: `XOAUTH2 as ${mailbox.address} accepted` });
    run.add(failed('folder', mailbox.id, t.ms - t.authMs, err));
    return;
  }
  const started = performance.now();
  const d = await diagnoseRefusal(runtime, mailbox, err, { timeoutMs: run.timeoutMs * 2, logger: silentLogger });
  if (!d) return void run.add(failed('auth', mailbox.id, t.ms, err));
  run.add(diagnosed('auth', mailbox.id, t.ms + Math.round(performance.now() - started), d, withoutFix(err)));
}

function describeFolder(mailbox: MailboxConfig, s: MailSession): string {
  const st = s.stats;
  if (mailbox.protocol === 'pop3') return `INBOX (POP3 maildrop): ${st?.messages ?? '?'} message(s), ${st?.pending ?? '?'} not yet delivered`;
  const next = st?.uidNext !== undefined ? `, UIDNEXT ${st.uidNext}` : '';
  return `${s.folder}: ${st?.messages ?? '?'} message(s)${next}, UIDVALIDITY ${s.validity}${mailbox.postAction.kind === 'none' ? ' (opened read-only)' : ''}`;
}
