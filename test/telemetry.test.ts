import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:https';
import { gunzipSync } from 'node:zlib';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import azureFunctions from '@azure/functions';
import { AggregationTemporality, InMemoryMetricExporter, PeriodicExportingMetricReader, type DataPoint, type ResourceMetrics } from '@opentelemetry/sdk-metrics';
import { InMemoryLogRecordExporter, SimpleLogRecordProcessor } from '@opentelemetry/sdk-logs';
import { startStack, MAILBOXES, type Stack } from './support/stack.js';
import { pollMailbox } from '../shared/poll/poll-mailbox.js';
import { flushTelemetry, getMetrics, lagTracker, noopMetrics, parseAuthenticationString, shutdownTelemetry, startTelemetry } from '../shared/telemetry/index.js';
import { contextLogger } from '../shared/functions-logger.js';
import { flushesTelemetry, flushTelemetryBounded, withTelemetryFlush } from '../shared/telemetry/invocation.js';
import { logLevelFromEnv, parseLogLevel } from '../shared/logger.js';
import { SANDBOX_APP } from '../sandbox/index.js';
import * as M from '../sandbox/messages.js';

const root = join(import.meta.dirname, '..', '..');
const BODY_MARKER = 'confidential-body-7f3a9c-do-not-export';
const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';

let stack: Stack;
let ingestion: Server;
const envelopes: string[] = [];
const authorizations = new Set<string>();
const INGESTION_TOKEN = 'entra-token-for-app-insights-ingestion';
const metricExporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
const reader = new PeriodicExportingMetricReader({ exporter: metricExporter, exportIntervalMillis: 3_600_000 });
const logExporter = new InMemoryLogRecordExporter();

// A stand-in for the Application Insights ingestion endpoint: keeps every envelope the Azure Monitor exporter posts.
// The exporter only speaks HTTPS: the sandbox's localhost certificate, its CA given to the exporter.
function startIngestion(): Promise<number> {
  ingestion = createServer({ cert: stack.sandbox.certs.cert, key: stack.sandbox.certs.key }, (req, res) => {
    authorizations.add(String(req.headers.authorization));
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks);
      const text = (req.headers['content-encoding'] === 'gzip' ? gunzipSync(raw) : raw).toString('utf8');
      envelopes.push(text);
      const n = text.split('\n').filter(Boolean).length;
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ itemsReceived: n, itemsAccepted: n, errors: [] }));
    });
  });
  return new Promise((resolve) => ingestion.listen(0, '127.0.0.1', () => resolve((ingestion.address() as { port: number }).port)));
}

before(async () => {
  stack = await startStack();
  const port = await startIngestion();
  process.env.APPLICATIONINSIGHTS_CONNECTION_STRING = `InstrumentationKey=00000000-0000-4000-8000-000000000000;IngestionEndpoint=https://127.0.0.1:${port}/`;
  process.env.APPLICATIONINSIGHTS_STATSBEAT_DISABLED = 'true';
  process.env.APPLICATIONINSIGHTS_SDKSTATS_DISABLED = 'true';
  // The production start path, with in-memory exporters added next to Azure Monitor's, and
  // a credential standing in for the managed identity (Entra auth to the ingestion endpoint).
  const credential = { getToken: async () => ({ token: INGESTION_TOKEN, expiresOnTimestamp: Date.now() + 3_600_000 }) };
  const t = await startTelemetry({
    credential,
    metricReaders: [reader],
    logRecordProcessors: [new SimpleLogRecordProcessor(logExporter)],
    exporterOptions: { tlsOptions: { ca: stack.sandbox.certs.ca } },
  });
  assert.ok(t, 'telemetry started');
});
after(async () => {
  await shutdownTelemetry();
  await stack?.stop();
  ingestion?.close();
});

async function collect(): Promise<ResourceMetrics> {
  await reader.forceFlush();
  const all = metricExporter.getMetrics();
  assert.ok(all.length > 0, 'metrics were exported');
  return all[all.length - 1];
}

function points(rm: ResourceMetrics, name: string, attrs: Record<string, unknown>): DataPoint<any>[] {
  const metric = rm.scopeMetrics.flatMap((s) => s.metrics).find((m) => m.descriptor.name === name);
  if (!metric) return [];
  return (metric.dataPoints as DataPoint<any>[]).filter((p) => Object.entries(attrs).every(([k, v]) => p.attributes[k] === v));
}
const sum = (ps: DataPoint<any>[]) => ps.reduce((a, p) => a + (typeof p.value === 'number' ? p.value : p.value.count), 0);

const imap = (address: string) => ({ address, protocol: 'imap' });

describe('telemetry: metrics after real polls (Dovecot + Azurite + token endpoint), in-memory exporters', () => {
  const secrets: string[] = [SANDBOX_APP.clientSecret, BODY_MARKER];

  test('a successful poll: messages, bytes, duration, lag 0, token requests, blob and queue write latency', async () => {
    const box = MAILBOXES.happy;
    const raws = [0, 1, 2].map((i) =>
      M.plainMessage({ subject: `Telemetry ${i}` })
        .toString('utf8')
        .replace('plain test message', `${BODY_MARKER} ${i}`),
    );
    for (const r of raws) await stack.sandbox.dovecot.deliver(box, r);
    const rt = await stack.runtime([imap(box)], { env: { POSTROOM_OUTPUT_QUEUE: 'out-telemetry' } });
    const mailbox = rt.config.mailboxes[0];
    const result = await pollMailbox(rt, mailbox);
    assert.equal(result.outcome, 'ok', result.error?.message);
    assert.equal(result.delivered.length, 3);
    const { token } = await rt.tokens(mailbox.app).getToken();
    secrets.push(token, `Bearer ${token}`, Buffer.from(`user=${box}\x01auth=Bearer ${token}\x01\x01`).toString('base64'));

    const rm = await collect();
    assert.equal(sum(points(rm, 'postroom.messages.ingested', { mailbox: mailbox.id })), 3);
    const bytes = result.delivered.reduce((a, d) => a + d.size, 0);
    assert.ok(bytes > 0);
    assert.equal(sum(points(rm, 'postroom.bytes.ingested', { mailbox: mailbox.id })), bytes);
    const duration = points(rm, 'postroom.poll.duration', { mailbox: mailbox.id, outcome: 'ok' });
    assert.equal(duration.length, 1);
    assert.equal(duration[0].value.count, 1);
    assert.ok(duration[0].value.sum > 0 && duration[0].value.sum <= result.durationMs + 50);
    assert.deepEqual(
      points(rm, 'postroom.poll.lag', { mailbox: mailbox.id }).map((p) => p.value),
      [0],
    );
    assert.equal(points(rm, 'postroom.poll.failures', { mailbox: mailbox.id }).length, 0);
    // The poll's token came from the login host (not msal's cache); the getToken above from the cache.
    assert.equal(sum(points(rm, 'postroom.token.requests', { app: mailbox.app.name, cached: false })), 1);
    assert.ok(sum(points(rm, 'postroom.token.requests', { app: mailbox.app.name, cached: true })) >= 1);
    const queueWrites = points(rm, 'postroom.storage.write.duration', { kind: 'queue', ok: true });
    assert.equal(sum(queueWrites), 3, 'one queue write per message');
    assert.ok(sum(points(rm, 'postroom.storage.write.duration', { kind: 'blob', ok: true })) >= 3, 'at least the raw .eml per message');
    assert.ok(queueWrites[0].value.min >= 0 && queueWrites[0].value.max < 10_000);
  });

  test('a failed poll counts the failure by its code; lag is the age of the oldest message read but not acknowledged', async () => {
    const box = MAILBOXES.crash;
    await stack.sandbox.dovecot.deliver(box, M.plainMessage({ subject: 'Lag one' }));
    await stack.sandbox.dovecot.deliver(box, M.plainMessage({ subject: 'Lag two' }));
    const rt = await stack.runtime([imap(box)], { env: { POSTROOM_OUTPUT_QUEUE: 'out-telemetry-lag' } });
    const hour = 3_600_000;
    // The clock an hour ahead: the messages' receivedAt (delivery time) is then about an hour old.
    const late = Object.assign(Object.create(Object.getPrototypeOf(rt)), rt, { now: () => new Date(Date.now() + hour) });
    const mailbox = rt.config.mailboxes[0];
    const result = await pollMailbox(late, mailbox, {
      beforeAcknowledge: () => {
        throw new Error('crash before acknowledge');
      },
    });
    assert.equal(result.outcome, 'failed');
    const rm = await collect();
    assert.equal(sum(points(rm, 'postroom.poll.failures', { mailbox: mailbox.id, code: result.error!.code })), 1);
    assert.equal(sum(points(rm, 'postroom.messages.ingested', { mailbox: mailbox.id })), 0, 'nothing acknowledged, nothing ingested');
    const [lag] = points(rm, 'postroom.poll.lag', { mailbox: mailbox.id }).map((p) => p.value as number);
    assert.ok(lag >= hour && lag < hour + 120_000, `lag ${lag}`);

    const denied = await stack.runtime([imap(MAILBOXES.ungranted)], { env: { POSTROOM_OUTPUT_QUEUE: 'out-telemetry-denied' } });
    const r2 = await pollMailbox(denied, denied.config.mailboxes[0]);
    // The refusal narrowed down by the poll (the sandbox refuses an ungranted mailbox over every protocol) is the code counted.
    assert.equal(r2.error?.code, 'ServicePrincipalNotRegistered');
    const rm2 = await collect();
    assert.equal(sum(points(rm2, 'postroom.poll.failures', { mailbox: denied.config.mailboxes[0].id, code: 'ServicePrincipalNotRegistered' })), 1);
    assert.deepEqual(
      points(rm2, 'postroom.poll.lag', { mailbox: denied.config.mailboxes[0].id }).map((p) => p.value),
      [0],
    );
  });

  test('structured logs: the Functions context gets message + fields; OTel records carry them as attributes, redacted, on the invocation trace', async () => {
    process.env.POSTROOM_LOG_LEVEL = 'debug';
    const calls: unknown[][] = [];
    const context = new azureFunctions.InvocationContext({
      invocationId: 'inv-1',
      functionName: 'pollMailbox',
      logHandler: (level, ...args) => calls.push([level, ...args]),
      traceContext: { traceParent: `00-${TRACE_ID}-00f067aa0ba902b7-01`, traceState: '', attributes: {} },
    });
    const log = contextLogger(context);
    const token = secrets[2];
    log.debug('debug line reaches the host', { mailbox: 'shared-inbox@contoso.test', delivered: 3 });
    log.info(`careless message with Bearer ${token}`, {
      mailbox: 'shared-inbox@contoso.test',
      durationMs: 12.5,
      ok: true,
      accessToken: token,
      clientSecret: SANDBOX_APP.clientSecret,
      body: BODY_MARKER,
      text: BODY_MARKER,
      detail: `client_secret=${SANDBOX_APP.clientSecret} and ${token}`,
      err: new Error(`AUTHENTICATE XOAUTH2 ${secrets[4]} refused`),
      nested: { reply: `Bearer ${token}` },
    });
    delete process.env.POSTROOM_LOG_LEVEL;

    assert.deepEqual(calls[0], ['debug', 'debug line reaches the host', { mailbox: 'shared-inbox@contoso.test', delivered: 3 }]);
    const [level, message, fields] = calls[1] as [string, string, Record<string, unknown>];
    assert.equal(level, 'information');
    assert.equal(message, 'careless message with Bearer [token]');
    assert.equal(fields.mailbox, 'shared-inbox@contoso.test');
    assert.equal(fields.durationMs, 12.5);
    for (const k of ['accessToken', 'clientSecret', 'body', 'text']) assert.ok(!(k in fields), `${k} dropped`);

    await flushTelemetry();
    const records = logExporter.getFinishedLogRecords();
    const rec = records.find((r) => typeof r.body === 'string' && r.body.startsWith('careless message'));
    assert.ok(rec, 'the line became an OTel log record');
    assert.equal(rec.severityText, 'INFO');
    assert.equal(rec.attributes.mailbox, 'shared-inbox@contoso.test');
    assert.equal(rec.attributes.durationMs, 12.5);
    assert.equal(rec.attributes.ok, true);
    const { detail, err } = rec.attributes;
    assert.ok(typeof detail === 'string' && typeof err === 'string', 'a string field stays text; an Error becomes JSON text');
    assert.match(detail, /client_secret=\[redacted\]/);
    assert.match(err, /"name":"Error"/);
    assert.equal(rec.spanContext?.traceId, TRACE_ID, 'correlated with the host invocation');
    assert.ok(records.some((r) => r.body === 'debug line reaches the host' && r.attributes.delivered === 3));
    assert.ok(
      records.some((r) => r.body === 'poll done' && typeof r.attributes.mailbox === 'string'),
      'poll logs are records too',
    );
  });

  test('no token, client secret, XOAUTH2 blob or message body in anything exported (in-memory and the App Insights envelopes)', async () => {
    await flushTelemetry();
    await collect();
    const deadline = Date.now() + 10_000;
    while (!envelopes.some((e) => e.includes('careless message')) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    const appInsights = envelopes.join('\n');
    assert.match(appInsights, /careless message with Bearer \[token\]/, 'logs reached the ingestion endpoint');
    assert.match(appInsights, /"mailbox":"shared-inbox@contoso.test"/, 'fields became customDimensions (properties)');
    assert.match(appInsights, /postroom\.messages\.ingested/, 'metrics reached the ingestion endpoint');
    assert.deepEqual([...authorizations], [`Bearer ${INGESTION_TOKEN}`], 'every export authenticated with the Entra credential');
    const exported = JSON.stringify({
      logs: logExporter.getFinishedLogRecords().map((r) => ({ body: r.body, attributes: r.attributes, resource: r.resource.attributes })),
      metrics: metricExporter.getMetrics(),
    });
    assert.ok(secrets.length >= 5, 'token, Bearer token, XOAUTH2 blob collected');
    for (const s of secrets) {
      assert.ok(!exported.includes(s), `in-memory export contains a secret (${s.slice(0, 6)}…)`);
      assert.ok(!appInsights.includes(s), `App Insights envelopes contain a secret (${s.slice(0, 6)}…)`);
    }
    assert.ok(!/eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\./.test(exported + appInsights), 'no JWT at all');
  });
});

describe('telemetry: flushed at the end of every invocation (Flex Consumption may freeze the instance right after)', () => {
  const context = (id: string) => new azureFunctions.InvocationContext({ invocationId: id, functionName: 'pollMailbox', logHandler: () => {} });
  // The periodic metric reader exports hourly: a point is in the in-memory exporter only if something flushed.
  const exported = (mailbox: string) => metricExporter.getMetrics().some((rm) => points(rm, 'postroom.messages.ingested', { mailbox }).length > 0);

  test('a record emitted in a handler is exported when the wrapped handler returns (metrics and the App Insights log envelope)', async () => {
    const handler = async (_job: unknown, ctx: InstanceType<typeof azureFunctions.InvocationContext>) => {
      getMetrics().messageIngested('flush-probe@contoso.test', 7);
      contextLogger(ctx).info('flush probe 51c2', { mailbox: 'flush-probe@contoso.test' });
      return 'done';
    };
    // Without the wrapper nothing is exported when the handler returns.
    await handler(undefined, context('inv-unwrapped'));
    getMetrics().messageIngested('unflushed-probe@contoso.test', 1);
    assert.equal(exported('unflushed-probe@contoso.test'), false, 'not exported before a flush');

    const before = envelopes.length;
    assert.equal(await withTelemetryFlush(handler)(undefined, context('inv-wrapped')), 'done');
    assert.equal(exported('flush-probe@contoso.test'), true, 'the metric was exported by the time the handler returned');
    assert.ok(
      envelopes.slice(before).some((e) => e.includes('flush probe 51c2')),
      'the log line reached the ingestion endpoint by then',
    );
  });

  test('a handler that throws is flushed too and its error passed on unchanged', async () => {
    const boom = new Error('handler failed');
    const handler = withTelemetryFlush(async () => {
      getMetrics().messageIngested('throwing-probe@contoso.test', 1);
      throw boom;
    });
    await assert.rejects(handler(), (e) => e === boom);
    assert.equal(exported('throwing-probe@contoso.test'), true);
  });

  test('bounded: a flush that hangs is given up after the timeout; with telemetry off nothing is flushed', async () => {
    const hang = () => new Promise<void>(() => {});
    const t0 = performance.now();
    assert.equal(await flushTelemetryBounded({ flush: hang, timeoutMs: 100 }), 'timeout');
    assert.ok(performance.now() - t0 < 1_000);
    assert.equal(await flushTelemetryBounded({ flush: () => Promise.reject(new Error('exporter down')) }), 'failed');
    let called = false;
    assert.equal(
      await flushTelemetryBounded({
        env: {},
        flush: async () => {
          called = true;
        },
      }),
      'off',
    );
    assert.equal(called, false);
    const slow = withTelemetryFlush(async () => 'ok', { flush: hang, timeoutMs: 100 });
    assert.equal(await slow(), 'ok', 'a hanging export does not hold the invocation');
  });

  test('every function registered in functions/ flushes at its end, and appTerminate flushes', async () => {
    const handlers = new Map<string, unknown>();
    const terminate: (() => Promise<void>)[] = [];
    const fapp = azureFunctions.app as unknown as Record<string, unknown> & { hook: Record<string, unknown> };
    const saved = { storageQueue: fapp.storageQueue, timer: fapp.timer, http: fapp.http, appTerminate: fapp.hook.appTerminate };
    for (const k of ['storageQueue', 'timer', 'http'] as const) fapp[k] = (name: string, o: { handler: unknown }) => handlers.set(name, o.handler);
    fapp.hook.appTerminate = (h: () => Promise<void>) => terminate.push(h);
    try {
      for (const f of readdirSync(join(root, 'dist', 'functions')).filter((f) => f.endsWith('.js'))) await import(`../functions/${f}`);
    } finally {
      Object.assign(fapp, { storageQueue: saved.storageQueue, timer: saved.timer, http: saved.http });
      fapp.hook.appTerminate = saved.appTerminate;
    }
    assert.deepEqual([...handlers.keys()].sort(), ['pollMailbox', 'pollSchedule', 'sendNotification', 'status']);
    for (const [name, h] of handlers) assert.ok(flushesTelemetry(h), `${name} is registered with withTelemetryFlush`);
    assert.equal(terminate.length, 1);
    getMetrics().messageIngested('terminate-probe@contoso.test', 1);
    await terminate[0]();
    assert.equal(exported('terminate-probe@contoso.test'), true, 'appTerminate exported what was buffered');
  });
});

describe('telemetry: settings and the single log-level source', () => {
  test('APPLICATIONINSIGHTS_AUTHENTICATION_STRING → managed identity client id', async () => {
    assert.deepEqual(parseAuthenticationString('Authorization=AAD;ClientId=11111111-2222-3333-4444-555555555555'), { aad: true, clientId: '11111111-2222-3333-4444-555555555555' });
    assert.deepEqual(parseAuthenticationString(' authorization = aad '), { aad: true });
    assert.equal(parseAuthenticationString(''), undefined);
    assert.equal(parseAuthenticationString('Authorization=Key'), undefined);
    const { exporterCredential } = await import('../shared/telemetry/otel.js');
    const { ManagedIdentityCredential } = await import('@azure/identity');
    const cred = await exporterCredential({ env: { APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'Authorization=AAD;ClientId=11111111-2222-3333-4444-555555555555' } });
    assert.ok(cred instanceof ManagedIdentityCredential);
    assert.equal(await exporterCredential({ env: {} }), undefined);
  });

  test('POSTROOM_LOG_LEVEL is read in one place and host.json lets the Function category through at Debug', () => {
    assert.equal(logLevelFromEnv({}), 'info');
    assert.equal(logLevelFromEnv({ POSTROOM_LOG_LEVEL: 'debug' }), 'debug');
    assert.equal(logLevelFromEnv({ POSTROOM_LOG_LEVEL: 'loud' }), 'info');
    assert.equal(parseLogLevel('loud'), undefined);
    const host = JSON.parse(readFileSync(join(root, 'host.json'), 'utf8'));
    assert.equal(host.telemetryMode, 'OpenTelemetry');
    assert.equal(host.logging.logLevel.Function, 'Debug');
  });

  test('without the connection string no OpenTelemetry module is ever resolved (cold start)', async () => {
    const { spawnSync } = await import('node:child_process');
    const { mkdtempSync, writeFileSync, readdirSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { pathToFileURL } = await import('node:url');
    const dir = mkdtempSync(join(tmpdir(), 'postroom-otel-hook-'));
    const hook = join(dir, 'hook.mjs');
    writeFileSync(
      hook,
      `export async function resolve(s, c, next) { if (/@opentelemetry\\/|monitor-opentelemetry/.test(s)) throw new Error('OpenTelemetry loaded: ' + s); return next(s, c); }`,
    );
    const fnDir = join(root, 'dist', 'functions');
    const files = readdirSync(fnDir)
      .filter((f) => f.endsWith('.js'))
      .map((f) => pathToFileURL(join(fnDir, f)).href);
    const lib = (p: string) => JSON.stringify(pathToFileURL(join(root, 'dist', 'shared', p)).href);
    const script = `import { register } from 'node:module'; register(${JSON.stringify(pathToFileURL(hook).href)});
      console.warn = () => {};
      for (const f of ${JSON.stringify(files)}) await import(f);
      const t = await import(${lib('telemetry/index.js')}); const { consoleLogger } = await import(${lib('logger.js')});
      t.getMetrics().messageIngested('m', 1); consoleLogger({ level: 'error' }).info('x');
      if (await t.startTelemetry()) throw new Error('telemetry started');`;
    const run = (env: NodeJS.ProcessEnv) => spawnSync(process.execPath, ['--input-type=module', '-e', script], { cwd: root, encoding: 'utf8', env });
    const { APPLICATIONINSIGHTS_CONNECTION_STRING: cs, ...without } = process.env;
    const off = run(without);
    assert.equal(off.status, 0, off.stderr);
    // The same check fails when telemetry is on: it does detect a load.
    const on = run({ ...without, APPLICATIONINSIGHTS_CONNECTION_STRING: cs });
    assert.match(on.stderr, /telemetry could not start.*OpenTelemetry loaded/s);
  });

  test('lag tracker and the no-op metrics', () => {
    const lag = lagTracker();
    const now = new Date('2026-01-01T12:00:00Z');
    lag.seen({ id: 'a', receivedAt: new Date('2026-01-01T11:00:00Z') });
    lag.seen({ id: 'b', receivedAt: new Date('2026-01-01T11:30:00Z') });
    lag.seen({ id: 'c' });
    assert.equal(lag.lagMs(now), 3_600_000);
    lag.acknowledged([{ id: 'a' }]);
    assert.equal(lag.lagMs(now), 1_800_000);
    lag.acknowledged([{ id: 'b' }, { id: 'c' }]);
    assert.equal(lag.lagMs(now), 0);
    assert.notEqual(getMetrics(), noopMetrics, 'telemetry is on in this process');
  });
});
