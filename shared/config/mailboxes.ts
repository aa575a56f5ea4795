import { createHash } from 'node:crypto';
import { DEFAULT_PORTS } from './clouds.js';
import { issuePath, MailboxSchema, type MailboxSettings } from './schema.js';
import type { AppConfig, MailboxConfig, PostAction } from './types.js';

/**
 * Parses `POSTROOM_MAILBOXES` entry by entry: an entry that fails the schema
 * is reported and skipped, and the cross-entry checks (unknown app,
 * duplicates) still run over the others, so every problem is listed at once.
 */
export function parseMailboxes(raw: unknown, apps: ReadonlyMap<string, AppConfig>, problems: string[]): MailboxConfig[] {
  if (raw === undefined) return [];
  if (!Array.isArray(raw)) {
    problems.push('POSTROOM_MAILBOXES: must be a JSON array of mailboxes');
    return [];
  }
  const ids = new Map<string, number>();
  const out: MailboxConfig[] = [];
  raw.forEach((entry, i) => {
    const at = `POSTROOM_MAILBOXES[${i}]`;
    const r = MailboxSchema.safeParse(entry);
    if (!r.success) {
      for (const issue of r.error.issues) problems.push(`${at}${issuePath(issue.path)}: ${issue.message}`);
      return;
    }
    const mailbox = resolveMailbox(r.data, at, apps, problems);
    if (!mailbox) return;
    // Exchange compares folder names without regard to case: one folder under two
    // spellings would be delivered twice, under two idempotency keys.
    const same = mailbox.id.toLowerCase();
    const first = ids.get(same);
    if (first !== undefined) problems.push(`${at}: ${mailbox.id} is configured twice (also POSTROOM_MAILBOXES[${first}]; folder names are compared without regard to case)`);
    else ids.set(same, i);
    out.push(mailbox);
  });
  return out;
}

function resolveMailbox(m: MailboxSettings, at: string, apps: ReadonlyMap<string, AppConfig>, problems: string[]): MailboxConfig | undefined {
  const app = pickApp(m, at, apps, problems);
  const postAction = parsePostAction(m.postAction);
  // IMAP's INBOX is case-insensitive (RFC 3501 5.1): one spelling, so one idempotency key.
  const folder = m.folder.toUpperCase() === 'INBOX' ? 'INBOX' : m.folder;
  checkProtocolRules(m, folder, postAction, at, problems);
  if (!app) return undefined;
  const endpoint = app.endpoints[m.protocol];
  const id = `${m.protocol}:${m.address.toLowerCase()}/${folder}`;
  return Object.freeze({
    id,
    key: createHash('sha256').update(id).digest('hex').slice(0, 24),
    address: m.address,
    app,
    protocol: m.protocol,
    host: m.host ?? endpoint.host,
    port: m.port ?? (m.host ? DEFAULT_PORTS[m.protocol] : endpoint.port),
    tls: m.tls,
    folder,
    postAction,
    since: m.since ? new Date(m.since) : undefined,
    maxMessageBytes: m.maxMessageBytes,
    notify: m.notify ? Object.freeze({ ...m.notify, to: Object.freeze([...m.notify.to]), from: m.notify.from ?? m.address }) : undefined,
  });
}

function pickApp(m: MailboxSettings, at: string, apps: ReadonlyMap<string, AppConfig>, problems: string[]): AppConfig | undefined {
  if (m.app !== undefined) {
    const app = apps.get(m.app);
    if (!app) problems.push(`${at}.app: no app named "${m.app}" in POSTROOM_APPS (have: ${[...apps.keys()].join(', ') || 'none'})`);
    return app;
  }
  if (apps.size === 1) return [...apps.values()][0];
  if (apps.size > 1) problems.push(`${at}.app: required when POSTROOM_APPS has more than one app`);
  return undefined;
}

function checkProtocolRules(m: MailboxSettings, folder: string, postAction: PostAction, at: string, problems: string[]): void {
  if (m.protocol === 'pop3') {
    if (folder !== 'INBOX') problems.push(`${at}.folder: POP3 sees the Inbox only; remove "folder" or use imap`);
    if (postAction.kind === 'seen' || postAction.kind === 'move') problems.push(`${at}.postAction: POP3 supports only 'none' or 'delete'`);
    // POP3 has no dates before a message is downloaded: "since" would be silently ignored.
    if (m.since) problems.push(`${at}.since: POP3 cannot select messages by date; remove "since" or use imap`);
  }
  if (postAction.kind === 'move' && postAction.folder.trim() === '') problems.push(`${at}.postAction: "move:" needs a folder name`);
  if (postAction.kind === 'move' && postAction.folder.toLowerCase() === folder.toLowerCase()) problems.push(`${at}.postAction: moving to the polled folder itself would loop`);
}

function parsePostAction(v: string): PostAction {
  if (v.startsWith('move:')) return { kind: 'move', folder: v.slice(5) };
  return { kind: v as 'none' | 'seen' | 'delete' };
}
