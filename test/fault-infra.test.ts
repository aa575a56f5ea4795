/**
 * The fault matrix's infrastructure rows (docs/reliability.md, "Infrastructure
 * faults"): storage stopped mid-poll and restarted, storage unreachable at the
 * start, Azure Storage answering 503 ServerBusy, Key Vault / token endpoint /
 * mail server black-holed and refusing, a connection dropped after login.
 * Every fault is a real process or listener on 127.0.0.1.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { QueueClient } from '@azure/storage-queue';
import { BlobServiceClient } from '@azure/storage-blob';
import { startStack, MAILBOXES, type Stack } from './support/stack.js';
import { startStorageBusyProxy } from './support/storage-busy-proxy.js';
import { startBlackHole, refusingPort, type BlackHole } from './support/black-hole.js';
import { startFaultProxy } from './support/fault-proxy.js';
import { loadConfig } from '../shared/config/index.js';
import { memoryLogger } from '../shared/logger.js';
import { createRuntime, type Runtime } from '../shared/runtime.js';
import { createAppTokenProvider, resetTokenProviders } from '../shared/auth/token-provider.js';
import { createNetworkClient } from '../shared/auth/network-client.js';
import { createVaultReader, isVaultUnreachable } from '../shared/secrets/index.js';
import { pollMailbox, type PollResult } from '../shared/poll/poll-mailbox.js';
import { PostroomError } from '../shared/errors.js';
import { startAzurite, type Azurite } from '../sandbox/azurite.js';
import { SANDBOX_APP, SANDBOX_TENANT } from '../sandbox/index.js';
import * as M from '../sandbox/messages.js';

/** Unhandled rejections anywhere in this process while the faults run: there must be none. */
const unhandled: unknown[] = [];
process.on('unhandledRejection', (e) => unhandled.push(e));

/** The deadline every fault row runs with (POSTROOM_POLL_DEADLINE_SECONDS). */
const DEADLINE_S = 5;
/** What a poll may take past its soft deadline here: releasing the lease and writing the status. */
const SLACK_MS = 3_000;

let stack: Stack;
let hole: BlackHole;
before(async () => {
  [stack, hole] = await Promise.all([startStack(), startBlackHole()]);
});
after(async () => {
  await hole?.close();
  await stack?.stop();
});

type Rt = Runtime & { log: ReturnType<typeof memoryLogger> };

interface RuntimeOptions {
  env?: Record<string, string>;
  /** Edits the app's settings (hosts, authority). */
  app?: (app: Record<string, unknown>) => void;
  /** Reads the client secret from this vault URL (the managed identity's token from the sandbox issuer). */
  vaultUrl?: string;
}

/** A runtime over the stack with the fault's settings; the deadline is short unless `env` says otherwise. */
async function runtimeFor(mailboxes: unknown[], o: RuntimeOptions = {}): Promise<Rt> {
  resetTokenProviders();
  const env: Record<string, string> = {
    ...stack.sandbox.env(mailboxes),
    POSTROOM_CONCURRENCY: '4',
    POSTROOM_POLL_DEADLINE_SECONDS: String(DEADLINE_S),
    POSTROOM_CONNECT_TIMEOUT_MS: '2000',
    POSTROOM_LEASE_SECONDS: '15',
    ...o.env,
  };
  const apps = JSON.parse(env.POSTROOM_APPS);
  o.app?.(apps[0]);
  let credential;
  if (o.vaultUrl) {
    apps[0].secret = { vaultUrl: o.vaultUrl, name: 'postroom-client-secret' };
    credential = await vaultCredential();
  }
  env.POSTROOM_APPS = JSON.stringify(apps);
  const log = memoryLogger();
  const rt = createRuntime({
    config: loadConfig(env),
    logger: log,
    credential,
    secretClientOptions: { tlsOptions: { ca: stack.sandbox.certs.ca }, disableChallengeResourceVerification: true },
  });
  return Object.assign(rt, { log });
}

/** Every message in a queue, read to the end (received, not deleted; they come back after 10 minutes). */
async function drainQueue(connectionString: string, name: string): Promise<any[]> {
  const q = new QueueClient(connectionString, name);
  if (!(await q.exists())) return [];
  const out: any[] = [];
  for (;;) {
    const { receivedMessageItems } = await q.receiveMessages({ numberOfMessages: 32, visibilityTimeout: 600 });
    if (receivedMessageItems.length === 0) return out;
    for (const m of receivedMessageItems) out.push(JSON.parse(Buffer.from(m.messageText, 'base64').toString('utf8')));
  }
}

/** The row's figures: messages expected, queue writes, duplicates (all under one key?), lost. */
interface Audit {
  messages: number;
  writes: number;
  duplicates: number;
  lost: string[];
  /** Subjects written under more than one key (must be empty). */
  splitKeys: string[];
}

function audit(subjects: readonly string[], written: readonly any[]): Audit {
  const keys = new Map<string, Set<string>>();
  for (const m of written) {
    const s = m.headers?.subject as string;
    keys.set(s, (keys.get(s) ?? new Set()).add(m.idempotencyKey));
  }
  return {
    messages: subjects.length,
    writes: written.length,
    duplicates: written.length - keys.size,
    lost: subjects.filter((s) => !keys.has(s)),
    splitKeys: [...keys].filter(([, k]) => k.size > 1).map(([s]) => s),
  };
}

async function deliverAll(box: string, prefix: string, n: number): Promise<string[]> {
  const subjects = Array.from({ length: n }, (_, i) => `${prefix} ${String(i).padStart(4, '0')}`);
  for (const s of subjects) await stack.sandbox.dovecot.deliver(box, M.plainMessage({ subject: s }));
  return subjects;
}

/** The mailbox lease blob's state: `available` once released, `expired` once run out. */
async function leaseState(connectionString: string, rt: Rt): Promise<string | undefined> {
  const mb = rt.config.mailboxes[0];
  const blob = BlobServiceClient.fromConnectionString(connectionString).getContainerClient(rt.config.storage.leaseContainer).getBlobClient(`leases/${mb.key}`);
  return (await blob.getProperties()).leaseState;
}

/** Polls until a poll is not turned away by a lease still held (it expires after POSTROOM_LEASE_SECONDS). */
async function pollPastLease(rt: Rt): Promise<PollResult> {
  for (let i = 0; ; i++) {
    const r = await pollMailbox(rt, rt.config.mailboxes[0]);
    if (r.outcome !== 'leased' || i >= 25) return r;
    await new Promise((res) => setTimeout(res, 1_000));
  }
}

function assertNoUnhandled(): void {
  assert.deepEqual(
    unhandled.map((e) => String((e as Error)?.stack ?? e)),
    [],
    'unhandled rejections',
  );
}

/** Figures per row, printed at the end (they go into docs/reliability.md). */
const figures: Record<string, string> = {};
after(() => {
  for (const [row, f] of Object.entries(figures)) console.log(`[fault-infra] ${row}: ${f}`);
});

const imap = (address: string, extra: Record<string, unknown> = {}) => ({ address, protocol: 'imap', ...extra });

describe('infrastructure faults', () => {
  test('storage stopped mid-poll and restarted: a coded error, nothing lost, duplicates under the same key', async () => {
    const box = MAILBOXES.crash;
    const subjects = await deliverAll(box, 'storage-restart', 300);
    let az: Azurite = await startAzurite({ dir: join(stack.dir, 'azurite-restart') });
    const ports = { blobPort: az.blobPort, queuePort: az.queuePort, tablePort: az.tablePort };
    try {
      const env = { POSTROOM_STORAGE: az.connectionString, POSTROOM_OUTPUT_QUEUE: 'out-restart', POSTROOM_BATCH_SIZE: '20', POSTROOM_POLL_DEADLINE_SECONDS: '60' };
      const rt = await runtimeFor([imap(box)], { env });
      let outage: Promise<void> | undefined;
      let acked = 0;
      const first = await pollMailbox(rt, rt.config.mailboxes[0], {
        beforeAcknowledge: (done) => {
          acked += done.length;
          // Storage goes away with the poll well under way and comes back ~2 s later, on the same ports and data.
          outage ??=
            acked >= 60
              ? (async () => {
                  await az.stop();
                  await new Promise((r) => setTimeout(r, 2_000));
                  az = await startAzurite({ dir: join(stack.dir, 'azurite-restart'), ...ports });
                })()
              : undefined;
        },
      });
      await outage;
      assert.ok(outage, 'storage was stopped during the poll');
      assert.ok(first.durationMs < 60_000 + SLACK_MS, `poll took ${first.durationMs} ms`);
      if (first.outcome === 'failed') {
        assert.ok(first.error instanceof PostroomError, String(first.error));
        assert.ok(first.status !== undefined || ['StorageUnavailable', 'SinkFailed'].includes(first.error.code), `${first.error.code}: ${first.error.message}`);
        assert.match(first.error.message, / Fix: /);
      }
      // The next poll (once the lease is released or has expired) finishes the mailbox.
      const second = await pollPastLease(rt);
      assert.equal(second.outcome, 'ok', second.error?.message);
      assert.equal(await leaseState(az.connectionString, rt), 'available');
      const a = audit(subjects, await drainQueue(az.connectionString, 'out-restart'));
      assert.deepEqual(a.lost, [], `${a.lost.length} lost`);
      assert.deepEqual(a.splitKeys, []);
      figures['storage restart'] =
        `${a.messages} messages, ${a.writes} writes, ${a.duplicates} duplicates (same key), ${a.lost.length} lost; first poll ${first.outcome}${first.error ? ` ${first.error.code}` : ''} after ${first.durationMs} ms (deadline 60 s), ${first.delivered.length} acknowledged; second poll ${second.delivered.length} in ${second.durationMs} ms`;
      assertNoUnhandled();
    } finally {
      await az.stop();
    }
  });

  test('storage unreachable when a poll starts: StorageUnavailable with its fix, promptly, no unhandled rejection', async () => {
    const [blob, queue, table] = [await refusingPort(), await refusingPort(), await refusingPort()];
    const storage =
      'DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=' +
      'a'.repeat(86) +
      '==;' +
      `BlobEndpoint=http://127.0.0.1:${blob}/devstoreaccount1;QueueEndpoint=http://127.0.0.1:${queue}/devstoreaccount1;TableEndpoint=http://127.0.0.1:${table}/devstoreaccount1;`;
    const rt = await runtimeFor([imap(MAILBOXES.uidv)], { env: { POSTROOM_STORAGE: storage } });
    const r = await pollMailbox(rt, rt.config.mailboxes[0]);
    assert.equal(r.outcome, 'failed');
    assert.ok(r.error instanceof PostroomError);
    assert.equal(r.error.code, 'StorageUnavailable', r.error.message);
    assert.match(r.error.message, /Fix: Check the POSTROOM_STORAGE settings/);
    assert.ok(r.durationMs < DEADLINE_S * 1000 + 30_000, `poll took ${r.durationMs} ms`);
    figures['storage unreachable'] = `StorageUnavailable after ${r.durationMs} ms (deadline ${DEADLINE_S} s + 30 s grace)`;
    assertNoUnhandled();
  });

  test('Azure Storage answering 503 ServerBusy to every 3rd request: the poll completes through the retries', async () => {
    const az = stack.sandbox.azurite;
    const proxies = await Promise.all([az.blobPort, az.queuePort, az.tablePort].map((targetPort) => startStorageBusyProxy({ targetPort, everyNth: 3 })));
    try {
      const [b, q, t] = proxies.map((p) => p.port);
      const storage = az.connectionString.replace(`:${az.blobPort}/`, `:${b}/`).replace(`:${az.queuePort}/`, `:${q}/`).replace(`:${az.tablePort}/`, `:${t}/`);
      const box = MAILBOXES.happy;
      const subjects = await deliverAll(box, 'busy', 30);
      const rt = await runtimeFor([imap(box)], {
        env: { POSTROOM_STORAGE: storage, POSTROOM_OUTPUT_QUEUE: 'out-busy', POSTROOM_BATCH_SIZE: '20', POSTROOM_POLL_DEADLINE_SECONDS: '60' },
      });
      const r = await pollMailbox(rt, rt.config.mailboxes[0]);
      assert.equal(r.outcome, 'ok', r.error?.message);
      assert.equal(r.delivered.length, 30);
      const busy = proxies.reduce((n, p) => n + p.busy, 0);
      assert.ok(busy >= 20, `only ${busy} requests were answered 503`);
      const a = audit(subjects, await drainQueue(az.connectionString, 'out-busy'));
      assert.deepEqual(a.lost, []);
      assert.deepEqual(a.splitKeys, []);
      assert.equal(await leaseState(az.connectionString, rt), 'available');
      // The next poll makes progress: it finds nothing new and fails nothing.
      await stack.sandbox.dovecot.deliver(box, M.plainMessage({ subject: 'busy after' }));
      const next = await pollMailbox(rt, rt.config.mailboxes[0]);
      assert.equal(next.delivered.length, 1, next.error?.message);
      figures['storage 503'] =
        `${a.messages} messages, ${a.writes} writes, ${a.duplicates} duplicates (same key), ${a.lost.length} lost; ${busy} of ${busy + proxies.reduce((n, p) => n + p.forwarded, 0)} requests answered 503; poll ${r.durationMs} ms (deadline 60 s)`;
      assertNoUnhandled();
    } finally {
      await Promise.all(proxies.map((p) => p.close()));
    }
  });
});

/** One black-holed or refusing dependency: how to point the runtime at it and what the poll must say. */
interface DependencyFault {
  row: string;
  box: string;
  settings(port: number): RuntimeOptions;
  codes: string[];
  /** The message names the dependency and has a fix that fits. */
  says: RegExp;
  /** What the message must not say (a fix for another cause). */
  never?: RegExp;
}

const DEPENDENCY_FAULTS: DependencyFault[] = [
  {
    row: 'Key Vault',
    box: MAILBOXES.vault,
    settings: (port) => ({ vaultUrl: `https://localhost:${port}` }),
    codes: ['KeyVaultUnreachable'],
    says: /localhost:\d+.*Fix: Nothing to grant/s,
    never: /"get"|Secrets User|access policy/,
  },
  {
    row: 'token endpoint',
    box: MAILBOXES.neg,
    settings: (port) => ({ app: (a) => (a.authorityHost = `https://localhost:${port}`) }),
    codes: ['TokenRequestFailed'],
    says: /localhost:\d+|network|ECONNREFUSED/,
  },
  {
    row: 'mail server',
    box: MAILBOXES.seen,
    settings: (port) => ({ app: (a) => (a.imapHost = `127.0.0.1:${port}`) }),
    codes: ['ConnectionFailed', 'Timeout'],
    says: /127\.0\.0\.1:\d+/,
  },
];

describe('Key Vault, token endpoint and mail server black-holed and refusing: the poll ends by its deadline, naming the dependency', { concurrency: true }, () => {
  for (const f of DEPENDENCY_FAULTS) {
    for (const mode of ['black-holed', 'refusing'] as const) {
      test(`${f.row} ${mode}`, async () => {
        const box = mode === 'black-holed' ? f.box : `${mode}-${f.box}`;
        await stack.sandbox.dovecot.grant(SANDBOX_APP.clientId, box);
        const subjects = await deliverAll(box, `${f.row} ${mode}`, 3);
        const queue = `out-${f.row.replace(/ /g, '')}-${mode}`.toLowerCase();
        const port = mode === 'black-holed' ? hole.port : await refusingPort();
        const rt = await runtimeFor([imap(box)], { ...f.settings(port), env: { POSTROOM_OUTPUT_QUEUE: queue } });
        const r = await pollMailbox(rt, rt.config.mailboxes[0]);
        assert.equal(r.outcome, 'failed', `${f.row} ${mode}: ${r.stopped?.message ?? 'no error'}`);
        assert.ok(f.codes.includes(r.error!.code), `${r.error!.code}: ${r.error!.message}`);
        assert.match(r.error!.message, f.says);
        if (f.never) assert.doesNotMatch(r.error!.message, f.never);
        if (f.row === 'mail server' && mode === 'refusing') assert.match(r.error!.message, /DNS and outbound firewall/);
        assert.ok(r.durationMs <= DEADLINE_S * 1000 + SLACK_MS, `poll took ${r.durationMs} ms (deadline ${DEADLINE_S} s)`);
        assert.equal(await leaseState(stack.sandbox.azurite.connectionString, rt), 'available', 'lease released');
        assert.equal(r.status?.lastErrorCode, r.error!.code, 'status recorded');
        assert.equal((await stack.queueMessages(queue)).length, 0, 'nothing queued');
        // With the dependency back, the next poll delivers everything.
        const ok = await runtimeFor([imap(box)], { env: { POSTROOM_OUTPUT_QUEUE: queue } });
        const next = await pollMailbox(ok, ok.config.mailboxes[0]);
        assert.equal(next.outcome, 'ok', next.error?.message);
        const a = audit(subjects, await stack.queueMessages(queue));
        assert.deepEqual(a.lost, []);
        assert.equal(a.duplicates, 0);
        figures[`${f.row} ${mode}`] =
          `${r.error!.code} after ${r.durationMs} ms (deadline ${DEADLINE_S} s); next poll ${a.messages} messages, ${a.duplicates} duplicates, ${a.lost.length} lost`;
        assertNoUnhandled();
      });
    }
  }
});

describe('a connection lost mid-session is ConnectionLost, not "could not be reached"', () => {
  test('IMAP: dropped at FETCH once: reconnected, nothing lost; dropped every time: ConnectionLost with its own fix', async () => {
    const proxy = await startFaultProxy({
      targetPort: stack.sandbox.dovecot.imapPort,
      cert: stack.sandbox.certs.cert,
      key: stack.sandbox.certs.key,
      ca: stack.sandbox.certs.ca,
      protocol: 'imap',
    });
    try {
      const box = MAILBOXES.proxyDrop;
      const subjects = await deliverAll(box, 'dropped', 5);
      const rt = await runtimeFor([imap(box)], { app: (a) => (a.imapHost = `127.0.0.1:${proxy.port}`), env: { POSTROOM_OUTPUT_QUEUE: 'out-lost' } });
      proxy.next({ commands: [{ match: /FETCH/i, close: true }] });
      const r = await pollMailbox(rt, rt.config.mailboxes[0]);
      assert.equal(r.outcome, 'ok', r.error?.message);
      assert.ok(
        rt.log.lines.some((l) => /reconnecting/.test(l) && /ConnectionLost/.test(l)),
        rt.log.lines.join('\n'),
      );
      const a = audit(subjects, await stack.queueMessages('out-lost'));
      assert.deepEqual(a.lost, []);
      assert.deepEqual(a.splitKeys, []);

      await stack.sandbox.dovecot.deliver(box, M.plainMessage({ subject: 'dropped always' }));
      proxy.setDefault({ commands: [{ match: /FETCH/i, close: true }] });
      const failed = await pollMailbox(rt, rt.config.mailboxes[0]);
      assert.equal(failed.error?.code, 'ConnectionLost', failed.error?.message);
      assert.match(failed.error.message, /the session was open, then the connection dropped/);
      assert.match(failed.error.message, /DNS and firewall are fine/);
      assert.doesNotMatch(failed.error.message, /could not be reached/);
      assert.ok(failed.durationMs <= DEADLINE_S * 1000 + SLACK_MS, `poll took ${failed.durationMs} ms`);
      figures['IMAP dropped after login'] =
        `once: ${a.messages} messages, ${a.duplicates} duplicates, ${a.lost.length} lost, ${r.durationMs} ms; always: ConnectionLost after ${failed.durationMs} ms (deadline ${DEADLINE_S} s)`;
    } finally {
      await proxy.close();
    }
  });

  test('POP3: dropped at RETR every time: ConnectionLost; a refused connect stays ConnectionFailed with the DNS/firewall fix', async () => {
    const proxy = await startFaultProxy({
      targetPort: stack.sandbox.dovecot.pop3Port,
      cert: stack.sandbox.certs.cert,
      key: stack.sandbox.certs.key,
      ca: stack.sandbox.certs.ca,
      protocol: 'pop3',
      defaultScript: { commands: [{ match: /^RETR/i, close: true }] },
    });
    try {
      const box = MAILBOXES.popcrash;
      await deliverAll(box, 'pop dropped', 2);
      const pop = { address: box, protocol: 'pop3' };
      const rt = await runtimeFor([pop], { app: (a) => (a.pop3Host = `127.0.0.1:${proxy.port}`), env: { POSTROOM_OUTPUT_QUEUE: 'out-pop-lost' } });
      const r = await pollMailbox(rt, rt.config.mailboxes[0]);
      assert.equal(r.error?.code, 'ConnectionLost', r.error?.message);
      assert.doesNotMatch(r.error.message, /could not be reached|DNS and outbound firewall/);
      const port = await refusingPort();
      const refused = await runtimeFor([pop], { app: (a) => (a.pop3Host = `127.0.0.1:${port}`) });
      const r2 = await pollMailbox(refused, refused.config.mailboxes[0]);
      assert.equal(r2.error?.code, 'ConnectionFailed', r2.error?.message);
      assert.match(r2.error.message, /could not be reached.*DNS and outbound firewall/s);
    } finally {
      await proxy.close();
    }
  });
});

describe('every network call has its own timeout (what the deadline would otherwise have to catch)', { concurrency: true }, () => {
  const within = async (ms: number, p: Promise<unknown>, check: (e: unknown) => boolean) => {
    const t0 = Date.now();
    await assert.rejects(p, (e) => {
      assert.ok(check(e), String((e as Error)?.message ?? e));
      return true;
    });
    const took = Date.now() - t0;
    assert.ok(took < ms, `took ${took} ms`);
    return took;
  };

  test('the msal network client: a POST to a black-holed login host times out', async () => {
    const client = createNetworkClient({ timeoutMs: 300 });
    const took = await within(3_000, client.sendPostRequestAsync(`https://127.0.0.1:${hole.port}/tenant/oauth2/v2.0/token`, { body: 'grant_type=client_credentials' }), (e) =>
      /timeout/i.test((e as Error).message),
    );
    figures['msal POST timeout'] = `${took} ms with timeoutMs 300 (default 15 s)`;
  });

  test('the token provider uses it without a CA too: no signal, a black-holed login host, a TokenRequestFailed', async () => {
    resetTokenProviders();
    const rt = await runtimeFor([imap(MAILBOXES.race)], { app: (a) => (a.authorityHost = `https://localhost:${hole.port}`) });
    const app = rt.config.apps[0];
    const tokens = createAppTokenProvider(app, { secrets: { getSecret: async () => 'not-used' }, logger: memoryLogger(), networkTimeoutMs: 300 });
    await within(5_000, tokens.getToken({ renew: false }), (e) => e instanceof PostroomError && e.code === 'TokenRequestFailed' && e.retryable);
  });

  test('the Key Vault reader: a black-holed vault is KeyVaultUnreachable (no "grant" fix) within its timeout; a missing secret keeps its own fix', async () => {
    const credential = { getToken: async () => ({ token: 'x', expiresOnTimestamp: Date.now() + 3_600_000 }) };
    const reader = createVaultReader({ vaultUrl: `https://localhost:${hole.port}`, name: 's' }, `secret "s" in https://localhost:${hole.port}`, 'SecretUnavailable', {
      logger: memoryLogger(),
      credential,
      timeoutMs: 300,
    });
    const took = await within(
      6_000,
      reader.readSecret(),
      (e) => e instanceof PostroomError && e.code === 'KeyVaultUnreachable' && /no answer within 300 ms/.test(e.message) && !/"get"|Secrets User/.test(e.message),
    );
    figures['Key Vault try timeout'] = `${took} ms with timeoutMs 300 (default 10 s; a timed-out try is not retried by the SDK)`;
    const missing = createVaultReader({ vaultUrl: stack.vault.vaultUrl, name: 'no-such-secret' }, `secret "no-such-secret" in ${stack.vault.vaultUrl}`, 'SecretUnavailable', {
      logger: memoryLogger(),
      credential: await vaultCredential(),
      clientOptions: { tlsOptions: { ca: stack.sandbox.certs.ca }, disableChallengeResourceVerification: true },
    });
    await assert.rejects(
      missing.readSecret(),
      (e) => e instanceof PostroomError && e.code === 'SecretUnavailable' && /not found/.test(e.message) && /Secrets User/.test(e.message),
    );
    assert.equal(isVaultUnreachable({ statusCode: 403 }), false);
    assert.equal(isVaultUnreachable({ statusCode: 404 }), false);
    assert.equal(isVaultUnreachable({ statusCode: 503 }), true);
    assert.equal(isVaultUnreachable({ code: 'ECONNREFUSED', message: 'connect ECONNREFUSED' }), true);
  });
});

async function vaultCredential() {
  const { ClientSecretCredential } = await import('@azure/identity');
  return new ClientSecretCredential(SANDBOX_TENANT, SANDBOX_APP.clientId, SANDBOX_APP.clientSecret, {
    authorityHost: stack.sandbox.token.authorityHost,
    disableInstanceDiscovery: true,
    tlsOptions: { ca: stack.sandbox.certs.ca },
  });
}
