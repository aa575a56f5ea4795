import type { AppConfig } from './apps.js';
import type { StorageConfig } from './storage.js';

export type { AppConfig, HostPort, SecretSource } from './apps.js';

/** What happens to a message once it is durably delivered. */
export type PostAction =
  | { readonly kind: 'none' }
  | { readonly kind: 'seen' }
  | { readonly kind: 'delete' }
  | { readonly kind: 'move'; readonly folder: string };

/** A mailbox's notification settings. */
export interface NotifyConfig {
  /** Recipients of digests, notices and alerts. */
  readonly to: readonly string[];
  /** The sender mailbox (the app must be allowed to send as it); default the polled mailbox. */
  readonly from: string;
  /** A digest after each poll that ingested mail. */
  readonly digest: boolean;
  /** One notice per ingested message (at most 25 a poll). */
  readonly perMessage: boolean;
  /** Alert after this many failed polls in a row. */
  readonly failureThreshold: number;
  /** Put before every notification subject (header-safe: no control characters). */
  readonly subjectPrefix: string;
}

/** One mailbox (and folder) to poll. */
export interface MailboxConfig {
  /** Stable id: `${protocol}:${address}/${folder}` (address lower-cased, INBOX in capitals). */
  readonly id: string;
  /** A short hash of `id`, safe in blob names and table keys. */
  readonly key: string;
  /** The mailbox address; goes in XOAUTH2's `user=`. */
  readonly address: string;
  /** The app registration that reads it. */
  readonly app: AppConfig;
  readonly protocol: 'imap' | 'pop3';
  readonly host: string;
  readonly port: number;
  /** `implicit` TLS (993/995) or STARTTLS. */
  readonly tls: 'implicit' | 'starttls';
  /** The folder (POP3: INBOX). */
  readonly folder: string;
  readonly postAction: PostAction;
  /** IMAP: ignore messages received before this date. */
  readonly since?: Date;
  /** Messages larger than this are not fetched; they are reported as skipped. */
  readonly maxMessageBytes?: number;
  readonly notify?: NotifyConfig;
}

/** How polls are cut and bounded. */
export interface PollSettings {
  /** Messages per batch. */
  readonly batchSize: number;
  /** Messages in flight (parse + write) at once. */
  readonly concurrency: number;
  /** At most this many messages per poll. */
  readonly maxMessagesPerPoll: number;
  /** The mailbox lease (15-60 s), renewed while the poll runs. */
  readonly leaseSeconds: number;
  /** TCP connect + TLS + greeting timeout. */
  readonly connectTimeoutMs: number;
  /** After this long a poll reads no new batch, acknowledges what is written and ends (well inside the host's functionTimeout). */
  readonly deadlineSeconds: number;
}

/** Postroom's settings: validated once, typed and frozen. */
export interface PostroomConfig {
  /** NCRONTAB (six fields) of the timer. */
  readonly schedule: string;
  /** Local sandbox: plain secret values allowed. */
  readonly sandbox: boolean;
  /** Contents of the CA file named by POSTROOM_CA_FILE: added to TLS trust for every client. */
  readonly ca?: string;
  readonly caFile?: string;
  readonly storage: StorageConfig;
  readonly apps: readonly AppConfig[];
  readonly mailboxes: readonly MailboxConfig[];
  readonly poll: PollSettings;
  readonly logLevel: 'debug' | 'info' | 'warn' | 'error';
  /** Things that work but deserve a look (logged once at start, shown by the doctor). */
  readonly warnings: readonly string[];
}
