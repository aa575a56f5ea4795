import { app, type InvocationContext } from '@azure/functions';
import { withTelemetryFlush } from '../shared/telemetry/invocation.js';

/** Queue trigger: one incremental poll of one mailbox, under its lease. */
export async function pollMailbox(job: unknown, context: InvocationContext): Promise<void> {
  const [{ getRuntime }, { handlePollJob }, { contextLogger }] = await Promise.all([
    import('../shared/runtime.js'),
    import('../shared/poll/jobs.js'),
    import('../shared/functions-logger.js'),
  ]);
  const dequeueCount = Number(context.triggerMetadata?.dequeueCount ?? 1);
  await handlePollJob(getRuntime(), job, { logger: contextLogger(context), dequeueCount });
}

app.storageQueue('pollMailbox', { queueName: '%POSTROOM_JOBS_QUEUE%', connection: 'POSTROOM_STORAGE', handler: withTelemetryFlush(pollMailbox) });
