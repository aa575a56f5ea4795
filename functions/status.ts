import { app, type HttpRequest, type HttpResponseInit, type InvocationContext } from '@azure/functions';
import { withTelemetryFlush } from '../shared/telemetry/invocation.js';

/**
 * HTTP (function key): per-mailbox last poll time, result, lag, counts, last
 * error and its fix. Invalid settings are reported (503 with every problem)
 * rather than failing with 500.
 */
export async function status(_req: HttpRequest, _context: InvocationContext): Promise<HttpResponseInit> {
  const [{ getRuntime }, report, { isPostroomError }] = await Promise.all([import('../shared/runtime.js'), import('../shared/poll/report.js'), import('../shared/errors.js')]);
  let runtime;
  try {
    runtime = getRuntime();
  } catch (e) {
    if (!isPostroomError(e, 'ConfigInvalid')) throw e;
    return { status: 503, jsonBody: report.settingsInvalidReport(e) };
  }
  return { status: 200, jsonBody: await report.mailboxStatusReport(runtime) };
}

app.http('status', { methods: ['GET'], authLevel: 'function', route: 'status', handler: withTelemetryFlush(status) });
