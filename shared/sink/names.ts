import { createHash } from 'node:crypto';

/** Version of the queue message schema (docs/message-schema.md). */
export const MESSAGE_SCHEMA = 'postroom.message.v1';

/** What identifies one message for good: the inputs of its idempotency key. */
export interface IdempotencyParts {
  /** Entra tenant id of the app; lower-cased into the key. */
  tenantId: string;
  /** The mailbox address; lower-cased into the key. */
  mailbox: string;
  /** IMAP folder path as in the settings, INBOX upper-cased (POP3: `INBOX`); case-sensitive in the key. */
  folder: string;
  /** IMAP UIDVALIDITY, or 'pop3'. */
  validity: string;
  /** IMAP UID, or POP3 UIDL. */
  id: string;
}

/**
 * The deterministic idempotency key of a message: the same message in the
 * same folder generation always gets the same key, on any instance, however
 * often it is re-delivered.
 *
 * @example
 * ```ts
 * idempotencyKey({ tenantId: 't', mailbox: 'Box@Contoso.com', folder: 'INBOX', validity: '7', id: '42' });
 * // => 64 hex chars; the mailbox is compared case-insensitively
 * ```
 */
export function idempotencyKey(p: IdempotencyParts): string {
  const canonical = JSON.stringify(['v1', p.tenantId.toLowerCase(), p.mailbox.toLowerCase(), p.folder, p.validity, p.id]);
  return createHash('sha256').update(canonical).digest('hex');
}

/**
 * Makes an untrusted attachment filename safe as the last segment of a blob
 * name: no path (either slash), no `..`, no control or format characters,
 * no leading dots, bounded length. Letters of any script are kept.
 */
export function safeBlobSegment(name: string | null | undefined, fallback = 'attachment'): string {
  let s = (name ?? '').normalize('NFC');
  s = s.split(/[\\/]/).pop() ?? '';
  s = s.replace(/[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}]/gu, '');
  s = s.replace(/[^\p{L}\p{M}\p{N} ._()+,=@-]/gu, '_');
  s = s.replace(/\.{2,}/g, '.').replace(/^[.\s]+|[.\s]+$/g, '');
  if ([...s].length > 100) {
    const ext = /\.[\p{L}\p{N}]{1,10}$/u.exec(s)?.[0] ?? '';
    s = [...s].slice(0, 100 - [...ext].length).join('') + ext;
  }
  return s || fallback;
}
