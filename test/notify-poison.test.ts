import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startLocalHost } from '../sandbox/host.js';
import { setRuntime } from '../shared/runtime.js';
import { recordStatus } from '../shared/status/index.js';
import { notifyAfterPoll, parseNotificationJob } from '../shared/notify/index.js';
import type { Runtime } from '../shared/runtime.js';
import { APP_NOGRANT, MAILBOX, OPS, startNotifyStack, type NotifyStack } from './support/notify-stack.js';

// A schedule that does not fire while the test runs (once a year).
const QUIET = { POSTROOM_SCHEDULE: '0 0 0 1 1 *' };

async function enqueueDigest(runtime: Runtime): Promise<string> {
  const mailbox = runtime.config.mailboxes[0];
  const status = await recordStatus(runtime.state, mailbox, runtime.now(), { ok: true, delivered: 1, durationMs: 1 });
  const delivered = [{ idempotencyKey: 'k1', size: 10, subject: 'Hello', from: [], attachments: 0, parseError: null, blobPrefix: 'p/k1' }];
  const [job] = await notifyAfterPoll(runtime, mailbox, { outcome: 'ok', delivered, status, durationMs: 1 });
  return job.id;
}

describe('sendNotification through the local Functions host (queue retries and poison)', () => {
  let stack: NotifyStack;
  before(async () => {
    stack = await startNotifyStack();
  });
  after(async () => {
    setRuntime(undefined);
    await stack?.stop();
  });

  it('the queue-triggered function sends a queued notification and removes it from the queue', async () => {
    const { runtime } = await stack.runtime({ env: QUIET });
    const events: boolean[] = [];
    let handled!: () => void;
    const first = new Promise<void>((r) => (handled = r));
    const host = await startLocalHost({
      runtime,
      logger: runtime.logger,
      pollIntervalMs: 50,
      onHandled: (e) => {
        events.push(e.ok);
        handled();
      },
    });
    try {
      const before = stack.smtp.messages().length;
      const id = await enqueueDigest(runtime);
      // The host's own polling loop picks it up (drain() would race it for the message).
      await first;
      assert.deepEqual(events, [true]);
      const got = stack.smtp.messages().slice(before);
      assert.equal(got.length, 1);
      assert.deepEqual(got[0].rcptTo, [OPS]);
      assert.ok(got[0].raw.toString('utf8').includes(`Message-ID: <${id}@postroom.invalid>`));
      const q = await runtime.storage.queue(runtime.config.storage.notifyQueue);
      assert.equal((await q.peekMessages()).peekedMessageItems.length, 0);
    } finally {
      await host.stop();
    }
  });

  it('a notification that always fails is retried, then ends in <notifyQueue>-poison with its reason logged', async () => {
    const { runtime, logger } = await stack.runtime({ app: APP_NOGRANT, env: QUIET });
    const events: Array<{ ok: boolean; poisoned: boolean; dequeueCount: number }> = [];
    let poisoned!: () => void;
    const done = new Promise<void>((r) => (poisoned = r));
    const host = await startLocalHost({
      runtime,
      logger,
      maxDequeueCount: 2,
      retryVisibilitySeconds: 1,
      pollIntervalMs: 50,
      onHandled: (e) => {
        events.push({ ok: e.ok, poisoned: e.poisoned, dequeueCount: e.dequeueCount });
        if (e.poisoned) poisoned();
      },
    });
    try {
      const authBefore = stack.smtp.authAttempts(MAILBOX);
      const id = await enqueueDigest(runtime);
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([done, new Promise((_, rej) => (timer = setTimeout(() => rej(new Error('not poisoned within 20 s')), 20_000)))]).finally(() => clearTimeout(timer));
      assert.deepEqual(events, [
        { ok: false, poisoned: false, dequeueCount: 1 },
        { ok: false, poisoned: true, dequeueCount: 2 },
      ]);
      // Each try: the cached token, then one fresh one.
      assert.equal(stack.smtp.authAttempts(MAILBOX) - authBefore, 4);
      const poison = await runtime.storage.queue(`${runtime.config.storage.notifyQueue}-poison`);
      const items = (await poison.peekMessages({ numberOfMessages: 32 })).peekedMessageItems;
      assert.equal(items.length, 1);
      assert.equal(parseNotificationJob(items[0].messageText).id, id);
      const main = await runtime.storage.queue(runtime.config.storage.notifyQueue);
      assert.equal((await main.peekMessages()).peekedMessageItems.length, 0);
      const line = logger.lines.find((l) => l.includes(`${runtime.config.storage.notifyQueue}-poison`));
      assert.ok(line, logger.lines.join('\n'));
      assert.match(line, /the mail server refused the app token/);
      assert.ok(logger.lines.some((l) => /notification digest could not be sent/.test(l) && /"code":"AuthenticationFailed"/.test(l)));
    } finally {
      await host.stop();
    }
  });
});
