import { app } from '@azure/functions';
import { flushTelemetryBounded } from '../shared/telemetry/invocation.js';

// The runtime's pooled SMTP connections count against Exchange's 3 per mailbox: close them when the host stops the worker.
// Then export what telemetry still holds (bounded): the instance may be gone right after.
app.hook.appTerminate(async () => {
  const { closeRuntime } = await import('../shared/runtime.js');
  closeRuntime();
  await flushTelemetryBounded();
});
