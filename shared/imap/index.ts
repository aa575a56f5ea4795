/** IMAP (imapflow) behind the `MailSource` seam. */
export { createSource, CHECKPOINT_KEY, type ImapCheckpoint } from './source.js';
export { mapImapError } from './errors.js';
