import type { MailboxConfig } from '../config/index.js';
import type { CreateSource, MailSession, MailSource, SourceDeps } from '../source.js';
import { imapBatches } from './batches.js';
import { CHECKPOINT_KEY, readCheckpoint, type ImapCheckpoint } from './checkpoint.js';
import { applyPostAction } from './post-action.js';
import { openImapSession, type ImapSession } from './session.js';

export { CHECKPOINT_KEY, type ImapCheckpoint } from './checkpoint.js';

/** Messages up to this size are fetched together with their group; larger ones stream in partial fetches. */
const PREFETCH_LIMIT_BYTES = 1024 * 1024;

/**
 * Incremental IMAP source: UIDs above the checkpoint `{ uidValidity, lastUid }`.
 *
 * UIDVALIDITY policy (docs/uidvalidity.md): when the folder's UIDVALIDITY
 * differs from the checkpoint's, the folder is re-read from the start
 * (subject to `since`) and every message of that pass carries `resync`.
 *
 * @example
 * ```ts
 * const source = createSource(mailbox, { getToken, state, logger, batchSize: 50, maxMessages: 5000, connectTimeoutMs: 15000 });
 * const session = await source.open();
 * ```
 */
export const createSource: CreateSource = (mailbox: MailboxConfig, deps: SourceDeps): MailSource => ({
  protocol: 'imap',
  async open(options = {}) {
    options.signal?.throwIfAborted();
    const session = await openImapSession(mailbox, deps);
    try {
      return await selectFolder(session, deps);
    } catch (e) {
      session.client.close();
      throw session.fail(e);
    }
  },
});

async function selectFolder(session: ImapSession, deps: SourceDeps): Promise<MailSession> {
  const { client, mailbox } = session;
  const box = await client.mailboxOpen(mailbox.folder, { readOnly: mailbox.postAction.kind === 'none' });
  const uidValidity = String(box.uidValidity);
  const uidNext = Number(box.uidNext ?? 0);
  const position = await readCheckpoint(deps.state, mailbox, uidValidity, deps.logger);
  let { lastUid, etag } = position;
  const moveState = { moveTargetReady: false };
  return {
    folder: mailbox.folder,
    validity: uidValidity,
    resync: position.resync,
    async *batches(bopts = {}) {
      // UIDNEXT from SELECT says whether anything arrived: an idle poll costs no SEARCH.
      if (uidNext > 0 && uidNext <= lastUid + 1) return;
      yield* imapBatches(session, lastUid, { batchSize: deps.batchSize, maxMessages: deps.maxMessages, prefetchLimitBytes: PREFETCH_LIMIT_BYTES, signal: bopts.signal });
    },
    async acknowledge(messages) {
      if (!messages.length) return;
      const uids = messages.map((m) => Number(m.id));
      const newLast = Math.max(lastUid, ...uids);
      const value: ImapCheckpoint = { uidValidity, lastUid: newLast, updatedAt: new Date().toISOString() };
      etag = await deps.state.put<ImapCheckpoint>(mailbox.id, CHECKPOINT_KEY, value, etag);
      lastUid = newLast;
      await applyPostAction(session, uids, moveState);
    },
    async close() {
      await client.logout().catch(() => client.close());
    },
    abort() {
      try {
        client.close();
      } catch {
        /* already closed */
      }
    },
  };
}
