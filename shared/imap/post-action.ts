import { PostroomError } from '../errors.js';
import type { ImapSession } from './session.js';

/**
 * Applies the mailbox's post-action to UIDs already delivered and
 * checkpointed. A failure loses nothing: the mailbox just keeps the message.
 */
export async function applyPostAction(
  session: ImapSession,
  uids: readonly number[],
  state: { moveTargetReady: boolean },
  options: { tolerateMissing?: boolean } = {},
): Promise<void> {
  const { client, mailbox } = session;
  const range = uids.join(',');
  const action = mailbox.postAction;
  let ok = true;
  try {
    if (action.kind === 'seen') ok = await client.messageFlagsAdd(range, ['\\Seen'], { uid: true });
    else if (action.kind === 'delete') ok = await client.messageDelete(range, { uid: true });
    else if (action.kind === 'move') {
      if (!state.moveTargetReady) {
        // imapflow reports a failed MOVE as `false`, hiding TRYCREATE: create the folder first.
        await client.mailboxCreate(action.folder).catch(() => undefined);
        state.moveTargetReady = true;
      }
      ok = Boolean(await client.messageMove(range, action.folder, { uid: true }));
    }
  } catch (e) {
    throw session.fail(e);
  }
  if (!ok && options.tolerateMissing) session.logger.info(`post-action ${action.kind}: nothing left to do for UIDs ${range}`, { mailbox: mailbox.id });
  else if (!ok) throw new PostroomError('CommandFailed', `post-action ${action.kind} failed for UIDs ${range}`, { subject: session.subject });
}
