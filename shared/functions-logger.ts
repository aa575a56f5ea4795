import type { InvocationContext } from '@azure/functions';
import { createLogger, type Logger } from './logger.js';

/** A Logger writing through the invocation's context (Application Insights), redacted like every other. */
export function contextLogger(context: InvocationContext): Logger {
  return createLogger((level, line) => {
    if (level === 'error') context.error(line);
    else if (level === 'warn') context.warn(line);
    else if (level === 'debug') context.debug(line);
    else context.info(line);
  }, { level: (process.env.POSTROOM_LOG_LEVEL as 'info') || 'info' });
}
