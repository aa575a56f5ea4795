import { randomUUID } from 'node:crypto';
import type { DequeuedMessageItem, QueueClient } from '@azure/storage-queue';
import type { Logger } from '../shared/logger.js';
import { setRuntime, type Runtime } from '../shared/runtime.js';

/**
 * A small stand-in for the Azure Functions host, for machines without the
 * Functions Core Tools: it fires the timer function on its NCRONTAB schedule
 * and feeds queue-triggered functions the way the host does (base64 JSON
 * decoded, dequeueCount, retries after a visibility timeout, and
 * `<queue>-poison` after maxDequeueCount failures). It calls the very
 * handlers the function files register.
 */
export interface LocalHostOptions {
  runtime: Runtime;
  logger: Logger;
  /** NCRONTAB (six fields); default the runtime's schedule. */
  schedule?: string;
  maxDequeueCount?: number;
  /** Seconds before a failed message is offered again (the host uses host.json's visibilityTimeout). */
  retryVisibilitySeconds?: number;
  pollIntervalMs?: number;
  /** Messages fetched at once per queue (host.json `queues.batchSize`; default 4, as ours). */
  batchSize?: number;
  /** A new batch is fetched when this many or fewer are still running (host.json `newBatchThreshold`; default 2). */
  newBatchThreshold?: number;
  /** Called after each queue message was handled (or failed). */
  onHandled?: (event: { queue: string; ok: boolean; dequeueCount: number; poisoned: boolean; error?: unknown; body: unknown }) => void;
}

export interface LocalHost {
  /** Runs the timer function once now. */
  tick(): Promise<void>;
  /** Processes the jobs (and other) queues until they are empty. */
  drain(): Promise<void>;
  stop(): Promise<void>;
}

type QueueHandler = (body: unknown, context: import('@azure/functions').InvocationContext) => Promise<unknown>;

async function importQuietly<T>(load: () => Promise<T>): Promise<T> {
  // Outside the Functions host, @azure/functions warns once per registration that it is in
  // "test mode"; that is expected here, so those lines are not shown.
  const warn = console.warn;
  console.warn = (...args: unknown[]) => {
    if (typeof args[0] === 'string' && args[0].includes('test mode')) return;
    warn(...args);
  };
  try {
    return await load();
  } finally {
    console.warn = warn;
  }
}

export async function startLocalHost(o: LocalHostOptions): Promise<LocalHost> {
  setRuntime(o.runtime);
  const functionsModule = (await importQuietly(() => import('@azure/functions'))) as typeof import('@azure/functions') & { default?: typeof import('@azure/functions') };
  // CommonJS package seen from ESM: the class may only be on the default export.
  const InvocationContext = functionsModule.InvocationContext ?? functionsModule.default!.InvocationContext;
  const fnSchedule = await importQuietly(() => import('../functions/pollSchedule.js'));
  const fnMailbox = await importQuietly(() => import('../functions/pollMailbox.js'));
  const extra: Array<{ queue: string; handler: QueueHandler; name: string }> = [];
  try {
    const fnNotify = await importQuietly(() => import('../functions/sendNotification.js' as string));
    extra.push({ queue: o.runtime.config.storage.notifyQueue, handler: fnNotify.sendNotification as QueueHandler, name: 'sendNotification' });
  } catch {
    /* notifications not built */
  }
  const { Cron } = await import('croner');
  const max = o.maxDequeueCount ?? 5;
  const retryVis = o.retryVisibilitySeconds ?? 2;
  const log = o.logger;
  const context = (functionName: string, dequeueCount?: number) =>
    new InvocationContext({
      invocationId: randomUUID(),
      functionName,
      triggerMetadata: dequeueCount === undefined ? {} : { dequeueCount },
      logHandler: (level, ...args) => {
        const line = args.map((a) => (typeof a === 'string' ? a : JSON.stringify(a))).join(' ');
        if (level === 'error') log.error(line);
        else if (level === 'warning') log.warn(line);
        else if (level === 'debug' || level === 'trace') log.debug(line);
        else log.info(line);
      },
    });

  const queues: Array<{ name: string; fn: string; handler: QueueHandler }> = [
    { name: o.runtime.config.storage.jobsQueue, fn: 'pollMailbox', handler: fnMailbox.pollMailbox as QueueHandler },
    ...extra.map((e) => ({ name: e.queue, fn: e.name, handler: e.handler })),
  ];

  const handle = async (q: { name: string; fn: string; handler: QueueHandler }, client: QueueClient, m: DequeuedMessageItem) => {
    let body: unknown = m.messageText;
    try {
      const text = Buffer.from(m.messageText, 'base64').toString('utf8');
      body = JSON.parse(text);
    } catch {
      /* not base64 JSON: hand over the text, as the host does */
    }
    try {
      await q.handler(body, context(q.fn, m.dequeueCount));
      await client.deleteMessage(m.messageId, m.popReceipt);
      o.onHandled?.({ queue: q.name, ok: true, dequeueCount: m.dequeueCount, poisoned: false, body });
    } catch (e) {
      const poisoned = m.dequeueCount >= max;
      if (poisoned) {
        const poison = (await o.runtime.storage.queue(`${q.name}-poison`)) as QueueClient;
        await poison.sendMessage(m.messageText);
        await client.deleteMessage(m.messageId, m.popReceipt);
        log.error(`${q.fn}: message moved to ${q.name}-poison after ${m.dequeueCount} tries: ${(e as Error).message}`);
      } else {
        await client.updateMessage(m.messageId, m.popReceipt, undefined, retryVis);
        log.warn(`${q.fn}: try ${m.dequeueCount} failed, will retry: ${(e as Error).message}`);
      }
      o.onHandled?.({ queue: q.name, ok: false, dequeueCount: m.dequeueCount, poisoned, error: e, body });
    }
  };

  const batchSize = o.batchSize ?? 4;
  const threshold = o.newBatchThreshold ?? Math.floor(batchSize / 2);
  /**
   * Runs a queue until it is empty, the way the Functions host does: a batch of
   * `batchSize`, and the next batch as soon as no more than `newBatchThreshold`
   * are still running (not when the whole batch is done). Returns how many it handled.
   */
  const pumpQueue = async (q: { name: string; fn: string; handler: QueueHandler }, client: QueueClient): Promise<number> => {
    const running = new Set<Promise<void>>();
    let handled = 0;
    for (;;) {
      while (running.size > threshold) await Promise.race(running);
      const { receivedMessageItems } = await client.receiveMessages({ numberOfMessages: batchSize, visibilityTimeout: 300 });
      for (const m of receivedMessageItems) {
        const p: Promise<void> = handle(q, client, m)
          .catch((e) => log.warn(`${q.fn}: ${(e as Error).message}`))
          .finally(() => running.delete(p));
        running.add(p);
        handled++;
      }
      if (receivedMessageItems.length === 0) {
        if (running.size === 0) return handled;
        await Promise.race(running);
      }
    }
  };

  let stopped = false;
  const tick = async () => {
    try {
      await fnSchedule.pollSchedule({ isPastDue: false, scheduleStatus: undefined } as never, context('pollSchedule'));
    } catch (e) {
      log.error(`pollSchedule failed: ${(e as Error).message}`);
    }
  };
  const clients = await Promise.all(queues.map((q) => o.runtime.storage.queue(q.name)));
  const drain = async () => {
    // Handling one queue can fill another (a poll enqueues notifications): until all are empty.
    for (;;) {
      const counts = await Promise.all(queues.map((q, i) => pumpQueue(q, clients[i]!)));
      if (counts.every((c) => c === 0)) return;
    }
  };
  const cron = new Cron(o.schedule ?? o.runtime.config.schedule, { protect: true }, () => tick());
  const loop = (async () => {
    while (!stopped) {
      try {
        await Promise.all(queues.map((q, i) => pumpQueue(q, clients[i]!)));
      } catch (e) {
        log.warn(`queue polling failed: ${(e as Error).message}`);
      }
      await new Promise((r) => setTimeout(r, o.pollIntervalMs ?? 500));
    }
  })();
  return {
    tick,
    drain,
    async stop() {
      stopped = true;
      cron.stop();
      await loop;
    },
  };
}
