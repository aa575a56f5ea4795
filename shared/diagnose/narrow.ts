/**
 * Narrows down a refused app token. Exchange answers an unregistered service
 * principal, a mailbox the app has no FullAccess on and a protocol switched
 * off for the mailbox with the same "AUTHENTICATE failed" / 535 5.7.3. The
 * same token tried over the other protocols, to the same mailbox, tells them
 * apart: if IMAP opens the folder, the service principal is registered and has
 * FullAccess, so a POP refusal means POP is off for that mailbox; if every
 * protocol refuses, Exchange does not know the service principal.
 *
 * The probes are injected, so the poll, the sender and the doctor plug in
 * their own adapters (shared/diagnose/probes.ts has direct ones).
 */
import type { AppConfig } from '../config/index.js';
import { PostroomError, type PostroomErrorCode } from '../errors.js';
import { APP_ROLES, inspectAppToken, roleProblem, decodeClaims, type MailProtocol } from '../auth/claims.js';
import { fixContextOf } from './context.js';

/** What one protocol made of the token: authenticated and opened the mailbox, refused the token, authenticated but could not open the mailbox, or failed otherwise (network, TLS: no verdict). */
export type ProbeOutcome = 'ok' | 'refused' | 'not-connected' | 'error';

/** One probe's verdict, with the mapped error code and the server's words when it failed. */
export interface ProbeResult {
  /** What the protocol made of the token (see `ProbeOutcome`). */
  readonly outcome: ProbeOutcome;
  /** The error code the failure mapped to (e.g. `SmtpAuthDisabled` for 535 5.7.139: a refusal with a reason). */
  readonly code?: PostroomErrorCode;
  /** The server's reply or what failed, secrets removed. */
  readonly detail?: string;
}

/** One protocol's attempt with the refused token to the same mailbox. */
export type Probe = () => Promise<ProbeOutcome | ProbeResult>;

/** The probes available; a protocol without one is not tried. */
export interface AuthProbes {
  /** Authenticates over IMAP and opens the folder read-only. */
  imap?: Probe;
  /** Authenticates over POP3 and runs STAT. */
  pop3?: Probe;
  /** EHLO, STARTTLS and AUTH XOAUTH2 over SMTP submission; sends nothing. */
  smtp?: Probe;
}

/** How sure a diagnosis is; see `Diagnosis.confidence`. */
export type DiagnosisConfidence = 'certain' | 'likely' | 'possible';

/** The narrowed-down cause of a refusal, with the filled-in fix and how sure it is. */
export interface Diagnosis {
  /** The narrowed-down error code (e.g. `ProtocolDisabled`, `ServicePrincipalNotRegistered`, `MailboxNotConnected`). */
  readonly code: PostroomErrorCode;
  /** Why, in one or two sentences naming the mailbox and protocols. */
  readonly cause: string;
  /** The admin step, filled in with the real ids. */
  readonly fix: string;
  /** `certain`: the server or the token said so; `likely`: the protocols' contrast implies it; `possible`: nothing to contrast with. */
  readonly confidence: DiagnosisConfidence;
  /** What was seen, one line each (probe results, token findings). */
  readonly evidence: readonly string[];
  /** The same as an error, to throw or report. */
  readonly error: PostroomError;
}

/** Options of `narrowAuthRefusal`: the refusal, the token it refused, and the probes to contrast it with. */
export interface NarrowAuthRefusalOptions {
  /** The protocol whose server refused the token. */
  refused: MailProtocol;
  /** The refused token: re-checked locally, and its roles decide which protocols are probed. */
  token: string;
  /** The app registration the token was issued to: its ids fill in the fix. */
  app: AppConfig;
  /** The mailbox address the token was refused for (XOAUTH2 `user=`); the probes use the same one. */
  mailbox: string;
  /** The probes to try the token with; a protocol without one, or whose role the token lacks, is not tried. */
  probe: AuthProbes;
  /** The refusal as mapped (a `SmtpAuthDisabled` or `MailboxNotConnected` is already certain). */
  error?: PostroomError;
  /** This host's clock for the token's time checks; default now. */
  now?: Date;
  /** The token's expiry by this host's clock (see `checkAppToken`). */
  expiresOn?: Date;
}

const NAMES: Record<MailProtocol, string> = { imap: 'IMAP', pop3: 'POP', smtp: 'SMTP' };
const CERTAIN_REPLIES = new Set<PostroomErrorCode>(['SmtpAuthDisabled', 'MailboxNotConnected', 'Throttled', 'SessionExpired']);

/**
 * Narrows down why the server refused `token` for `mailbox` over `refused`:
 * first the token's own claims (tenant, audience, clock, role), then the
 * same token over every protocol it has a role for (the refused one again).
 *
 * @example
 * ```ts
 * const d = await narrowAuthRefusal({ refused: 'pop3', token, app, mailbox, probe: directProbes({ app, mailbox, token, ca }) });
 * // d.code 'ProtocolDisabled', d.confidence 'likely', d.fix 'Set-CASMailbox -Identity … -PopEnabled $true …'
 * ```
 */
export async function narrowAuthRefusal(o: NarrowAuthRefusalOptions): Promise<Diagnosis> {
  const local = inspectAppToken(o.token, { protocol: o.refused, app: o.app, mailbox: o.mailbox, now: o.now, expiresOn: o.expiresOn });
  const first = local.problems[0];
  if (first) {
    const evidence = [...local.problems.map((p) => `token: ${p.code}: ${p.detail}`), ...local.notes.map((n) => `token: ${n}`)];
    return diagnosis(o, first.code, first.detail, 'certain', evidence, o.refused);
  }
  if (o.error && CERTAIN_REPLIES.has(o.error.code)) {
    return diagnosis(
      o,
      o.error.code,
      `the ${NAMES[o.refused]} server said so: ${o.error.responseText ?? o.error.detail}`,
      'certain',
      [`${o.refused}: ${o.error.responseText ?? o.error.detail}`],
      o.refused,
    );
  }
  const results = await runProbes(o);
  const evidence = [...local.notes.map((n) => `token: ${n}`), ...describe(results)];
  return conclude(o, results, evidence);
}

type Results = Partial<Record<MailProtocol, ProbeResult | { outcome: 'skipped'; detail: string }>>;

async function runProbes(o: NarrowAuthRefusalOptions): Promise<Results> {
  const claims = decodeClaims(o.token);
  const out: Results = {};
  await Promise.all(
    (['imap', 'pop3', 'smtp'] as const).map(async (p) => {
      const probe = o.probe[p];
      if (!probe) return void (out[p] = { outcome: 'skipped', detail: 'no probe' });
      if (o.token.split('.').length === 3 && roleProblem(claims, p)) return void (out[p] = { outcome: 'skipped', detail: `token lacks ${APP_ROLES[p]}` });
      try {
        const r = await probe();
        out[p] = typeof r === 'string' ? { outcome: r } : r;
      } catch (e) {
        out[p] = { outcome: 'error', detail: e instanceof Error ? e.message.slice(0, 200) : String(e) };
      }
    }),
  );
  return out;
}

function describe(results: Results): string[] {
  return (['imap', 'pop3', 'smtp'] as const)
    .filter((p) => results[p])
    .map((p) => {
      const r = results[p]!;
      const what = r.outcome === 'skipped' ? 'not probed' : r.outcome;
      const code = 'code' in r && r.code ? ` [${r.code}]` : '';
      return `${p}: ${what}${code}${r.detail ? ` (${r.detail})` : ''}`;
    });
}

function conclude(o: NarrowAuthRefusalOptions, r: Results, evidence: string[]): Diagnosis {
  const found = fromServerSignal(o, r, evidence) ?? fromComparison(o, r, evidence);
  if (found) return found;
  const why = `${NAMES[o.refused]} refused the token and no other protocol could be compared (${describe(r).join('; ') || 'no probes'})`;
  return diagnosis(o, 'AuthenticationFailed', why, 'possible', evidence, o.refused);
}

/** What a server said outright: SMTP AUTH off, a mailbox it cannot open, or the refusal gone by now. */
function fromServerSignal(o: NarrowAuthRefusalOptions, r: Results, evidence: string[]): Diagnosis | undefined {
  const mbx = o.mailbox;
  const smtp = r.smtp;
  if (o.refused === 'smtp' && smtp && 'code' in smtp && smtp.code === 'SmtpAuthDisabled') {
    return diagnosis(o, 'SmtpAuthDisabled', `SMTP answered 535 5.7.139: SMTP AUTH is disabled for ${mbx} or the tenant`, 'certain', evidence, 'smtp');
  }
  const notConnected = (['imap', 'pop3'] as const).find((p) => r[p]?.outcome === 'not-connected');
  if (notConnected) {
    const cause = `${NAMES[notConnected]} authenticated the app but could not open ${mbx}: the service principal is registered but has no FullAccess on this mailbox`;
    return diagnosis(o, 'MailboxNotConnected', cause, 'certain', evidence, notConnected);
  }
  if (r[o.refused]?.outcome === 'ok') {
    const cause = `${NAMES[o.refused]} accepts the same token now: the refusal was transient, or a permission change was still being applied`;
    return diagnosis(o, 'AuthenticationFailed', cause, 'possible', evidence, o.refused);
  }
  return undefined;
}

/** What the other protocols' answers to the same token tell: a protocol switched off, or no service principal at all. */
function fromComparison(o: NarrowAuthRefusalOptions, r: Results, evidence: string[]): Diagnosis | undefined {
  const mbx = o.mailbox;
  const refusedName = NAMES[o.refused];
  const opened = (['imap', 'pop3'] as const).filter((p) => p !== o.refused && r[p]?.outcome === 'ok');
  const via = opened.map((p) => NAMES[p]).join(' and ');
  if (opened.length && o.refused !== 'smtp') {
    const cause = `${via} opened ${mbx} with the same token, so the service principal is registered and has FullAccess; ${refusedName} refuses it: ${refusedName} is disabled for ${mbx}`;
    return diagnosis(o, 'ProtocolDisabled', cause, 'likely', evidence, o.refused);
  }
  if (opened.length) {
    const cause = `${via} opened ${mbx} with the same token (service principal and FullAccess in place); SMTP refuses it with 5.7.3: SMTP AUTH may be off for ${mbx}, or SMTP.SendAsApp not yet applied`;
    return diagnosis(o, 'AuthenticationFailed', cause, 'possible', evidence, 'smtp');
  }
  const refused = (['imap', 'pop3', 'smtp'] as const).filter((p) => r[p]?.outcome === 'refused');
  const tried = (['imap', 'pop3', 'smtp'] as const).filter((p) => r[p] && r[p].outcome !== 'skipped');
  if (!refused.length || refused.length !== tried.length) return undefined;
  const list = refused.map((p) => NAMES[p]).join(', ');
  const cause = `every protocol tried (${list}) refused the same token for ${mbx}, and the token passes every local check: Exchange does not know the app's service principal (not registered, or registered with the App registration's object id instead of the Enterprise application's), or it has no permission on this mailbox`;
  return diagnosis(o, 'ServicePrincipalNotRegistered', cause, refused.length >= 2 ? 'likely' : 'possible', evidence, o.refused);
}

function diagnosis(o: NarrowAuthRefusalOptions, code: PostroomErrorCode, cause: string, confidence: DiagnosisConfidence, evidence: string[], protocol: MailProtocol): Diagnosis {
  const error = new PostroomError(code, `${cause} (${confidence})`, {
    subject: `${o.mailbox} (app ${o.app.clientId})`,
    context: fixContextOf(o.app, { mailbox: o.mailbox, protocol }),
    // The server's own words stay on the diagnosed error.
    responseText: o.error?.responseText,
    serverResponseCode: o.error?.serverResponseCode,
    cause: o.error,
  });
  return { code, cause, fix: error.fix, confidence, evidence, error };
}
