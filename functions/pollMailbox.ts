import { app, type InvocationContext } from '@azure/functions';
import { getRuntime } from '../shared/runtime.js';
import { handlePollJob } from '../shared/poll/jobs.js';
import { contextLogger } from '../shared/functions-logger.js';

/** Queue trigger: one incremental poll of one mailbox, under its lease. */
export async function pollMailbox(job: unknown, context: InvocationContext): Promise<void> {
  const dequeueCount = Number(context.triggerMetadata?.dequeueCount ?? 1);
  await handlePollJob(getRuntime(), job, { logger: contextLogger(context), dequeueCount });
}

app.storageQueue('pollMailbox', { queueName: '%POSTROOM_JOBS_QUEUE%', connection: 'POSTROOM_STORAGE', handler: pollMailbox });
