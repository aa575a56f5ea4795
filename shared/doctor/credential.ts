/**
 * Per app: the credential (Key Vault reachable, the secret or certificate
 * readable, its expiry) and the token (claims checked for every protocol the
 * app is used with). Both through the runtime's own credential and token
 * provider, as the poll uses them.
 */
import type { AppConfig } from '../config/index.js';
import type { Runtime } from '../runtime.js';
import type { AccessToken } from '../auth/token.js';
import { decodeClaims, inspectAppToken, type MailProtocol } from '../auth/claims.js';
import { fixContextOf } from '../diagnose/context.js';
import { ERROR_CATALOG, withContext } from '../errors.js';
import { failed, timed, withTimeout, type DoctorCheck, type DoctorRun } from './types.js';

const DAY_MS = 86_400_000;

/** The Key Vault and token checks of one app; returns its token, undefined when none could be had. */
export async function checkApp(runtime: Runtime, app: AppConfig, protocols: readonly MailProtocol[], run: DoctorRun): Promise<AccessToken | undefined> {
  const subject = `app ${app.name} (${app.clientId})`;
  if (!(await checkCredential(runtime, app, subject, run))) return undefined;
  const got = await timed(() => withTimeout(runtime.tokens(app).getToken(), run.timeoutMs * 2, `token request to ${app.authorityHost}`));
  if (got.error) {
    run.add(failed('token', subject, got.ms, withContext(got.error, fixContextOf(app))));
    return undefined;
  }
  const token = got.value!;
  const problems = new Map<string, DoctorCheck>();
  const notes = new Set<string>();
  for (const protocol of protocols) {
    const r = inspectAppToken(token.token, { protocol, app, expiresOn: token.expiresOn });
    r.notes.forEach((n) => notes.add(n));
    for (const p of r.problems) {
      const fix = ERROR_CATALOG[p.code].fix(fixContextOf(app, { protocol }));
      problems.set(`${p.code}|${p.detail}`, { layer: 'token', subject, status: 'fail', ms: got.ms, detail: p.detail, code: p.code, ...(fix ? { fix } : {}) });
    }
  }
  for (const c of problems.values()) run.add(c);
  if (!problems.size) run.add({ layer: 'token', subject, status: 'ok', ms: got.ms, detail: describeToken(token, protocols, [...notes]) });
  return token;
}

/** Reads the secret or certificate through the runtime's credential (its cache then serves the token request). */
async function checkCredential(runtime: Runtime, app: AppConfig, subject: string, run: DoctorRun): Promise<boolean> {
  const c = app.credential;
  if (c.kind === 'federated') {
    run.add({
      layer: 'keyvault',
      subject,
      status: 'ok',
      ms: 0,
      detail: `not used: federated credential (${c.clientId ? `managed identity ${c.clientId}` : 'system-assigned managed identity'}), no secret to expire`,
    });
    return true;
  }
  if (c.kind === 'secret' && c.secret.kind === 'plain') {
    run.add({ layer: 'keyvault', subject, status: 'ok', ms: 0, detail: 'not used: plain secret value from the settings (sandbox only)' });
    return true;
  }
  const where =
    c.kind === 'secret'
      ? c.secret.kind === 'keyvault'
        ? `secret "${c.secret.name}" in ${c.secret.vaultUrl}`
        : ''
      : `certificate "${c.certificate.name}" in ${c.certificate.vaultUrl}`;
  const credential = runtime.credential(app);
  const read = await timed(() => withTimeout(credential.msalAuth(), run.timeoutMs * 2, `Key Vault read of ${where}`));
  if (read.error) {
    run.add(failed('keyvault', subject, read.ms, withContext(read.error, fixContextOf(app))));
    return false;
  }
  const info = credential.info();
  const thumb = info.thumbprintSha256 ? `, SHA-256 thumbprint ${info.thumbprintSha256}` : '';
  if (!info.expiresOn) {
    run.add({ layer: 'keyvault', subject, status: 'ok', ms: read.ms, detail: `${where} readable${thumb}; no expiry date set` });
    return true;
  }
  const days = Math.floor((info.expiresOn.getTime() - Date.now()) / DAY_MS);
  const detail = `${where} readable${thumb}; expires ${info.expiresOn.toISOString()} (in ${days} day(s))`;
  if (!info.expiring) run.add({ layer: 'keyvault', subject, status: 'ok', ms: read.ms, detail });
  else
    run.add({
      layer: 'keyvault',
      subject,
      status: 'warn',
      ms: read.ms,
      detail: `${detail}: less than 30 days left`,
      code: 'CredentialExpiring',
      fix: ERROR_CATALOG.CredentialExpiring.fix(fixContextOf(app)),
    });
  return true;
}

function describeToken(t: AccessToken, protocols: readonly MailProtocol[], notes: string[]): string {
  const c = decodeClaims(t.token);
  const minutes = Math.round((t.expiresOn.getTime() - Date.now()) / 60_000);
  const aud = Array.isArray(c.aud) ? c.aud.join(' ') : (c.aud ?? '?');
  const checked = protocols.length ? ` (checked for ${protocols.join(', ')})` : '';
  const extra = notes.length ? `; ${notes.join('; ')}` : '';
  return `app-only token: aud ${aud}, tid ${c.tid ?? '?'}, roles [${(c.roles ?? []).join(', ')}]${checked}, expires in ${minutes} min${extra}`;
}
