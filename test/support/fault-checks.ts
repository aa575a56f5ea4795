/**
 * What every fault-matrix row checks, over real Azurite queues and Dovecot
 * Maildirs: the whole output queue (not just a peek of 32), the mailbox's
 * messages by subject with their flags, and the matrix's properties
 * (0 lost, duplicates only under the same key, no post-action on an
 * unqueued message).
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { QueueClient } from '@azure/storage-queue';
import type { Stack } from './stack.js';

/** A small, unique message: its subject is how the checks find it again. */
export function taggedMessage(to: string, subject: string): Buffer {
  return Buffer.from(
    `From: Fault Matrix <matrix@fabrikam.test>\r\nTo: ${to}\r\nSubject: ${subject}\r\nMessage-ID: <${subject}@matrix.test>\r\n` +
      `Date: Mon, 2 Feb 2026 10:00:00 +0000\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nmessage ${subject}\r\n`,
  );
}

/** Delivers `count` tagged messages `<prefix>-<i>` into the mailbox; returns their subjects. */
export async function seedMailbox(stack: Stack, mailbox: string, prefix: string, count: number): Promise<string[]> {
  const subjects = Array.from({ length: count }, (_, i) => `${prefix}-${String(i).padStart(5, '0')}`);
  for (let i = 0; i < subjects.length; i += 16) {
    await Promise.all(subjects.slice(i, i + 16).map((s) => stack.sandbox.dovecot.deliver(mailbox, taggedMessage(mailbox, s))));
  }
  return subjects;
}

/** One queue message as the checks need it. */
export interface QueuedMessage {
  subject: string;
  key: string;
  resync: boolean;
}

/** Takes every message off a queue (receive + delete, 32 at a time): the output of the polls so far. */
export async function drainQueue(stack: Stack, queue: string): Promise<QueuedMessage[]> {
  const q = new QueueClient(stack.sandbox.azurite.connectionString, queue);
  if (!(await q.exists())) return [];
  const out: QueuedMessage[] = [];
  for (;;) {
    const { receivedMessageItems: items } = await q.receiveMessages({ numberOfMessages: 32, visibilityTimeout: 300 });
    if (!items.length) return out;
    for (const m of items) {
      const body = JSON.parse(Buffer.from(m.messageText, 'base64').toString('utf8'));
      out.push({ subject: String(body.headers?.subject ?? ''), key: String(body.idempotencyKey), resync: Boolean(body.resync) });
      await q.deleteMessage(m.messageId, m.popReceipt);
    }
  }
}

/** A message in the Maildir: its subject and Maildir flags (`S` = \Seen). */
export interface StoredMessage {
  subject: string;
  flags: string;
}

/** The messages of a mailbox folder in the sandbox Dovecot's Maildir, read from disk. */
export async function storedMessages(stack: Stack, mailbox: string, folder = 'INBOX'): Promise<StoredMessage[]> {
  const root = join(stack.dir, 'dovecot', 'mail', mailbox.toLowerCase(), 'Maildir');
  const dir = folder === 'INBOX' ? root : join(root, `.${folder}`);
  const out: StoredMessage[] = [];
  for (const m of await stack.sandbox.dovecot.listMessages(mailbox, folder)) {
    // Dovecot may rename a file (new/ → cur/, flags) between the listing and the read: look again.
    const text = await readFile(join(dir, m.file), 'latin1').catch(() => undefined);
    if (text === undefined) return storedMessages(stack, mailbox, folder);
    out.push({ subject: /^Subject: (.*)$/m.exec(text)?.[1]?.trim() ?? '', flags: m.flags });
  }
  return out;
}

/** Counts from {@link assertDelivery}. */
export interface DeliveryFigures {
  messages: number;
  /** Queue messages beyond one per message (all under the message's own key). */
  duplicates: number;
  lost: number;
}

/**
 * 0 lost (every subject in `expected` is in `queued`) and duplicates only
 * under the same key (one subject, one key); nothing queued that was not sent.
 */
export function assertDelivery(expected: readonly string[], queued: readonly QueuedMessage[], what: string): DeliveryFigures {
  const keys = new Map<string, Set<string>>();
  for (const m of queued) {
    const s = keys.get(m.subject) ?? new Set<string>();
    s.add(m.key);
    keys.set(m.subject, s);
  }
  const lost = expected.filter((s) => !keys.has(s));
  assert.deepEqual(lost.slice(0, 10), [], `${what}: ${lost.length} message(s) lost`);
  const wanted = new Set(expected);
  const strangers = [...keys.keys()].filter((s) => !wanted.has(s));
  assert.deepEqual(strangers.slice(0, 10), [], `${what}: queued messages that were never sent`);
  const split = [...keys].filter(([, k]) => k.size > 1).map(([s]) => s);
  assert.deepEqual(split.slice(0, 10), [], `${what}: a message delivered under more than one key`);
  return { messages: expected.length, duplicates: queued.length - keys.size, lost: lost.length };
}

/** No post-action on an unqueued message: every subject in `actedOn` is in `queued`. */
export function assertActedOnlyOnQueued(actedOn: Iterable<string>, queued: Iterable<QueuedMessage | string>, what: string): number {
  const inQueue = new Set([...queued].map((m) => (typeof m === 'string' ? m : m.subject)));
  const early = [...actedOn].filter((s) => !inQueue.has(s));
  assert.deepEqual(early.slice(0, 10), [], `${what}: post-action applied to ${early.length} message(s) not in the queue`);
  return inQueue.size;
}
