/**
 * DNS, TCP and TLS checks in front of a protocol step. The poll has no such
 * step (its clients connect, shake hands and log in in one go), so these use
 * node:dns/net/tls directly; every protocol step after them is the poll's own.
 */
import { lookup } from 'node:dns/promises';
import { connect as tcpConnect, isIP } from 'node:net';
import { connect as tlsConnect, type PeerCertificate, type TLSSocket } from 'node:tls';
import { PostroomError, type FixContext } from '../errors.js';
import { trustedCas } from '../tls.js';
import { timed, failed, type DoctorCheck, type DoctorRun } from './types.js';

/** Where to connect, and for whom the errors are. */
export interface NetworkTarget {
  /**
   *
   */
  host: string;
  /**
   *
   */
  port: number;
  /** `implicit`: a TLS handshake right after connect (993, 995); `starttls`: none here (the protocol step does it). */
  tls: 'implicit' | 'starttls';
  /** The check's subject (a mailbox id, `smtp:<from>`). */
  subject: string;
  /** Filled into the fixes. */
  context: FixContext;
  /** Extra CA (PEM), added to the system's. */
  ca?: string;
}

const DAY_MS = 86_400_000;

/** DNS, then TCP, then (implicit TLS) the handshake and certificate; false once one fails (the rest is skipped). */
export async function checkNetwork(t: NetworkTarget, run: DoctorRun): Promise<boolean> {
  const dns = await timed(() => resolveHost(t.host, run.timeoutMs));
  if (dns.error) {
    run.add(failed('dns', t.subject, dns.ms, netError(t, dns.error, `DNS lookup of ${t.host}`)));
    return false;
  }
  run.add({ layer: 'dns', subject: t.subject, status: 'ok', ms: dns.ms, detail: dns.value! });
  const tcp = await timed(() => openTcp(t.host, t.port, run.timeoutMs));
  if (tcp.error) {
    run.add(failed('tcp', t.subject, tcp.ms, netError(t, tcp.error, `TCP connect to ${t.host}:${t.port}`)));
    return false;
  }
  run.add({ layer: 'tcp', subject: t.subject, status: 'ok', ms: tcp.ms, detail: `${t.host}:${t.port} accepts connections` });
  if (t.tls !== 'implicit') return true;
  const hs = await timed(() => handshake(t, run.timeoutMs));
  if (hs.error) {
    run.add(failed('tls', t.subject, hs.ms, netError(t, hs.error, `TLS handshake with ${t.host}:${t.port}`)));
    return false;
  }
  return run.add({ ...hs.value!, subject: t.subject, ms: hs.ms }).status !== 'fail';
}

/** DNS and TCP of a host:port (storage endpoints); the layer names the subject's own. */
export async function checkReachable(host: string, port: number, timeoutMs: number): Promise<string | undefined> {
  try {
    await resolveHost(host, timeoutMs);
    await openTcp(host, port, timeoutMs);
    return undefined;
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    return `${host}:${port}: ${err.code ? `${err.code} ` : ''}${err.message}`;
  }
}

async function resolveHost(host: string, timeoutMs: number): Promise<string> {
  if (isIP(host)) return `${host} is an IP address (no lookup)`;
  const all = await Promise.race([
    lookup(host, { all: true }),
    new Promise<never>((_, reject) => setTimeout(() => reject(Object.assign(new Error(`no answer within ${timeoutMs} ms`), { code: 'ETIMEOUT' })), timeoutMs).unref()),
  ]);
  return `${host} -> ${all.map((a) => a.address).join(', ')}`;
}

function openTcp(host: string, port: number, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = tcpConnect({ host, port, timeout: timeoutMs });
    s.once('connect', () => (s.destroy(), resolve()));
    s.once('timeout', () => (s.destroy(), reject(Object.assign(new Error(`no answer within ${timeoutMs} ms`), { code: 'ETIMEDOUT' }))));
    s.once('error', reject);
  });
}

/** One handshake that does not reject, so an untrusted certificate can still be named. */
function handshake(t: NetworkTarget, timeoutMs: number): Promise<Omit<DoctorCheck, 'subject' | 'ms'>> {
  return new Promise((resolve, reject) => {
    const s: TLSSocket = tlsConnect({
      host: t.host,
      port: t.port,
      ...(isIP(t.host) ? {} : { servername: t.host }),
      ca: trustedCas(t.ca),
      minVersion: 'TLSv1.2',
      rejectUnauthorized: false,
      timeout: timeoutMs,
    });
    s.once('secureConnect', () => {
      const cert = s.getPeerCertificate();
      const version = s.getProtocol() ?? 'TLS';
      const why = s.authorized ? undefined : String(s.authorizationError);
      s.destroy();
      resolve(describeCertificate(t, version, cert, why));
    });
    s.once('timeout', () => (s.destroy(), reject(Object.assign(new Error(`no handshake within ${timeoutMs} ms`), { code: 'ETIMEDOUT' }))));
    s.once('error', reject);
  });
}

function describeCertificate(t: NetworkTarget, version: string, cert: PeerCertificate, untrusted: string | undefined): Omit<DoctorCheck, 'subject' | 'ms'> {
  const name = (n: PeerCertificate['subject'] | undefined): string => (n ? String(n.CN ?? n.O ?? Object.values(n).join(' ')) : '?');
  const expires = cert.valid_to ? new Date(cert.valid_to) : undefined;
  const what = `${version}, certificate ${name(cert.subject)} issued by ${name(cert.issuer)}, expires ${expires?.toISOString().slice(0, 10) ?? '?'}`;
  if (untrusted) {
    const err = new PostroomError('TlsFailed', `${what}: not trusted by this host (${untrusted})`, { subject: `${t.host}:${t.port}`, context: t.context });
    return {
      layer: 'tls',
      status: 'fail',
      detail: err.detail,
      code: 'TlsFailed',
      fix: `${err.fix} ${t.ca ? 'The CA file named by POSTROOM_CA_FILE is trusted too; it did not sign this certificate.' : 'A private CA: name its PEM file in POSTROOM_CA_FILE (added to the system trust).'}`,
    };
  }
  if (expires && expires.getTime() - Date.now() < 30 * DAY_MS) {
    return { layer: 'tls', status: 'warn', detail: `${what}: expires in ${Math.floor((expires.getTime() - Date.now()) / DAY_MS)} day(s)`, code: 'CertificateExpiring' };
  }
  return { layer: 'tls', status: 'ok', detail: what };
}

/** A socket error as the poll's mappers would code it, with the target's fix. */
function netError(t: NetworkTarget, e: unknown, what: string): PostroomError {
  if (e instanceof PostroomError) return e;
  const err = e as NodeJS.ErrnoException;
  const code = /^(ERR_TLS|ERR_SSL|CERT_|UNABLE_TO|DEPTH_ZERO|SELF_SIGNED)/.test(String(err.code ?? '')) ? 'TlsFailed' : 'ConnectionFailed';
  return new PostroomError(code, `${what} failed: ${err.code ? `${err.code} ` : ''}${err.message}`, { subject: t.subject, context: t.context, cause: e });
}
