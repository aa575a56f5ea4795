import { app, type InvocationContext, type Timer } from '@azure/functions';
import { withTelemetryFlush } from '../shared/telemetry/invocation.js';

/** Timer: validates the settings and fans out one poll job per mailbox. */
export async function pollSchedule(_timer: Timer, context: InvocationContext): Promise<void> {
  // Loaded on first use, not at import: a cold start pays only for what runs (bench figure 6).
  const [{ getRuntime }, { enqueuePollJobs }, { contextLogger }] = await Promise.all([
    import('../shared/runtime.js'),
    import('../shared/poll/jobs.js'),
    import('../shared/functions-logger.js'),
  ]);
  await enqueuePollJobs(getRuntime(), { logger: contextLogger(context) });
}

app.timer('pollSchedule', { schedule: '%POSTROOM_SCHEDULE%', handler: withTelemetryFlush(pollSchedule) });
