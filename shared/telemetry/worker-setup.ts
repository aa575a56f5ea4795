import type { SetupOptions } from '@azure/functions';
import { telemetryEnabled } from './index.js';

/**
 * With telemetry on, Postroom exports its own log records (fields as
 * customDimensions), so it tells the Functions host not to relay the worker's
 * logs to Application Insights again (capability `WorkerOpenTelemetryEnabled`;
 * the host still shows them in its console and log stream). Must run while the
 * entry point loads: the host reads capabilities once at startup.
 */
export function declareWorkerTelemetry(setup: (o: SetupOptions) => void, env: NodeJS.ProcessEnv = process.env): boolean {
  if (!telemetryEnabled(env)) return false;
  setup({ capabilities: { WorkerOpenTelemetryEnabled: true } });
  return true;
}
