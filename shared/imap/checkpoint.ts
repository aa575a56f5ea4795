import type { MailboxConfig } from '../config/index.js';
import type { Logger } from '../logger.js';
import type { MailSession } from '../source.js';
import type { StateStore } from '../state.js';
import { formatUidSet, parseUidSet } from './uid-set.js';

/** What the checkpoint row holds (Table entity, ETag-guarded). */
export interface ImapCheckpoint extends Record<string, string | number | boolean | Uint8Array | null> {
  /** The folder's UIDVALIDITY the UIDs belong to. */
  uidValidity: string;
  /** Every UID up to this one is durably delivered. */
  lastUid: number;
  /** Delivered UIDs whose post-action has not been applied yet (a UID set; '' when none). */
  pendingPostAction: string;
  /** ISO 8601 time of the last write (for people reading the table; not used to decide anything). */
  updatedAt: string;
}

/** StateStore key (partition = mailbox id) of the IMAP checkpoint. */
export const CHECKPOINT_KEY = 'imap-checkpoint';

/** Where a session starts: the checkpoint's last UID, its ETag, and a resync when UIDVALIDITY changed. */
export interface CheckpointPosition {
  /** Read messages with a higher UID; 0 when there is no checkpoint or UIDVALIDITY changed. */
  lastUid: number;
  /** The checkpoint row's ETag for the next guarded write; null when there is no row yet. */
  etag: string | null;
  /** UIDs (of this UIDVALIDITY) delivered but not yet post-actioned. */
  pending: number[];
  /** Set when UIDVALIDITY changed: the folder is re-read and each message carries it; absent otherwise. */
  resync?: MailSession['resync'];
}

/**
 * Reads the checkpoint for the folder's current UIDVALIDITY. When it
 * differs, old UIDs mean nothing: the folder is re-read from the start
 * (docs/uidvalidity.md), every message of that pass carries `resync`, and
 * pending post-actions of the old UIDs are dropped (they would hit other messages).
 */
export async function readCheckpoint(state: StateStore, mailbox: MailboxConfig, uidValidity: string, logger: Logger): Promise<CheckpointPosition> {
  const rec = await state.get<ImapCheckpoint>(mailbox.id, CHECKPOINT_KEY);
  if (!rec) return { lastUid: 0, etag: null, pending: [] };
  if (rec.value.uidValidity === uidValidity) {
    return { lastUid: Number(rec.value.lastUid) || 0, etag: rec.etag, pending: parseUidSet(String(rec.value.pendingPostAction ?? '')) };
  }
  logger.warn('UIDVALIDITY changed: re-reading the folder; messages carry "resync"', {
    mailbox: mailbox.address,
    folder: mailbox.folder,
    previous: rec.value.uidValidity,
    current: uidValidity,
  });
  return { lastUid: 0, etag: rec.etag, pending: [], resync: { reason: 'UIDVALIDITY changed', previousValidity: rec.value.uidValidity } };
}

/** The checkpoint of one session: advanced in order, ETag-guarded against a second writer. */
export class CheckpointWriter {
  #etag: string | null;
  #lastUid: number;
  #pending: Set<number>;

  constructor(
    private readonly state: StateStore,
    private readonly mailbox: MailboxConfig,
    private readonly uidValidity: string,
    position: CheckpointPosition,
  ) {
    this.#etag = position.etag;
    this.#lastUid = position.lastUid;
    this.#pending = new Set(position.pending);
  }

  /** The highest UID durably delivered. */
  get lastUid(): number {
    return this.#lastUid;
  }

  /** UIDs delivered whose post-action is pending. */
  get pending(): number[] {
    return [...this.#pending];
  }

  /** Records `uids` as delivered; with `postActionPending` they are marked for the post-action. */
  async delivered(uids: readonly number[], postActionPending: boolean): Promise<void> {
    const lastUid = Math.max(this.#lastUid, ...uids);
    const pending = new Set(this.#pending);
    if (postActionPending) for (const u of uids) pending.add(u);
    await this.#write(lastUid, pending);
  }

  /** Clears the pending mark of `uids` once their post-action is applied. */
  async postActioned(uids: readonly number[]): Promise<void> {
    const pending = new Set(this.#pending);
    for (const u of uids) pending.delete(u);
    if (pending.size !== this.#pending.size) await this.#write(this.#lastUid, pending);
  }

  async #write(lastUid: number, pending: Set<number>): Promise<void> {
    const value: ImapCheckpoint = { uidValidity: this.uidValidity, lastUid, pendingPostAction: formatUidSet(pending), updatedAt: new Date().toISOString() };
    this.#etag = await this.state.put<ImapCheckpoint>(this.mailbox.id, CHECKPOINT_KEY, value, this.#etag);
    this.#lastUid = lastUid;
    this.#pending = pending;
  }
}
