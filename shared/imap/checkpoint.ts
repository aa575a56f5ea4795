import type { MailboxConfig } from '../config/index.js';
import type { Logger } from '../logger.js';
import type { MailSession } from '../source.js';
import type { StateStore } from '../state.js';

/** What the checkpoint row holds (Table entity, ETag-guarded). */
export interface ImapCheckpoint extends Record<string, string | number | boolean | Uint8Array | null> {
  /** The folder's UIDVALIDITY the UIDs belong to. */
  uidValidity: string;
  /** Every UID up to this one is durably delivered. */
  lastUid: number;
  updatedAt: string;
}

/** StateStore key (partition = mailbox id) of the IMAP checkpoint. */
export const CHECKPOINT_KEY = 'imap-checkpoint';

/** Where a session starts: the checkpoint's last UID, its ETag, and a resync when UIDVALIDITY changed. */
export interface CheckpointPosition {
  lastUid: number;
  etag: string | null;
  resync?: MailSession['resync'];
}

/**
 * Reads the checkpoint for the folder's current UIDVALIDITY. When it
 * differs, old UIDs mean nothing: the folder is re-read from the start
 * (docs/uidvalidity.md) and every message of that pass carries `resync`.
 */
export async function readCheckpoint(state: StateStore, mailbox: MailboxConfig, uidValidity: string, logger: Logger): Promise<CheckpointPosition> {
  const rec = await state.get<ImapCheckpoint>(mailbox.id, CHECKPOINT_KEY);
  if (!rec) return { lastUid: 0, etag: null };
  if (rec.value.uidValidity === uidValidity) return { lastUid: Number(rec.value.lastUid) || 0, etag: rec.etag };
  logger.warn('UIDVALIDITY changed: re-reading the folder; messages carry "resync"', {
    mailbox: mailbox.address,
    folder: mailbox.folder,
    previous: rec.value.uidValidity,
    current: uidValidity,
  });
  return { lastUid: 0, etag: rec.etag, resync: { reason: 'UIDVALIDITY changed', previousValidity: rec.value.uidValidity } };
}
