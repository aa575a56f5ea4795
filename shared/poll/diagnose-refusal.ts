/**
 * After a poll's login was refused (the fresh-token retry included), the
 * same token is tried over the other protocols to the same mailbox, so the
 * poll's error and the status row say which admin step is missing instead of
 * Exchange's bare "AUTHENTICATE failed". Bounded: a diagnosis that takes too
 * long is dropped and the refusal is reported as it was.
 */
import type { MailboxConfig } from '../config/index.js';
import type { PostroomError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Runtime } from '../runtime.js';
import { narrowAuthRefusal, type Diagnosis } from '../diagnose/narrow.js';
import { directProbes } from '../diagnose/probes.js';

/** Options of {@link diagnoseRefusal}. */
export interface DiagnoseRefusalOptions {
  /** The whole diagnosis, probes included; default 10 s. */
  timeoutMs?: number;
  /**
   *
   */
  logger?: Logger;
}

/**
 * The refusal `err` of `mailbox` narrowed down, or undefined when `err` is
 * not a refusal, no token could be had, or the probes ran out of time.
 *
 * @example
 * ```ts
 * const d = await diagnoseRefusal(runtime, mailbox, error);
 * if (d) error = d.error; // ServicePrincipalNotRegistered, ProtocolDisabled, …
 * ```
 */
export async function diagnoseRefusal(runtime: Runtime, mailbox: MailboxConfig, err: PostroomError, o: DiagnoseRefusalOptions = {}): Promise<Diagnosis | undefined> {
  if (err.code !== 'AuthenticationFailed') return undefined;
  const timeoutMs = o.timeoutMs ?? 10_000;
  const log = o.logger ?? runtime.logger;
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), timeoutMs);
    timer.unref();
  });
  const run = async (): Promise<Diagnosis> => {
    // The token the source was refused with (msal's cache holds the fresh one of the retry).
    const { token, expiresOn } = await runtime.tokens(mailbox.app).getToken({ signal: AbortSignal.timeout(timeoutMs) });
    const probe = directProbes({
      app: mailbox.app,
      mailbox: mailbox.address,
      token,
      ca: runtime.config.ca,
      timeoutMs: Math.max(1000, Math.floor(timeoutMs / 2)),
      folder: mailbox.folder,
      endpoints: { [mailbox.protocol]: { host: mailbox.host, port: mailbox.port } },
    });
    return narrowAuthRefusal({ refused: mailbox.protocol, token, expiresOn, app: mailbox.app, mailbox: mailbox.address, probe, error: err });
  };
  try {
    const d = await Promise.race([run(), expired]);
    if (!d) log.warn('refusal not narrowed down in time', { mailbox: mailbox.id, timeoutMs });
    else log.info('refusal narrowed down', { mailbox: mailbox.id, code: d.code, confidence: d.confidence, evidence: d.evidence.join('; ') });
    return d;
  } catch (e) {
    log.warn('refusal could not be narrowed down', { mailbox: mailbox.id, error: e as Error });
    return undefined;
  } finally {
    clearTimeout(timer);
  }
}
