import { app } from '@azure/functions';

// The runtime's pooled SMTP connections count against Exchange's 3 per mailbox: close them when the host stops the worker.
app.hook.appTerminate(async () => {
  const { closeRuntime } = await import('../shared/runtime.js');
  closeRuntime();
});
