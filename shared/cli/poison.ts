import { z } from 'zod';
import { parseArgs } from 'node:util';
import type { QueueClient } from '@azure/storage-queue';
import { decodeQueueJson } from '../queue-json.js';
import type { Runtime } from '../runtime.js';
import { CliUsageError, EXIT, renderTable, type CliContext } from './context.js';

export const POISON_USAGE = `postroom poison list [--queue jobs|notifications] [--json]
postroom poison show <id>
postroom poison replay <id> | --all [--queue jobs|notifications]
postroom poison purge [--queue jobs|notifications] [--yes]
  The poison queues of the jobs and notification queues (<queue>-poison). replay puts a message back on its
  original queue (after you fixed the cause) and deletes it from the poison queue only once that send succeeded.`;

/** A poison queue and the queue its messages came from. */
export interface PoisonQueue {
  /** Which one, as `--queue` names it. */
  kind: 'jobs' | 'notifications';
  /** The poison queue's name, `<original>-poison`. */
  name: string;
  /** The queue a replayed message is put back on (POSTROOM_JOBS_QUEUE or POSTROOM_NOTIFY_QUEUE). */
  original: string;
}

/** One message in a poison queue, as listed. */
export interface PoisonMessage {
  /** Name of the poison queue it is in. */
  queue: string;
  /** The queue message id (what `show` and `replay` take). */
  id: string;
  /** ISO 8601 time it was put on the poison queue, or null when the queue did not say. */
  insertedOn: string | null;
  /** Dequeue count the poison queue reports for it (not the tries on the original queue). */
  dequeueCount: number;
  /** One line: the kind of job and its mailbox, or `(not JSON)` / `(unknown schema …)`. */
  summary: string;
  /** The decoded JSON body, or the raw text when it is not JSON. */
  body: unknown;
}

const SCAN_VISIBILITY_SECONDS = 30;

/** `postroom poison <list|show|replay|purge>`. */
export async function poisonCommand(args: string[], ctx: CliContext): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: { queue: { type: 'string' }, json: { type: 'boolean', default: false }, all: { type: 'boolean', default: false }, yes: { type: 'boolean', default: false } },
    allowPositionals: true,
    strict: true,
  });
  const [action, id, extra] = positionals;
  if (extra !== undefined) throw new CliUsageError(`unexpected argument "${extra}"`);
  if (values.queue !== undefined && values.queue !== 'jobs' && values.queue !== 'notifications')
    throw new CliUsageError(`--queue must be jobs or notifications, not "${values.queue}"`);
  const queues = poisonQueues(ctx).filter((q) => !values.queue || q.kind === values.queue);
  const runtime = await ctx.runtime();
  switch (action) {
    case 'list':
      return listPoison(runtime, queues, values.json, ctx);
    case 'show':
      if (!id) throw new CliUsageError('poison show needs a message id (see poison list)');
      return showPoison(runtime, queues, id, ctx);
    case 'replay':
      if (!id === !values.all) throw new CliUsageError('poison replay needs a message id or --all (not both)');
      return replayPoison(runtime, queues, values.all ? undefined : id, ctx);
    case 'purge':
      return purgePoison(runtime, queues, values.yes, ctx);
    default:
      throw new CliUsageError(action ? `unknown poison action "${action}"` : 'poison needs an action: list, show, replay or purge');
  }
}

function poisonQueues(ctx: CliContext): PoisonQueue[] {
  const { jobsQueue, notifyQueue } = ctx.config().storage;
  return [
    { kind: 'jobs', name: `${jobsQueue}-poison`, original: jobsQueue },
    { kind: 'notifications', name: `${notifyQueue}-poison`, original: notifyQueue },
  ];
}

/** What a poison message is, in one line: the poll job's mailbox, or the notification's kind and mailbox. */
export function describePoison(text: string): { body: unknown; summary: string } {
  let body: unknown;
  try {
    body = decodeQueueJson(text, z.unknown(), 'queue message');
  } catch {
    return { body: text, summary: '(not JSON)' };
  }
  const b = body as { schema?: string; mailboxId?: string; scheduledAt?: string; kind?: string; mailbox?: string; createdAt?: string };
  if (b?.schema === 'postroom.job.v1') return { body, summary: `poll job for ${b.mailboxId} (scheduled ${b.scheduledAt})` };
  if (b?.schema === 'postroom.notification.v1') return { body, summary: `${b.kind} notification for ${b.mailbox ?? b.mailboxId} (created ${b.createdAt})` };
  return { body, summary: `(unknown schema ${String(b?.schema)})` };
}

async function listPoison(runtime: Runtime, queues: readonly PoisonQueue[], json: boolean, ctx: CliContext): Promise<number> {
  const all: PoisonMessage[] = [];
  const counts: Array<{ queue: string; approximateCount: number; shown: number }> = [];
  for (const pq of queues) {
    const q = await runtime.storage.queue(pq.name);
    const [{ approximateMessagesCount = 0 }, { peekedMessageItems }] = await Promise.all([q.getProperties(), q.peekMessages({ numberOfMessages: 32 })]);
    for (const m of peekedMessageItems) {
      all.push({ queue: pq.name, id: m.messageId, insertedOn: m.insertedOn?.toISOString() ?? null, dequeueCount: m.dequeueCount, ...describePoison(m.messageText) });
    }
    counts.push({ queue: pq.name, approximateCount: approximateMessagesCount, shown: peekedMessageItems.length });
  }
  if (json) {
    ctx.out(JSON.stringify({ queues: counts, messages: all }, null, 2));
    return EXIT.ok;
  }
  const rows = all.map((m) => [m.queue, m.id, m.insertedOn?.replace(/\.\d+Z$/, 'Z') ?? '-', String(m.dequeueCount), m.summary]);
  for (const l of renderTable(['QUEUE', 'ID', 'INSERTED', 'TRIES', 'MESSAGE'], rows)) ctx.out(l);
  for (const c of counts) {
    const more = c.approximateCount > c.shown ? ` (first ${c.shown} shown; Storage lists at most 32 without taking them)` : '';
    ctx.out(`${c.queue}: ${c.approximateCount} message(s)${more}`);
  }
  return EXIT.ok;
}

async function showPoison(runtime: Runtime, queues: readonly PoisonQueue[], id: string, ctx: CliContext): Promise<number> {
  for (const pq of queues) {
    const q = await runtime.storage.queue(pq.name);
    const { peekedMessageItems } = await q.peekMessages({ numberOfMessages: 32 });
    const hit = peekedMessageItems.find((m) => m.messageId === id);
    let text = hit?.messageText;
    let meta: { insertedOn: string | null; dequeueCount: number } | undefined = hit
      ? { insertedOn: hit.insertedOn?.toISOString() ?? null, dequeueCount: hit.dequeueCount }
      : undefined;
    if (!hit) {
      // Beyond the 32 a peek shows: look through the rest, putting every message back at once.
      await scanQueue(q, (m) => {
        if (m.messageId !== id) return Promise.resolve(false);
        text = m.messageText;
        meta = { insertedOn: m.insertedOn?.toISOString() ?? null, dequeueCount: m.dequeueCount };
        return Promise.resolve(false);
      });
    }
    if (text === undefined) continue;
    const { body, summary } = describePoison(text);
    ctx.out(JSON.stringify({ queue: pq.name, originalQueue: pq.original, id, ...meta, summary, body }, null, 2));
    return EXIT.ok;
  }
  ctx.err(`no message ${id} in ${queues.map((q) => q.name).join(' or ')}`);
  return EXIT.failed;
}

interface Received {
  messageId: string;
  popReceipt: string;
  messageText: string;
  insertedOn?: Date;
  dequeueCount: number;
}

/**
 * Receives every visible message once (hidden for a short while), hands each
 * to `take`; a message `take` did not consume (returned false) is made
 * visible again at once.
 */
async function scanQueue(q: QueueClient, take: (m: Received) => Promise<boolean>): Promise<void> {
  const release: Received[] = [];
  try {
    for (;;) {
      const { receivedMessageItems } = await q.receiveMessages({ numberOfMessages: 32, visibilityTimeout: SCAN_VISIBILITY_SECONDS });
      if (!receivedMessageItems.length) break;
      for (const m of receivedMessageItems) if (!(await take(m))) release.push(m);
    }
  } finally {
    await Promise.allSettled(release.map((m) => q.updateMessage(m.messageId, m.popReceipt, undefined, 0)));
  }
}

async function replayPoison(runtime: Runtime, queues: readonly PoisonQueue[], id: string | undefined, ctx: CliContext): Promise<number> {
  let replayed = 0;
  let failed = 0;
  for (const pq of queues) {
    const poison = await runtime.storage.queue(pq.name);
    const target = await runtime.storage.queue(pq.original);
    await scanQueue(poison, async (m) => {
      if (id !== undefined && m.messageId !== id) return false;
      try {
        await target.sendMessage(m.messageText);
      } catch (e) {
        failed++;
        ctx.err(`✗ ${m.messageId}: could not be sent to ${pq.original} (${(e as Error).message}); it stays in ${pq.name}`);
        return false;
      }
      // Only now is it safe to remove: the original queue has it again.
      await poison.deleteMessage(m.messageId, m.popReceipt);
      replayed++;
      ctx.out(`✓ replayed ${m.messageId} (${describePoison(m.messageText).summary}) from ${pq.name} to ${pq.original}`);
      return true;
    });
  }
  if (id !== undefined && !replayed && !failed) {
    ctx.err(`no message ${id} in ${queues.map((q) => q.name).join(' or ')}`);
    return EXIT.failed;
  }
  ctx.out(`replayed ${replayed} message(s)${failed ? `, ${failed} failed` : ''}`);
  return failed ? EXIT.failed : EXIT.ok;
}

async function purgePoison(runtime: Runtime, queues: readonly PoisonQueue[], yes: boolean, ctx: CliContext): Promise<number> {
  const clients = await Promise.all(queues.map(async (pq) => ({ pq, q: await runtime.storage.queue(pq.name) })));
  const counts = await Promise.all(clients.map(async ({ q }) => (await q.getProperties()).approximateMessagesCount ?? 0));
  if (!yes) {
    clients.forEach(({ pq }, i) => ctx.out(`${pq.name}: ${counts[i]} message(s) would be deleted`));
    throw new CliUsageError('poison purge deletes for good: re-run with --yes');
  }
  for (const [i, { pq, q }] of clients.entries()) {
    await q.clearMessages();
    ctx.out(`✓ purged ${pq.name} (${counts[i]} message(s))`);
  }
  return EXIT.ok;
}
