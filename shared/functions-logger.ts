import type { InvocationContext } from '@azure/functions';
import { createLogger, logLevelFromEnv, type Logger } from './logger.js';

/**
 * A Logger writing through the invocation's context, redacted like every other.
 * The fields go as a second argument (the host formats them after the message with
 * util.format); with telemetry on, the same line also becomes an OpenTelemetry log
 * record whose fields are attributes (customDimensions), tied to the invocation's trace.
 */
export function contextLogger(context: InvocationContext): Logger {
  return createLogger(
    (level, _line, { message, fields }) => {
      const args: unknown[] = Object.keys(fields).length ? [message, fields] : [message];
      if (level === 'error') context.error(...args);
      else if (level === 'warn') context.warn(...args);
      else if (level === 'debug') context.debug(...args);
      else context.info(...args);
    },
    { level: logLevelFromEnv(), traceParent: context.traceContext?.traceParent ?? undefined },
  );
}
