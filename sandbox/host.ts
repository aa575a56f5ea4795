import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import type { DequeuedMessageItem, QueueClient } from '@azure/storage-queue';
import type * as AzureFunctions from '@azure/functions';
import type { Logger } from '../shared/logger.js';
import { setRuntime, type Runtime } from '../shared/runtime.js';
import { isPostroomError } from '../shared/errors.js';

/**
 * The queue settings of host.json (`extensions.queues`) the stand-in honours,
 * with the Functions host's defaults for those left out.
 */
export interface HostQueueSettings {
  /** Tries before a message is moved to `<queue>-poison` (default 5). */
  maxDequeueCount: number;
  /** Seconds a failed message stays invisible before its next try (default 0). */
  visibilityTimeoutSeconds: number;
  /** Messages fetched at once per queue (default 16, at most 32). */
  batchSize: number;
  /** The next batch is fetched when this many or fewer still run (default batchSize / 2). */
  newBatchThreshold: number;
  /** `base64` (default): message bodies are base64 and decoded first; `none`: the body is the text. */
  messageEncoding: 'base64' | 'none';
}

/** A .NET TimeSpan as host.json writes it (`hh:mm:ss`, `d.hh:mm:ss`, optional `.fff`) in seconds. */
export function parseTimeSpan(value: string): number {
  const m = /^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})(\.\d+)?$/.exec(value.trim());
  if (!m) throw new Error(`not a TimeSpan ("hh:mm:ss"): ${JSON.stringify(value)}`);
  return Number(m[1] ?? 0) * 86_400 + Number(m[2]) * 3_600 + Number(m[3]) * 60 + Number(m[4]) + Number(m[5] ?? 0);
}

/** The project's host.json, next to package.json (this file runs from dist/sandbox/). */
export const PROJECT_HOST_JSON = new URL('../../host.json', import.meta.url).pathname;

/**
 * Reads `extensions.queues` of a host.json like the Functions host does. A
 * missing file means the host's defaults; a value of the wrong kind is refused
 * with the file and field named.
 */
export function readHostQueueSettings(file: string = PROJECT_HOST_JSON): HostQueueSettings {
  let json: { extensions?: { queues?: Record<string, unknown> } } = {};
  if (existsSync(file)) {
    try {
      json = JSON.parse(readFileSync(file, 'utf8')) as typeof json;
    } catch (e) {
      throw new Error(`${file} is not valid JSON: ${(e as Error).message}. Fix the file (the Functions host would not start either).`, { cause: e });
    }
  }
  const q = json.extensions?.queues ?? {};
  const bad = (field: string, want: string) => new Error(`${file}: extensions.queues.${field} must be ${want}, got ${JSON.stringify(q[field])}`);
  const int = (field: string, def: number, min: number, max: number) => {
    const v = q[field] ?? def;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw bad(field, `an integer from ${min} to ${max}`);
    return v;
  };
  const batchSize = int('batchSize', 16, 1, 32);
  const encoding = q.messageEncoding ?? 'base64';
  if (encoding !== 'base64' && encoding !== 'none') throw bad('messageEncoding', '"base64" or "none"');
  let visibility = 0;
  const timeout = q.visibilityTimeout;
  if (timeout !== undefined) {
    try {
      // A TimeSpan is written as a string; anything else is refused like a malformed one.
      if (typeof timeout !== 'string') throw new TypeError('not a string');
      visibility = parseTimeSpan(timeout);
    } catch {
      throw bad('visibilityTimeout', 'a TimeSpan like "00:00:30"');
    }
    // Azure Storage accepts at most 7 days of invisibility.
    if (visibility > 7 * 86_400) throw bad('visibilityTimeout', 'at most 7 days');
  }
  return {
    maxDequeueCount: int('maxDequeueCount', 5, 1, 10_000),
    visibilityTimeoutSeconds: visibility,
    batchSize,
    newBatchThreshold: int('newBatchThreshold', Math.floor(batchSize / 2), 0, 1_000),
    messageEncoding: encoding,
  };
}

/**
 * A small stand-in for the Azure Functions host, for machines without the
 * Functions Core Tools: it fires the timer function on its NCRONTAB schedule
 * and feeds queue-triggered functions the way the host does with host.json's
 * `extensions.queues` (message encoding, batches, dequeueCount, a failed try
 * offered again after visibilityTimeout, `<queue>-poison` after
 * maxDequeueCount tries). It calls the very handlers the function files register.
 */
export interface LocalHostOptions {
  runtime: Runtime;
  logger: Logger;
  /** NCRONTAB (six fields); default the runtime's schedule. */
  schedule?: string;
  /** The host.json whose `extensions.queues` applies; default the project's. Options below override it. */
  hostJson?: string;
  /** Overrides host.json `maxDequeueCount`. */
  maxDequeueCount?: number;
  /** Overrides host.json `visibilityTimeout` (seconds before a failed message is offered again). */
  retryVisibilitySeconds?: number;
  pollIntervalMs?: number;
  /** Overrides host.json `batchSize`. */
  batchSize?: number;
  /** Overrides host.json `newBatchThreshold`. */
  newBatchThreshold?: number;
  /**
   * How long stop() waits for running invocations before it returns anyway
   * (they are abandoned as in a crash: their messages come back after their
   * visibility timeout); default 10 s.
   */
  stopGraceMs?: number;
  /** Called after each queue message was handled (or failed, or was moved to poison untried). */
  onHandled?: (event: { queue: string; ok: boolean; dequeueCount: number; poisoned: boolean; error?: unknown; body: unknown }) => void;
}

export interface LocalHost {
  /** Runs the timer function once now. */
  tick(): Promise<void>;
  /** Processes the jobs (and other) queues until they are empty. */
  drain(): Promise<void>;
  /** Stops the timer and fetching; waits for running invocations (at most `stopGraceMs`). */
  stop(): Promise<void>;
}

type QueueHandler = (body: unknown, context: AzureFunctions.InvocationContext) => Promise<unknown>;

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
  const functionsModule: typeof AzureFunctions = await importQuietly(() => import('@azure/functions'));
  // CommonJS package seen from ESM: the class may only be on the default export.
  const InvocationContext = functionsModule.InvocationContext ?? functionsModule.default.InvocationContext;
  const fnSchedule = await importQuietly(() => import('../functions/pollSchedule.js'));
  const fnMailbox = await importQuietly(() => import('../functions/pollMailbox.js'));
  const extra: Array<{ queue: string; handler: QueueHandler; name: string }> = [];
  try {
    const fnNotify = await importQuietly(() => import('../functions/sendNotification.js'));
    extra.push({ queue: o.runtime.config.storage.notifyQueue, handler: fnNotify.sendNotification, name: 'sendNotification' });
  } catch {
    /* notifications not built */
  }
  const { Cron } = await import('croner');
  const settings = readHostQueueSettings(o.hostJson);
  const max = o.maxDequeueCount ?? settings.maxDequeueCount;
  const retryVis = o.retryVisibilitySeconds ?? settings.visibilityTimeoutSeconds;
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
    { name: o.runtime.config.storage.jobsQueue, fn: 'pollMailbox', handler: fnMailbox.pollMailbox },
    ...extra.map((e) => ({ name: e.queue, fn: e.name, handler: e.handler })),
  ];

  const poison = async (q: { name: string }, client: QueueClient, m: DequeuedMessageItem) => {
    const target = await o.runtime.storage.queue(`${q.name}-poison`);
    // As the host does: the message as it was (same encoding), then removed from its queue.
    await target.sendMessage(m.messageText);
    await client.deleteMessage(m.messageId, m.popReceipt);
  };
  const whatToDo = 'It will not be retried. After fixing the cause, list it with `postroom poison list` and run it again with `postroom poison replay`.';

  const handle = async (q: { name: string; fn: string; handler: QueueHandler }, client: QueueClient, m: DequeuedMessageItem) => {
    const decoded = decodeBody(m.messageText, settings.messageEncoding);
    if (!decoded.ok || m.dequeueCount > max) {
      // The host does not run these: a body it cannot decode, or one already tried maxDequeueCount times (a host died mid-try).
      await poison(q, client, m);
      const why = decoded.ok
        ? `it was already tried ${m.dequeueCount - 1} times (host.json maxDequeueCount ${max})`
        : 'its body is not base64 (host.json messageEncoding "base64")';
      log.error(`${q.fn}: moved a message to ${q.name}-poison without running it: ${why}. ${whatToDo}`);
      o.onHandled?.({ queue: q.name, ok: false, dequeueCount: m.dequeueCount, poisoned: true, body: m.messageText });
      return;
    }
    const body = decoded.body;
    try {
      await q.handler(body, context(q.fn, m.dequeueCount));
      await client.deleteMessage(m.messageId, m.popReceipt);
      o.onHandled?.({ queue: q.name, ok: true, dequeueCount: m.dequeueCount, poisoned: false, body });
    } catch (e) {
      const poisoned = m.dequeueCount >= max;
      if (poisoned) {
        await poison(q, client, m);
        log.error(
          `${q.fn}: gave up after ${m.dequeueCount} tries (host.json maxDequeueCount ${max}); the message was moved to ${q.name}-poison. Last error: ${reason(e)} ${whatToDo}`,
        );
      } else {
        await client.updateMessage(m.messageId, m.popReceipt, undefined, retryVis);
        log.warn(`${q.fn}: try ${m.dequeueCount} of ${max} failed; it runs again in ${retryVis} s (host.json visibilityTimeout): ${reason(e)}`);
      }
      o.onHandled?.({ queue: q.name, ok: false, dequeueCount: m.dequeueCount, poisoned, error: e, body });
    }
  };

  const batchSize = o.batchSize ?? settings.batchSize;
  const threshold = o.newBatchThreshold ?? (o.batchSize === undefined ? settings.newBatchThreshold : Math.floor(batchSize / 2));
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
      // Stopping: no new batch; what runs is finished.
      if (stopped) {
        await Promise.all(running);
        return handled;
      }
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
      const counts = await Promise.all(queues.map((q, i) => pumpQueue(q, clients[i])));
      if (counts.every((c) => c === 0)) return;
    }
  };
  const cron = new Cron(o.schedule ?? o.runtime.config.schedule, { protect: true }, () => tick());
  const loop = (async () => {
    while (!stopped) {
      try {
        await Promise.all(queues.map((q, i) => pumpQueue(q, clients[i])));
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
      let timer: NodeJS.Timeout | undefined;
      const grace = new Promise<void>((r) => (timer = setTimeout(r, o.stopGraceMs ?? 10_000)));
      await Promise.race([loop, grace]).finally(() => clearTimeout(timer));
    },
  };
}

/** The body a function receives: decoded as host.json `messageEncoding` says, then JSON when it parses. */
function decodeBody(text: string, encoding: 'base64' | 'none'): { ok: true; body: unknown } | { ok: false } {
  let decoded = text;
  if (encoding === 'base64') {
    const compact = text.replace(/\s+/g, '');
    if (compact.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(compact)) return { ok: false };
    decoded = Buffer.from(compact, 'base64').toString('utf8');
  }
  try {
    return { ok: true, body: JSON.parse(decoded) };
  } catch {
    return { ok: true, body: decoded };
  }
}

/**
 * The failure worth logging: a poll job's own error wraps the poll's error
 * ("…; the queue will retry"), which would contradict a poison line.
 */
function reason(e: unknown): string {
  if (isPostroomError(e) && isPostroomError(e.cause)) return e.cause.message;
  return e instanceof Error ? e.message : String(e);
}
