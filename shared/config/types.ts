import type { AppConfig } from './apps.js';
import type { StorageConfig } from './storage.js';

export type { AppConfig, HostPort, SecretSource } from './apps.js';

/** What happens to a message once it is durably delivered. */
export type PostAction = { readonly kind: 'none' } | { readonly kind: 'seen' } | { readonly kind: 'delete' } | { readonly kind: 'move'; readonly folder: string };

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
  /** Protocol it is read with; default `imap`. */
  readonly protocol: 'imap' | 'pop3';
  /** Mail server host: the mailbox's `host` setting, else the app's endpoint for the protocol. */
  readonly host: string;
  /** Mail server port: the mailbox's `port`, else the protocol's default (993/995) with a `host` override, else the app's endpoint port. */
  readonly port: number;
  /** `implicit` TLS (993/995) or STARTTLS. */
  readonly tls: 'implicit' | 'starttls';
  /** The folder (POP3: INBOX). */
  readonly folder: string;
  /** What is done to a message once it is in the queue; default `none`. POP3 allows only `none` and `delete`. */
  readonly postAction: PostAction;
  /** IMAP: ignore messages received before this date. */
  readonly since?: Date;
  /** Messages larger than this are not fetched; they are reported as skipped. */
  readonly maxMessageBytes?: number;
  /** Notification settings; absent: this mailbox sends no notifications. */
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
  /** Path of that CA file (POSTROOM_CA_FILE), for messages; absent when no extra CA is trusted. */
  readonly caFile?: string;
  /** Storage account access and the names of the queues, containers and table. */
  readonly storage: StorageConfig;
  /** App registrations (`POSTROOM_APPS`), in settings order. */
  readonly apps: readonly AppConfig[];
  /** Mailboxes to poll (`POSTROOM_MAILBOXES`), in settings order. */
  readonly mailboxes: readonly MailboxConfig[];
  /** How polls are cut and bounded (`POSTROOM_BATCH_SIZE` and friends). */
  readonly poll: PollSettings;
  /** Lowest level logged (`POSTROOM_LOG_LEVEL`); default `info`. */
  readonly logLevel: 'debug' | 'info' | 'warn' | 'error';
  /** Things that work but deserve a look (logged once at start, shown by the doctor). */
  readonly warnings: readonly string[];
}
