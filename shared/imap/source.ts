import type { MailboxConfig } from '../config/index.js';
import { connectSignal, type CreateSource, type MailSession, type MailSource, type SourceDeps } from '../source.js';
import { imapBatches } from './batches.js';
import { CheckpointWriter, readCheckpoint } from './checkpoint.js';
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
    const signal = connectSignal(options);
    signal?.throwIfAborted();
    const session = await openImapSession(mailbox, deps, { ...options, signal });
    // imapflow's commands take no signal: closing the client is how an abort reaches a pending one.
    const onAbort = () => session.client.close();
    options.signal?.addEventListener('abort', onAbort, { once: true });
    session.client.once('close', () => options.signal?.removeEventListener('abort', onAbort));
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
  const checkpoint = new CheckpointWriter(deps.state, mailbox, uidValidity, position);
  const moveState = { moveTargetReady: false };
  const withPostAction = mailbox.postAction.kind !== 'none';
  await applyPendingPostActions(session, checkpoint, moveState);
  return {
    folder: mailbox.folder,
    validity: uidValidity,
    resync: position.resync,
    stats: { messages: box.exists, ...(uidNext > 0 ? { uidNext } : {}) },
    async *batches(bopts = {}) {
      // UIDNEXT from SELECT says whether anything arrived: an idle poll costs no SEARCH.
      if (uidNext > 0 && uidNext <= checkpoint.lastUid + 1) return;
      const o = { batchSize: deps.batchSize, maxMessages: deps.maxMessages, prefetchLimitBytes: PREFETCH_LIMIT_BYTES, signal: bopts.signal };
      yield* imapBatches(session, checkpoint.lastUid, o);
    },
    async acknowledge(messages) {
      if (!messages.length) return;
      const uids = messages.map((m) => Number(m.id));
      await checkpoint.delivered(uids, withPostAction);
      if (!withPostAction) return;
      await applyPostAction(session, uids, moveState);
      await checkpoint.postActioned(uids);
    },
    async checkpoint(messages) {
      if (messages.length)
        await checkpoint.delivered(
          messages.map((m) => Number(m.id)),
          withPostAction,
        );
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

/** Post-actions an earlier session recorded but could not apply (it died after the checkpoint): applied first. */
async function applyPendingPostActions(session: ImapSession, checkpoint: CheckpointWriter, moveState: { moveTargetReady: boolean }): Promise<void> {
  const pending = checkpoint.pending;
  if (!pending.length) return;
  if (session.mailbox.postAction.kind === 'none') return checkpoint.postActioned(pending);
  session.logger.info('applying post-actions left pending by an earlier session', { mailbox: session.mailbox.id, count: pending.length });
  // Some may be gone already (moved or deleted just before that session died): the server skips those UIDs.
  await applyPostAction(session, pending, moveState, { tolerateMissing: true });
  await checkpoint.postActioned(pending);
}
