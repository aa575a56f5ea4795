import { app, type InvocationContext } from '@azure/functions';
import { withTelemetryFlush } from '../shared/telemetry/invocation.js';

/** Queue trigger: sends one notification over SMTP (XOAUTH2); a 432 back-off is re-queued with a delay; other failures throw so the queue retries, then poisons. */
export async function sendNotification(job: unknown, context: InvocationContext): Promise<void> {
  const [{ getRuntime }, { handleNotificationJob }, { contextLogger }] = await Promise.all([
    import('../shared/runtime.js'),
    import('../shared/notify/send.js'),
    import('../shared/functions-logger.js'),
  ]);
  const dequeueCount = Number(context.triggerMetadata?.dequeueCount ?? 1);
  await handleNotificationJob(getRuntime(), job, { logger: contextLogger(context), dequeueCount, requeue: true });
}

app.storageQueue('sendNotification', { queueName: '%POSTROOM_NOTIFY_QUEUE%', connection: 'POSTROOM_STORAGE', handler: withTelemetryFlush(sendNotification) });
