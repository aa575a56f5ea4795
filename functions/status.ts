import { app, type HttpRequest, type HttpResponseInit, type InvocationContext } from '@azure/functions';

/** HTTP (function key): per-mailbox last poll time, result, counts and last error. */
export async function status(_req: HttpRequest, _context: InvocationContext): Promise<HttpResponseInit> {
  const [{ getRuntime }, { mailboxStatusReport }] = await Promise.all([import('../shared/runtime.js'), import('../shared/poll/report.js')]);
  return { status: 200, jsonBody: await mailboxStatusReport(getRuntime()) };
}

app.http('status', { methods: ['GET'], authLevel: 'function', route: 'status', handler: status });
