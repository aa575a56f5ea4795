/**
 * The doctor's report: one check per layer and subject, in the order run.
 * `postroom doctor --json` prints a {@link DoctorReport}; its shape is
 * documented in docs/cli.md and kept stable.
 */
import type { Diagnosis } from '../diagnose/narrow.js';
import { PostroomError } from '../errors.js';

/** The layers, in the order the doctor walks them. */
export type DoctorLayer = 'settings' | 'keyvault' | 'token' | 'dns' | 'tcp' | 'tls' | 'auth' | 'folder' | 'smtp' | 'send' | 'storage';

/**
 *
 */
export type CheckStatus = 'ok' | 'fail' | 'warn';

/** One check's outcome. */
export interface DoctorCheck {
  /**
   *
   */
  layer: DoctorLayer;
  /** What was checked: an app, a mailbox id, `smtp:<from>`, a storage resource. */
  subject: string;
  /**
   *
   */
  status: CheckStatus;
  /** How long it took. */
  ms: number;
  /** What was found, one line (never a secret or token). */
  detail: string;
  /** The error code of a failure or warning. */
  code?: string;
  /** The admin step, filled in with the real ids. */
  fix?: string;
  /** A refused login narrowed down: why, and how sure (`certain`, `likely`, `possible`). */
  cause?: string;
  /**
   *
   */
  confidence?: string;
  /** What the diagnosis saw (probe results, token findings). */
  evidence?: string[];
}

/** Counts and the exit code. */
export interface DoctorSummary {
  /**
   *
   */
  ok: number;
  /**
   *
   */
  warn: number;
  /**
   *
   */
  fail: number;
  /**
   *
   */
  ms: number;
  /** 0: all ok or only warnings; 1: failures; 2: the settings do not load. */
  exitCode: 0 | 1 | 2;
}

/**
 *
 */
export interface DoctorReport {
  /**
   *
   */
  summary: DoctorSummary;
  /**
   *
   */
  checks: DoctorCheck[];
}

/** Options of `runDoctor`. */
export interface DoctorOptions {
  /** Mailbox ids or addresses to check; default all. */
  mailboxes?: readonly string[];
  /** Only this protocol's mailbox checks (`smtp`: only the senders). */
  protocol?: 'imap' | 'pop3' | 'smtp';
  /** Send one real message from each sender checked to this address. */
  sendTest?: string;
  /** Budget of each network step (DNS, TCP, TLS, a storage call, a probe); default 10 s. */
  timeoutMs?: number;
  /** Called with each check as it completes (the CLI prints as it goes). */
  onCheck?: (check: DoctorCheck) => void;
}

/** What every layer module gets. */
export interface DoctorRun {
  /**
   *
   */
  readonly timeoutMs: number;
  /** Records a check (and reports it). */
  add(check: DoctorCheck): DoctorCheck;
}

/** Runs `fn`, timing it; a throw becomes the returned error. */
export async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; value?: T; error?: unknown }> {
  const started = performance.now();
  try {
    const value = await fn();
    return { ms: Math.round(performance.now() - started), value };
  } catch (error) {
    return { ms: Math.round(performance.now() - started), error };
  }
}

/** A failed check from an error: its code, its first sentence, its filled-in fix. */
export function failed(layer: DoctorLayer, subject: string, ms: number, e: unknown, status: CheckStatus = 'fail'): DoctorCheck {
  if (e instanceof PostroomError) {
    const fixTail = e.fix ? ` Fix: ${e.fix}` : '';
    const detail = tidy(fixTail && e.message.endsWith(fixTail) ? e.message.slice(0, -fixTail.length) : e.message);
    return { layer, subject, status, ms, detail, code: e.code, ...(e.fix ? { fix: e.fix } : {}) };
  }
  return { layer, subject, status, ms, detail: e instanceof Error ? (e.message.split('\n')[0] ?? '') : String(e) };
}

/** A failed check carrying a diagnosis: its code, cause, fix, confidence and evidence. */
export function diagnosed(layer: DoctorLayer, subject: string, ms: number, d: Diagnosis, refusal: string): DoctorCheck {
  return { layer, subject, status: 'fail', ms, detail: tidy(refusal), code: d.code, fix: d.fix, cause: d.cause, confidence: d.confidence, evidence: [...d.evidence] };
}

/** A server reply ending in "." gets the message's closing "." too: one is enough. */
function tidy(text: string): string {
  return text.replace(/\.\.$/, '.');
}

/** Rejects with a `Timeout` PostroomError after `ms`. */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new PostroomError('Timeout', `${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}
