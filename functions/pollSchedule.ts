import { app, type InvocationContext, type Timer } from '@azure/functions';
import { getRuntime } from '../shared/runtime.js';
import { enqueuePollJobs } from '../shared/poll/jobs.js';
import { contextLogger } from '../shared/functions-logger.js';

/** Timer: validates the settings and fans out one poll job per mailbox. */
export async function pollSchedule(_timer: Timer, context: InvocationContext): Promise<void> {
  await enqueuePollJobs(getRuntime(), { logger: contextLogger(context) });
}

app.timer('pollSchedule', { schedule: '%POSTROOM_SCHEDULE%', handler: pollSchedule });
