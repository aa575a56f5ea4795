import { app } from '@azure/functions';
import { declareWorkerTelemetry } from '../shared/telemetry/worker-setup.js';

// Not a function: an entry-point file (package.json "main" loads dist/functions/*.js) that
// declares, before the host reads capabilities, that Postroom exports its own logs when
// APPLICATIONINSIGHTS_CONNECTION_STRING is set. Loads no OpenTelemetry code.
declareWorkerTelemetry((o) => app.setup(o));
