import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { loadConfig, parseStorageSettings, storageServiceUris, SETTINGS } from '../shared/config/index.js';
import { describeStorageCredential, storageCredential } from '../shared/storage.js';
import { PostroomError } from '../shared/errors.js';

const UAMI = '6b0c4f3e-1d2a-4c5b-9e8f-0a1b2c3d4e5f';
const rest = {
  POSTROOM_APPS: JSON.stringify([
    { tenantId: 'contoso.onmicrosoft.com', clientId: '11111111-2222-3333-4444-555555555555', secret: { vaultUrl: 'https://v.vault.azure.net', name: 's' } },
  ]),
  POSTROOM_MAILBOXES: JSON.stringify([{ address: 'shared@contoso.com' }]),
};
const identity = {
  POSTROOM_STORAGE__queueServiceUri: 'https://postroomsa.queue.core.windows.net/',
  POSTROOM_STORAGE__blobServiceUri: 'https://postroomsa.blob.core.windows.net',
  POSTROOM_STORAGE__tableServiceUri: 'https://postroomsa.table.core.windows.net',
  POSTROOM_STORAGE__credential: 'managedidentity',
  POSTROOM_STORAGE__clientId: UAMI,
};

function problemsOf(env: Record<string, string>): string[] {
  const problems: string[] = [];
  parseStorageSettings(env, problems);
  return problems;
}

test('connection string mode (Azurite): no service URIs, DefaultAzureCredential unused and unconfigured', () => {
  const s = loadConfig({ ...rest, POSTROOM_STORAGE: 'UseDevelopmentStorage=true' }).storage;
  assert.equal(s.connectionString, 'UseDevelopmentStorage=true');
  assert.equal(s.serviceUris, undefined);
  assert.deepEqual(s.credential, { kind: 'default' });
  assert.equal(s.cloud, 'public');
  assert.equal(s.jobsQueue, 'postroom-jobs');
  assert.equal(s.stateTable, 'postroomstate');
});

test("identity mode with the host's setting names: the URIs as given (trailing slash dropped), user-assigned managed identity", () => {
  const s = loadConfig({ ...rest, ...identity }).storage;
  assert.equal(s.connectionString, undefined);
  assert.deepEqual(s.serviceUris, {
    queue: 'https://postroomsa.queue.core.windows.net',
    blob: 'https://postroomsa.blob.core.windows.net',
    table: 'https://postroomsa.table.core.windows.net',
  });
  assert.deepEqual(s.credential, { kind: 'managedidentity', clientId: UAMI });
  assert.equal(s.accountName, 'postroomsa');
  assert.equal(describeStorageCredential(s), `ManagedIdentityCredential(clientId ${UAMI})`);
  for (const k of Object.keys(identity)) assert.ok((SETTINGS as readonly string[]).includes(k), `${k} in SETTINGS`);
});

test('accountName shorthand derives the three service URIs per POSTROOM_CLOUD', () => {
  const expected = { public: 'core.windows.net', usgov: 'core.usgovcloudapi.net', usgovdod: 'core.usgovcloudapi.net', china: 'core.chinacloudapi.cn' } as const;
  for (const [cloud, suffix] of Object.entries(expected)) {
    const problems: string[] = [];
    const s = parseStorageSettings({ POSTROOM_STORAGE__accountName: 'postroomsa', POSTROOM_CLOUD: cloud.toUpperCase() }, problems);
    assert.deepEqual(problems, []);
    assert.equal(s.cloud, cloud);
    assert.deepEqual(s.serviceUris, { blob: `https://postroomsa.blob.${suffix}`, queue: `https://postroomsa.queue.${suffix}`, table: `https://postroomsa.table.${suffix}` });
    assert.deepEqual(storageServiceUris('postroomsa', cloud as keyof typeof expected), s.serviceUris);
  }
  // Without POSTROOM_CLOUD: the public cloud; without a credential setting: DefaultAzureCredential (local dev).
  const s = parseStorageSettings({ POSTROOM_STORAGE__accountName: 'postroomsa' }, []);
  assert.equal(s.serviceUris!.queue, 'https://postroomsa.queue.core.windows.net');
  assert.equal(describeStorageCredential(s), 'DefaultAzureCredential');
});

test('an explicit service URI wins over the one derived from the account name (private endpoint, custom domain)', () => {
  const s = parseStorageSettings({ POSTROOM_STORAGE__accountName: 'postroomsa', POSTROOM_STORAGE__queueServiceUri: 'https://queues.contoso.example' }, []);
  assert.equal(s.serviceUris!.queue, 'https://queues.contoso.example');
  assert.equal(s.serviceUris!.blob, 'https://postroomsa.blob.core.windows.net');
});

test('bad storage settings are all reported at once, each naming the setting and the fix', () => {
  assert.match(problemsOf({}).join('\n'), /POSTROOM_STORAGE: missing .*__queueServiceUri.*__accountName/);
  assert.match(
    problemsOf({ POSTROOM_STORAGE: 'UseDevelopmentStorage=true', POSTROOM_STORAGE__accountName: 'postroomsa' }).join('\n'),
    /both a connection string and POSTROOM_STORAGE__\*/,
  );
  assert.match(problemsOf({ POSTROOM_STORAGE: 'UseDevelopmentStorage=true', POSTROOM_STORAGE__credential: 'managedidentity' }).join('\n'), /identity-based storage only/);
  assert.match(
    problemsOf({ POSTROOM_STORAGE__queueServiceUri: identity.POSTROOM_STORAGE__queueServiceUri }).join('\n'),
    /__blobServiceUri: missing[\s\S]*__tableServiceUri: missing/,
  );
  assert.match(problemsOf({ ...identity, POSTROOM_STORAGE__blobServiceUri: 'http://postroomsa.blob.core.windows.net' }).join('\n'), /__blobServiceUri: .* must be https/);
  assert.match(problemsOf({ ...identity, POSTROOM_STORAGE__tableServiceUri: 'postroomsa' }).join('\n'), /__tableServiceUri: "postroomsa" is not a URI/);
  assert.match(problemsOf({ ...identity, POSTROOM_STORAGE__credential: 'clientsecret' }).join('\n'), /__credential: "clientsecret" is not supported; use "managedidentity"/);
  assert.match(problemsOf({ ...identity, POSTROOM_STORAGE__credential: '' }).join('\n'), /__clientId: set POSTROOM_STORAGE__credential=managedidentity too/);
  assert.match(problemsOf({ ...identity, POSTROOM_STORAGE__clientId: 'my-identity' }).join('\n'), /__clientId: "my-identity" is not a GUID/);
  assert.match(problemsOf({ POSTROOM_STORAGE__accountName: 'Postroom_SA' }).join('\n'), /__accountName: "Postroom_SA" is not a storage account name/);
  assert.match(
    problemsOf({ POSTROOM_STORAGE__accountName: 'postroomsa', POSTROOM_CLOUD: 'mars' }).join('\n'),
    /POSTROOM_CLOUD: "mars" is not one of public, usgov, usgovdod, china/,
  );
  assert.match(problemsOf({ POSTROOM_STORAGE: 'UseDevelopmentStorage=true', POSTROOM_JOBS_QUEUE: 'Jobs' }).join('\n'), /POSTROOM_JOBS_QUEUE: "Jobs" is not a valid queue name/);
  // Through loadConfig: one ConfigInvalid listing every problem.
  assert.throws(
    () => loadConfig({ ...rest, ...identity, POSTROOM_STORAGE__clientId: 'x', POSTROOM_CLOUD: 'mars' }),
    (e: unknown) =>
      e instanceof PostroomError && e.code === 'ConfigInvalid' && /2 problem\(s\)/.test(e.message) && /__clientId/.test(e.message) && /POSTROOM_CLOUD/.test(e.message),
  );
});

/** A local App Service managed-identity endpoint (IDENTITY_ENDPOINT/IDENTITY_HEADER protocol). */
async function identityEndpoint(): Promise<{ url: string; requests: URL[]; headers: string[]; close(): Promise<void> }> {
  const requests: URL[] = [];
  const headers: string[] = [];
  const server = createServer((req, res) => {
    const url = new URL(req.url!, 'http://127.0.0.1');
    requests.push(url);
    headers.push(String(req.headers['x-identity-header'] ?? ''));
    res.setHeader('content-type', 'application/json');
    const expiresOn = Math.floor(Date.now() / 1000) + 3600;
    res.end(
      JSON.stringify({
        access_token: 'mi-token-for-test',
        expires_on: String(expiresOn),
        resource: url.searchParams.get('resource'),
        token_type: 'Bearer',
        client_id: url.searchParams.get('client_id'),
      }),
    );
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/msi/token`,
    requests,
    headers,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

test('storageCredential with credential=managedidentity asks the managed-identity endpoint for the configured client id (no fallback chain)', async () => {
  const mi = await identityEndpoint();
  const saved = { IDENTITY_ENDPOINT: process.env.IDENTITY_ENDPOINT, IDENTITY_HEADER: process.env.IDENTITY_HEADER };
  process.env.IDENTITY_ENDPOINT = mi.url;
  process.env.IDENTITY_HEADER = 'header-from-platform';
  try {
    const s = parseStorageSettings(identity, []);
    const credential = storageCredential(s);
    const token = await credential.getToken('https://storage.azure.com/.default');
    assert.equal(token?.token, 'mi-token-for-test');
    assert.equal(mi.requests.length, 1);
    assert.equal(mi.requests[0].pathname, '/msi/token');
    assert.equal(mi.requests[0].searchParams.get('resource'), 'https://storage.azure.com');
    assert.equal(mi.requests[0].searchParams.get('client_id'), UAMI);
    assert.equal(mi.headers[0], 'header-from-platform');
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    await mi.close();
  }
});
