/**
 * Reads an app token's claims (no signature check: the mail server verifies;
 * we only look) and tells, before any server refusal and again after one,
 * what about the token is wrong: tenant, audience, lifetime against this
 * host's clock, app-only or not, the protocol's role. Exchange answers all of
 * these with the same "AUTHENTICATE failed"; here each gets its own code.
 */
import type { AppConfig } from '../config/index.js';
import { PostroomError, type PostroomErrorCode } from '../errors.js';
import { fixContextOf } from '../diagnose/context.js';

/** The protocols an app token is used for; each needs its own app role (`APP_ROLES`). */
export type MailProtocol = 'imap' | 'pop3' | 'smtp';

/** The role an app token needs per protocol (as config's PROTOCOL_ROLES; repeated to keep this file free of config imports). */
export const APP_ROLES: Readonly<Record<MailProtocol, string>> = Object.freeze({
  imap: 'IMAP.AccessAsApp',
  pop3: 'POP.AccessAsApp',
  smtp: 'SMTP.SendAsApp',
});

export const GRAPH_RESOURCE = 'https://graph.microsoft.com';
export const GRAPH_APP_ID = '00000003-0000-0000-c000-000000000000';
export const EXCHANGE_APP_ID = '00000002-0000-0ff1-ce00-000000000000';
/** Hosts of the audiences Exchange Online's app tokens carry, in every cloud. */
const EXCHANGE_HOSTS = new Set(['outlook.office365.com', 'outlook.office.com', 'ps.outlook.com', 'outlook.office365.us', 'outlook-dod.office365.us', 'partner.outlook.cn']);
const GENERIC_TENANTS = new Set(['common', 'organizations', 'consumers']);
const GUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The claims of an Entra access token that the checks read; unverified, and any may be missing. */
export interface AppTokenClaims {
  /** Audience: the resource the token is for; Exchange Online's URL (e.g. `https://outlook.office365.com`) or app id, not Graph's. */
  readonly aud?: string | string[];
  /** App roles granted (application permissions), e.g. `IMAP.AccessAsApp`; absent when none is consented. */
  readonly roles?: string[];
  /** Delegated scopes; present only on a user (delegated) token, which Postroom cannot use. */
  readonly scp?: string;
  /** Client id of the app the token was issued to (v1 tokens). */
  readonly appid?: string;
  /** Client id of the app the token was issued to (v2 tokens). */
  readonly azp?: string;
  /** Directory (tenant) id that issued the token. */
  readonly tid?: string;
  /** Object id of the subject (for an app token: the service principal). */
  readonly oid?: string;
  /** Identity type: `app` for an app-only token, `user` for a delegated one. */
  readonly idtyp?: string;
  /** User principal name; present only on a delegated token. */
  readonly upn?: string;
  /** Issued at, in seconds since the epoch (login host's clock). */
  readonly iat?: number;
  /** Not valid before, in seconds since the epoch (login host's clock). */
  readonly nbf?: number;
  /** Expiry, in seconds since the epoch (login host's clock). */
  readonly exp?: number;
}

/** Whether `token` looks like a JWT (opaque test tokens are not checked locally). */
export function isJwt(token: string): boolean {
  return token.split('.').length === 3;
}

/** An access token's claims, unverified; `{}` when it is not a readable JWT. */
export function decodeClaims(token: string): AppTokenClaims {
  const part = token.split('.')[1];
  if (!part) return {};
  try {
    const v: unknown = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
    return v && typeof v === 'object' ? v : {};
  } catch {
    return {};
  }
}

/** Whether `resource` (a URL or an app id) is Exchange Online's, in any cloud. */
export function isExchangeResource(resource: string): boolean {
  if (resource.toLowerCase() === EXCHANGE_APP_ID) return true;
  try {
    return EXCHANGE_HOSTS.has(new URL(resource).hostname.toLowerCase());
  } catch {
    return false;
  }
}

/** Whether `resource` is Microsoft Graph's (URL or app id). */
export function isGraphResource(resource: string): boolean {
  const r = resource.toLowerCase().replace(/\/+$/, '');
  return r === GRAPH_RESOURCE || r === GRAPH_APP_ID || /^https:\/\/graph\.microsoft\.(us|com|cn)$/.test(r) || r === 'https://microsoftgraph.chinacloudapi.cn';
}

/** Whether a configured tenant is a directory id; a domain or `common` cannot be compared with `tid`. */
export function tenantKind(tenant: string): 'id' | 'domain' | 'generic' {
  if (GENERIC_TENANTS.has(tenant.toLowerCase())) return 'generic';
  return GUID_RE.test(tenant) ? 'id' : 'domain';
}

/** One thing wrong with a token, with its error code. */
export interface TokenProblem {
  /** The error code it is thrown with (`WrongAudience`, `WrongTenant`, `NotAppToken`, `ClockSkew`, `TokenExpired`, `MissingRole`). */
  readonly code: PostroomErrorCode;
  /** What was found, with the values (never the token). */
  readonly detail: string;
}

/** Options of `checkAppToken` / `inspectAppToken`: what the token is for and against which clock. */
export interface CheckAppTokenOptions {
  /** The protocol the token is about to be (or was) used for. */
  protocol: MailProtocol;
  /** The app registration it was asked for. */
  app: AppConfig;
  /** This host's clock; default now. */
  now?: Date;
  /**
   * When the token provider says the token expires by this host's clock
   * (receipt time + `expires_in`). Compared with `exp` (the login host's
   * clock), it measures the skew between the two clocks.
   */
  expiresOn?: Date;
  /** The mailbox it is for (subject and fix). */
  mailbox?: string;
  /** Overrides the error subject. */
  subject?: string;
  /** Clock difference tolerated, like Entra's and Exchange's 5 minutes; default 300. */
  skewToleranceSeconds?: number;
}

/** Everything `inspectAppToken` found out about a token (no token text in it). */
export interface AppTokenReport {
  /** The decoded claims; `{}` when the token is not a JWT. */
  readonly claims: AppTokenClaims;
  /** Whether the token was a JWT and so was checked at all. */
  readonly checked: boolean;
  /** Everything wrong, most telling first; the first is what `checkAppToken` throws. */
  readonly problems: readonly TokenProblem[];
  /** What could not be checked, and why (e.g. a tenant configured as a domain). */
  readonly notes: readonly string[];
}

const audiences = (c: AppTokenClaims): string[] => (Array.isArray(c.aud) ? c.aud : c.aud ? [c.aud] : []);
const iso = (sec: number) => new Date(sec * 1000).toISOString();
const minutes = (sec: number) => `${Math.round(Math.abs(sec) / 60)} min`;

function audienceProblem(c: AppTokenClaims, app: AppConfig): TokenProblem | undefined {
  const aud = audiences(c).map((a) => a.replace(/\/+$/, ''));
  const want = app.resource.replace(/\/+$/, '');
  if (aud.some(isGraphResource)) {
    return { code: 'WrongAudience', detail: `the token is for Microsoft Graph (aud ${aud.join(' ')}), not for Exchange Online (${want})` };
  }
  if (aud.some((a) => a === want || isExchangeResource(a))) return undefined;
  return { code: 'WrongAudience', detail: `the token's audience is ${aud.join(' ') || 'missing'}, not Exchange Online (${want})` };
}

function tenantProblem(c: AppTokenClaims, app: AppConfig, notes: string[]): TokenProblem | undefined {
  const kind = tenantKind(app.tenantId);
  if (kind !== 'id') {
    notes.push(`tenant "${app.tenantId}" is configured as a ${kind === 'domain' ? 'domain' : 'generic authority'}: the token's tid (${c.tid ?? 'none'}) was not compared`);
    return undefined;
  }
  if (c.tid === undefined) {
    notes.push('the token has no tid claim: tenant not compared');
    return undefined;
  }
  if (c.tid.toLowerCase() === app.tenantId.toLowerCase()) return undefined;
  return { code: 'WrongTenant', detail: `the token was issued by tenant ${c.tid}, the settings name tenant ${app.tenantId}` };
}

function appOnlyProblem(c: AppTokenClaims, notes: string[]): TokenProblem | undefined {
  if (c.idtyp === 'app') return undefined;
  if (c.idtyp !== undefined) return { code: 'NotAppToken', detail: `the token's idtyp is "${c.idtyp}", not "app" (a delegated token${c.scp ? ` with scp "${c.scp}"` : ''})` };
  if (c.scp !== undefined || c.upn !== undefined)
    return { code: 'NotAppToken', detail: `the token carries ${c.scp !== undefined ? `scp "${c.scp}"` : 'a upn'}: it is a delegated (user) token` };
  notes.push('the token has no idtyp claim: app-only assumed (no scp, no upn)');
  return undefined;
}

function timeProblem(c: AppTokenClaims, o: CheckAppTokenOptions): TokenProblem | undefined {
  const now = (o.now ?? new Date()).getTime() / 1000;
  const tol = o.skewToleranceSeconds ?? 300;
  const start = c.nbf ?? c.iat;
  if (start !== undefined && start > now + tol) {
    return { code: 'ClockSkew', detail: `the token is valid from ${iso(start)}, ${minutes(start - now)} after this host's time ${iso(now)}: this host's clock is behind` };
  }
  if (c.exp !== undefined && o.expiresOn) {
    const offset = o.expiresOn.getTime() / 1000 - c.exp;
    if (Math.abs(offset) > tol) {
      return {
        code: 'ClockSkew',
        detail: `the login host says the token expires at ${iso(c.exp)}, by this host's clock it was ${o.expiresOn.toISOString()}: this host's clock is ${minutes(offset)} ${offset > 0 ? 'ahead' : 'behind'}`,
      };
    }
  }
  if (c.exp !== undefined && c.exp <= now) {
    return { code: 'TokenExpired', detail: `the token expired at ${iso(c.exp)}, ${minutes(now - c.exp)} before this host's time ${iso(now)}` };
  }
  return undefined;
}

/** The `MissingRole` problem of `claims` for `protocol`, if any. */
export function roleProblem(c: AppTokenClaims, protocol: MailProtocol): TokenProblem | undefined {
  const role = APP_ROLES[protocol];
  const roles = Array.isArray(c.roles) ? c.roles : [];
  if (roles.includes(role)) return undefined;
  const aud = audiences(c).join(' ') || 'none';
  return { code: 'MissingRole', detail: `the token (aud ${aud}, app ${c.appid ?? c.azp ?? '?'}) has roles [${roles.join(', ') || 'none'}] but needs ${role}` };
}

/**
 * Every problem of an app token for `protocol`, without throwing (the doctor
 * lists them all). A token that is not a JWT is not checked.
 */
export function inspectAppToken(token: string, o: CheckAppTokenOptions): AppTokenReport {
  if (!isJwt(token)) return { claims: {}, checked: false, problems: [], notes: ['the token is not a JWT: not checked locally'] };
  const claims = decodeClaims(token);
  const notes: string[] = [];
  const problems = [
    audienceProblem(claims, o.app),
    tenantProblem(claims, o.app, notes),
    appOnlyProblem(claims, notes),
    timeProblem(claims, o),
    roleProblem(claims, o.protocol),
  ].filter((p): p is TokenProblem => p !== undefined);
  const appid = claims.appid ?? claims.azp;
  if (appid !== undefined && appid.toLowerCase() !== o.app.clientId.toLowerCase()) {
    notes.push(`the token names app ${appid}, the settings name ${o.app.clientId}`);
  }
  return { claims, checked: true, problems, notes };
}

/**
 * Checks an app token before it goes to the server (and again after the
 * server refused it: it may have expired meanwhile). Throws the most telling
 * problem as a PostroomError whose fix is filled in with the app's ids.
 *
 * @example
 * ```ts
 * const { token, expiresOn } = await tokens.getToken();
 * checkAppToken(token, { protocol: 'imap', app: mailbox.app, mailbox: mailbox.address, expiresOn });
 * ```
 */
export function checkAppToken(token: string, o: CheckAppTokenOptions): AppTokenReport {
  const report = inspectAppToken(token, o);
  const first = report.problems[0];
  if (first) {
    const subject = o.subject ?? (o.mailbox ? `${o.mailbox} (app ${o.app.clientId})` : `app ${o.app.clientId} in tenant ${o.app.tenantId}`);
    const notes = report.notes.length ? `; ${report.notes.join('; ')}` : '';
    throw new PostroomError(first.code, `${first.detail}${notes}`, {
      subject,
      context: fixContextOf(o.app, { mailbox: o.mailbox, protocol: o.protocol }),
    });
  }
  return report;
}
