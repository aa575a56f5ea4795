import { app, type HttpRequest, type HttpResponseInit, type InvocationContext } from '@azure/functions';
import { getRuntime } from '../shared/runtime.js';
import { mailboxStatusReport } from '../shared/poll/report.js';

/** HTTP (function key): per-mailbox last poll time, result, counts and last error. */
export async function status(_req: HttpRequest, _context: InvocationContext): Promise<HttpResponseInit> {
  return { status: 200, jsonBody: await mailboxStatusReport(getRuntime()) };
}

app.http('status', { methods: ['GET'], authLevel: 'function', route: 'status', handler: status });
