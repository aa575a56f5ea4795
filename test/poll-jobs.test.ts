import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startStack, MAILBOXES, type Stack } from './support/stack.js';
import { enqueuePollJobs, handlePollJob, PENDING_JOB_KEY } from '../shared/poll/jobs.js';
import * as M from '../sandbox/messages.js';

let stack: Stack;
before(async () => {
  stack = await startStack();
});
after(async () => {
  await stack?.stop();
});

test('one pending poll job per mailbox: the timer skips a mailbox whose job is still queued or running', async () => {
  await stack.sandbox.dovecot.deliver(MAILBOXES.happy, M.plainMessage({ subject: 'pending' }));
  const rt = await stack.runtime([{ address: MAILBOXES.happy }, { address: MAILBOXES.ungranted }], {
    env: { POSTROOM_JOBS_QUEUE: 'jobs-pending', POSTROOM_OUTPUT_QUEUE: 'out-pending' },
  });
  const first = await enqueuePollJobs(rt);
  assert.equal(first.length, 2);
  assert.equal((await enqueuePollJobs(rt)).length, 0, 'no second job while the first is pending (the timer ticks while a mailbox keeps failing)');
  const queue = await rt.storage.queue('jobs-pending');
  assert.equal((await queue.getProperties()).approximateMessagesCount, 2);

  // The jobs run: one succeeds, one fails for good (only an admin can fix it); both are done.
  for (const job of first) await handlePollJob(rt, job);
  for (const m of rt.config.mailboxes) assert.equal(await rt.state.get(m.id, PENDING_JOB_KEY), undefined, `${m.id}: the mark is cleared once its job is done`);
  assert.equal((await enqueuePollJobs(rt)).length, 2, 'the next tick enqueues again');
});
