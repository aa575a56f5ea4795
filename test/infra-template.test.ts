/**
 * infra/azuredeploy.json checked against the code: the app settings it sets
 * are evaluated (a small ARM expression evaluator, placeholder parameter
 * values) and loaded with the real `loadConfig`; the roles it assigns are
 * compared with what the code's storage, Key Vault and telemetry use.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { loadConfig, SETTINGS } from '../shared/config/index.js';
import { shippedWorkerSettings } from '../bench/worker-settings.js';

const root = join(import.meta.dirname, '..', '..');
const templateText = readFileSync(join(root, 'infra', 'azuredeploy.json'), 'utf8');
const template = JSON.parse(templateText) as Template;

interface Resource {
  type: string;
  apiVersion: string;
  name: string;
  scope?: string;
  properties?: any;
  sku?: any;
  kind?: string;
  identity?: any;
  dependsOn?: string[];
}
interface Template {
  parameters: Record<string, { type: string; defaultValue?: unknown }>;
  variables: Record<string, unknown>;
  resources: Resource[];
  outputs: Record<string, { value: unknown }>;
}

const UAMI_CLIENT = '6b0c4f3e-1d2a-4c5b-9e8f-0a1b2c3d4e5f';
const UAMI_PRINCIPAL = '9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a';
const TENANT = '72f988bf-86f1-41af-91ab-2d7cd011db47';
const RG = '/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-postroom';
const ROLES = {
  blobOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b',
  queueContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88',
  tableContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3',
  secretsUser: '4633458b-17de-408a-b874-0445c86b69e6',
  certificateUser: 'db79e9a7-68ee-4b58-9aeb-b90e7c24fcba',
  metricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb',
};
const FORBIDDEN_ROLES = {
  Owner: '8e3af657-a8ff-443c-a75c-2fe8c4bcb635',
  Contributor: 'b24988ac-6180-42a0-ab88-20f7382dd24c',
  'User Access Administrator': '18d7d88d-d35e-4fb5-a5c3-7773c20a72d9',
  'Storage Account Contributor': '17d1049b-9a84-46fb-8f53-869881c3d3ab',
  'Key Vault Administrator': '00482a5a-887f-4fb3-b363-3b7fe8e74483',
  'Key Vault Secrets Officer': 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7',
};
/** Current API versions per resource type (none older than 2020-02-02, the newest for components). */
const API_VERSIONS: Record<string, string[]> = {
  'Microsoft.ManagedIdentity/userAssignedIdentities': ['2023-01-31', '2024-11-30'],
  'Microsoft.Storage/storageAccounts': ['2023-05-01', '2024-01-01', '2025-01-01'],
  'Microsoft.Storage/storageAccounts/blobServices': ['2023-05-01', '2024-01-01', '2025-01-01'],
  'Microsoft.Storage/storageAccounts/queueServices': ['2023-05-01', '2024-01-01', '2025-01-01'],
  'Microsoft.Storage/storageAccounts/tableServices': ['2023-05-01', '2024-01-01', '2025-01-01'],
  'Microsoft.Storage/storageAccounts/blobServices/containers': ['2023-05-01', '2024-01-01', '2025-01-01'],
  'Microsoft.Storage/storageAccounts/queueServices/queues': ['2023-05-01', '2024-01-01', '2025-01-01'],
  'Microsoft.Storage/storageAccounts/tableServices/tables': ['2023-05-01', '2024-01-01', '2025-01-01'],
  'Microsoft.KeyVault/vaults': ['2023-07-01', '2024-11-01'],
  'Microsoft.OperationalInsights/workspaces': ['2023-09-01', '2025-02-01'],
  'Microsoft.Insights/components': ['2020-02-02'],
  'Microsoft.Web/serverfarms': ['2024-04-01', '2024-11-01'],
  'Microsoft.Web/sites': ['2024-04-01', '2024-11-01'],
  'Microsoft.Web/sites/basicPublishingCredentialsPolicies': ['2024-04-01', '2024-11-01'],
  'Microsoft.Authorization/roleAssignments': ['2022-04-01'],
};

// ---- a small ARM template expression evaluator (the functions this template uses) ----

type Value = any;
const hash = (...parts: unknown[]) => createHash('sha256').update(JSON.stringify(parts)).digest('hex');

function resourceId(type: string, ...names: string[]): string {
  const [ns, ...types] = type.split('/');
  return `${RG}/providers/${ns}/${types.map((t, i) => `${t}/${names[i]}`).join('/')}`;
}

function makeEvaluator(params: Record<string, unknown>) {
  const vars = new Map<string, unknown>();
  const fns: Record<string, (...a: Value[]) => Value> = {
    parameters: (n: string) => {
      if (n in params) return params[n];
      const p = template.parameters[n];
      assert.ok(p && 'defaultValue' in p, `parameter ${n} has no value`);
      return evaluate(p.defaultValue);
    },
    variables: (n: string) => {
      if (!vars.has(n)) {
        assert.ok(n in template.variables, `variable ${n}`);
        vars.set(n, evaluate(template.variables[n]));
      }
      return vars.get(n);
    },
    format: (f: string, ...a: Value[]) => f.replace(/\{(\d+)\}/g, (_, i) => String(a[Number(i)])),
    concat: (...a: Value[]) => (Array.isArray(a[0]) ? a.flat() : a.join('')),
    string: (v: Value) => (typeof v === 'string' ? v : JSON.stringify(v)),
    replace: (s: string, a: string, b: string) => s.split(a).join(b),
    toLower: (s: string) => s.toLowerCase(),
    // contains(): an object's property (case-insensitive, as ARM), an array's element, a string's substring.
    contains: (c: Value, x: Value) =>
      Array.isArray(c) ? c.includes(x) : typeof c === 'string' ? c.includes(x) : Object.keys(c).some((k) => k.toLowerCase() === String(x).toLowerCase()),
    empty: (v: Value) => v === null || v === undefined || v === '' || (Array.isArray(v) ? v.length === 0 : typeof v === 'object' && Object.keys(v).length === 0),
    length: (v: Value) => (typeof v === 'string' || Array.isArray(v) ? v.length : Object.keys(v).length),
    not: (v: boolean) => !v,
    or: (...a: boolean[]) => a.some(Boolean),
    and: (...a: boolean[]) => a.every(Boolean),
    filter: (a: Value[], f: (x: Value) => boolean) => a.filter((x) => f(x)),
    take: (s: string, n: number) => s.slice(0, n),
    uniqueString: (...a: string[]) =>
      BigInt('0x' + hash(...a).slice(0, 16))
        .toString(36)
        .padStart(13, 'a')
        .slice(0, 13),
    guid: (...a: string[]) =>
      hash(...a)
        .slice(0, 32)
        .replace(/^(.{8})(.{4})(.{4})(.{4})(.{12})$/, '$1-$2-$3-$4-$5'),
    resourceGroup: () => ({ id: RG, location: 'westeurope', name: 'rg-postroom' }),
    subscription: () => ({ tenantId: TENANT, subscriptionId: '00000000-0000-0000-0000-000000000001' }),
    environment: () => ({
      name: 'AzureCloud',
      suffixes: { storage: 'core.windows.net', keyvaultDns: '.vault.azure.net' },
      authentication: { loginEndpoint: 'https://login.microsoftonline.com/' },
    }),
    resourceId,
    subscriptionResourceId: (type: string, name: string) => `/subscriptions/00000000-0000-0000-0000-000000000001/providers/${type}/${name}`,
    reference: (id: string) => {
      if (id.includes('/userAssignedIdentities/')) return { clientId: UAMI_CLIENT, principalId: UAMI_PRINCIPAL, tenantId: TENANT };
      if (id.includes('/components/'))
        return { ConnectionString: 'InstrumentationKey=00000000-0000-0000-0000-0000000000aa;IngestionEndpoint=https://westeurope-5.in.applicationinsights.azure.com/' };
      throw new Error(`reference() to ${id} is not modelled`);
    },
  };

  // Parsed to a tree first: lambda bodies are evaluated per element, not where they are written.
  type Node = { k: 'lit'; v: Value } | { k: 'call'; name: string; args: Node[] } | { k: 'prop'; of: Node; name: string } | { k: 'index'; of: Node; key: Node };
  function parse(src: string): Node {
    let i = 0;
    const ws = () => {
      while (src[i] === ' ') i++;
    };
    const primary = (): Node => {
      ws();
      if (src[i] === "'") {
        let s = '';
        for (i++; ; i++) {
          if (src[i] === "'" && src[i + 1] === "'") {
            s += "'";
            i++;
          } else if (src[i] === "'") {
            i++;
            return { k: 'lit', v: s };
          } else s += src[i];
        }
      }
      const num = /^-?\d+/.exec(src.slice(i));
      if (num) {
        i += num[0].length;
        return { k: 'lit', v: Number(num[0]) };
      }
      const id = /^[A-Za-z_][A-Za-z0-9_]*/.exec(src.slice(i));
      assert.ok(id, `expression syntax at ${i}: ${src}`);
      i += id[0].length;
      ws();
      if (src[i] !== '(') {
        if (id[0] === 'true') return { k: 'lit', v: true };
        if (id[0] === 'false') return { k: 'lit', v: false };
        throw new Error(`bare identifier ${id[0]}`);
      }
      i++;
      const args: Node[] = [];
      ws();
      while (src[i] !== ')') {
        args.push(postfix());
        ws();
        if (src[i] === ',') i++;
        ws();
      }
      i++;
      assert.ok(id[0] === 'lambda' || id[0] === 'lambdaVariables' || fns[id[0]], `ARM function ${id[0]}() is not modelled by this test`);
      return { k: 'call', name: id[0], args };
    };
    const postfix = (): Node => {
      let v = primary();
      for (;;) {
        ws();
        if (src[i] === '.') {
          i++;
          const p = /^[A-Za-z_][A-Za-z0-9_]*/.exec(src.slice(i))![0];
          i += p.length;
          v = { k: 'prop', of: v, name: p };
        } else if (src[i] === '[') {
          i++;
          const key = postfix();
          ws();
          i++;
          v = { k: 'index', of: v, key };
        } else return v;
      }
    };
    const v = postfix();
    ws();
    assert.equal(i, src.length, `trailing input in [${src}]`);
    return v;
  }

  function run(n: Node, scope: Record<string, Value>): Value {
    switch (n.k) {
      case 'lit':
        return n.v;
      case 'prop':
        return run(n.of, scope)[n.name];
      case 'index':
        return run(n.of, scope)[run(n.key, scope)];
      case 'call': {
        if (n.name === 'lambda') {
          const names = n.args.slice(0, -1).map((a) => run(a, scope) as string);
          const body = n.args[n.args.length - 1];
          return (...values: Value[]) => run(body, { ...scope, ...Object.fromEntries(names.map((name, j) => [name, values[j]])) });
        }
        if (n.name === 'lambdaVariables') {
          const name = run(n.args[0], scope) as string;
          assert.ok(name in scope, `lambdaVariables('${name}') outside its lambda`);
          return scope[name];
        }
        return fns[n.name](...n.args.map((a) => run(a, scope)));
      }
    }
  }
  const evalExpr = (src: string): Value => run(parse(src), {});

  function evaluate(v: unknown): Value {
    if (typeof v === 'string') return v.startsWith('[') && !v.startsWith('[[') && v.endsWith(']') ? evalExpr(v.slice(1, -1)) : v;
    if (Array.isArray(v)) return v.map(evaluate);
    if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [evaluate(k), evaluate(x)]));
    return v;
  }
  return evaluate;
}

const APP_CLIENT = '0a5bd0c5-1111-4000-8000-000000000001';
const MAILBOX_PARAMS = [{ address: 'invoices@contoso.com', postAction: 'move:Processed' }, { address: 'legacy@contoso.com', protocol: 'pop3' }, { address: 'orders@contoso.com' }];
/** The `apps` parameter per credential kind, as docs/deploy.md shows them (placeholders the template fills). */
const APP_PARAMS = {
  secret: { name: 'main', tenantId: TENANT, clientId: APP_CLIENT, secret: { vaultUrl: '{vaultUrl}', name: 'postroom-client-secret' } },
  certificate: { name: 'cert', tenantId: TENANT, clientId: '0a5bd0c5-1111-4000-8000-000000000002', certificate: { vaultUrl: '{vaultUrl}', name: 'postroom-app' } },
  federated: { name: 'keyless', tenantId: TENANT, clientId: '0a5bd0c5-1111-4000-8000-000000000003', federated: { clientId: '{identityClientId}' } },
};
type Kind = keyof typeof APP_PARAMS;

/** The template evaluated with these apps: resources whose `condition` holds, and the site's app settings. */
function deploy(apps: { name: string }[]) {
  const mailboxes = apps.length > 1 ? MAILBOX_PARAMS.map((m, i) => ({ ...m, app: apps[i % apps.length].name })) : MAILBOX_PARAMS;
  const evaluate = makeEvaluator({ apps, mailboxes });
  const resources = template.resources
    .filter((r) => !('condition' in r) || evaluate((r as { condition: unknown }).condition) === true)
    .map((r) => ({ raw: r, ...(evaluate(r) as Resource) }));
  const site = resources.find((r) => r.type === 'Microsoft.Web/sites')!;
  const settings: Record<string, string> = Object.fromEntries((site.properties.siteConfig.appSettings as { name: string; value: unknown }[]).map((s) => [s.name, String(s.value)]));
  return { evaluate, resources, site, settings, byType: (t: string) => resources.filter((r) => r.type === t) };
}

const { evaluate, resources, site, settings, byType } = deploy([APP_PARAMS.secret]);
const sa = evaluate("[parameters('storageAccountName')]") as string;
const vault = evaluate("[parameters('vaultName')]") as string;
const appInsights = evaluate("[variables('appInsightsName')]") as string;

test("the app settings the template sets load with the real loadConfig: identity-based storage, the template's vault, no warnings", () => {
  const config = loadConfig(settings);
  assert.equal(config.storage.connectionString, undefined);
  assert.deepEqual(config.storage.serviceUris, {
    blob: `https://${sa}.blob.core.windows.net`,
    queue: `https://${sa}.queue.core.windows.net`,
    table: `https://${sa}.table.core.windows.net`,
  });
  assert.deepEqual(config.storage.credential, { kind: 'managedidentity', clientId: UAMI_CLIENT });
  assert.deepEqual(config.apps[0].secret, { kind: 'keyvault', vaultUrl: `https://${vault}.vault.azure.net`, name: 'postroom-client-secret', version: undefined });
  assert.equal(config.mailboxes.length, MAILBOX_PARAMS.length);
  assert.equal(config.sandbox, false);
  assert.deepEqual(config.warnings, []);
  // Only settings the code knows, the host's own, the telemetry ones, and the worker's runtime (flags, allocator).
  const host =
    /^(AzureWebJobsStorage__(blobServiceUri|queueServiceUri|tableServiceUri|credential|clientId)|APPLICATIONINSIGHTS_CONNECTION_STRING|APPLICATIONINSIGHTS_AUTHENTICATION_STRING|AZURE_CLIENT_ID|languageWorkers__node__arguments|MALLOC_ARENA_MAX)$/;
  for (const name of Object.keys(settings)) assert.ok((SETTINGS as readonly string[]).includes(name) || host.test(name), `unexpected app setting ${name}`);
  // Flex Consumption rejects these: the runtime comes from functionAppConfig.
  for (const name of ['FUNCTIONS_WORKER_RUNTIME', 'FUNCTIONS_EXTENSION_VERSION', 'WEBSITE_RUN_FROM_PACKAGE', 'WEBSITE_CONTENTAZUREFILECONNECTIONSTRING', 'AzureWebJobsStorage'])
    assert.ok(!(name in settings), name);
});

test('every binding expression and trigger connection in functions/ is satisfied by the app settings (identity-based, user-assigned)', () => {
  const dir = join(root, 'functions');
  const sources = readdirSync(dir)
    .filter((f) => f.endsWith('.ts'))
    .map((f) => readFileSync(join(dir, f), 'utf8'))
    .join('\n');
  const expressions = [...sources.matchAll(/%([A-Z0-9_]+)%/g)].map((m) => m[1]);
  const connections = [...sources.matchAll(/connection:\s*'([A-Za-z0-9_]+)'/g)].map((m) => m[1]);
  assert.ok(expressions.length >= 3 && connections.length >= 2, 'found the bindings');
  for (const e of expressions) assert.ok(settings[e], `%${e}% needs the app setting ${e}`);
  for (const c of ['AzureWebJobsStorage', ...connections]) {
    assert.ok(!(c in settings), `${c} must not be a connection string`);
    assert.match(settings[`${c}__queueServiceUri`] ?? '', /^https:\/\/[a-z0-9]+\.queue\.core\.windows\.net$/, `${c}__queueServiceUri`);
    assert.equal(settings[`${c}__credential`], 'managedidentity');
    assert.equal(settings[`${c}__clientId`], UAMI_CLIENT);
  }
  assert.match(settings.AzureWebJobsStorage__blobServiceUri, /^https:\/\/[a-z0-9]+\.blob\.core\.windows\.net$/);
  assert.equal(settings.APPLICATIONINSIGHTS_AUTHENTICATION_STRING, `Authorization=AAD;ClientId=${UAMI_CLIENT}`);
  assert.match(settings.APPLICATIONINSIGHTS_CONNECTION_STRING, /^InstrumentationKey=/);
});

/**
 * Key Vault data actions per built-in role (Azure's role definitions), and what
 * the code calls per credential kind: a client secret and a certificate are both
 * read with SecretClient.getSecret (a certificate's key and chain come through
 * its secret); a federated credential never touches Key Vault.
 */
const KV_ROLE_ACTIONS: Record<string, string[]> = {
  [ROLES.secretsUser]: ['Microsoft.KeyVault/vaults/secrets/getSecret/action', 'Microsoft.KeyVault/vaults/secrets/readMetadata/action'],
  [ROLES.certificateUser]: [
    'Microsoft.KeyVault/vaults/certificates/read',
    'Microsoft.KeyVault/vaults/secrets/getSecret/action',
    'Microsoft.KeyVault/vaults/secrets/readMetadata/action',
    'Microsoft.KeyVault/vaults/keys/read',
  ],
};
const KV_ACTIONS_BY_KIND: Record<Kind, string[]> = {
  secret: ['Microsoft.KeyVault/vaults/secrets/getSecret/action'],
  certificate: ['Microsoft.KeyVault/vaults/secrets/getSecret/action'],
  federated: [],
};

test('the code reads Key Vault through the secrets endpoint only (what KV_ACTIONS_BY_KIND assumes)', () => {
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
  for (const dep of ['@azure/keyvault-certificates', '@azure/keyvault-keys']) assert.ok(!(dep in pkg.dependencies), `${dep} would need certificate or key reads`);
  const cert = readFileSync(join(root, 'shared', 'secrets', 'certificate.ts'), 'utf8');
  assert.match(cert, /createVaultReader\(/, 'the certificate is read with the secret reader');
  const reader = readFileSync(join(root, 'shared', 'secrets', 'index.ts'), 'utf8');
  assert.deepEqual(
    [...reader.matchAll(/\bc\.(\w+)\(/g)].map((m) => m[1]),
    ['getSecret'],
    'the only Key Vault call',
  );
});

/** The narrowest built-in role that grants `actions` (fewest data actions). */
function narrowestKvRole(actions: string[]): string {
  const fits = Object.entries(KV_ROLE_ACTIONS).filter(([, granted]) => actions.every((a) => granted.includes(a)));
  fits.sort((x, y) => x[1].length - y[1].length);
  assert.ok(fits.length, `no role grants ${actions.join(', ')}`);
  return fits[0][0];
}

const CASES: Kind[][] = [['secret'], ['certificate'], ['federated'], ['secret', 'certificate', 'federated'], ['federated', 'certificate']];
for (const kinds of CASES) {
  test(`every role the code needs is assigned at the narrowest scope, and nothing more: apps with ${kinds.join(' + ')}`, () => {
    const d = deploy(kinds.map((k) => APP_PARAMS[k]));
    const config = loadConfig(d.settings);
    assert.deepEqual(
      config.apps.map((a) => a.credential.kind),
      kinds,
    );
    const s = config.storage;
    const account = `Microsoft.Storage/storageAccounts/${sa}`;
    // Key Vault: per vault, the data actions of the apps' credential kinds; one role granting them.
    const vaultOf = (a: (typeof config.apps)[number]) =>
      a.credential.kind === 'certificate'
        ? a.credential.certificate.vaultUrl
        : a.credential.kind === 'secret' && a.credential.secret.kind === 'keyvault'
          ? a.credential.secret.vaultUrl
          : undefined;
    const kvActions = new Map<string, Set<string>>();
    for (const a of config.apps) {
      const url = vaultOf(a);
      if (!url || !KV_ACTIONS_BY_KIND[a.credential.kind].length) continue;
      const v = new URL(url).hostname.split('.')[0];
      assert.equal(v, vault, "the apps use the template's vault");
      for (const x of KV_ACTIONS_BY_KIND[a.credential.kind]) kvActions.set(v, (kvActions.get(v) ?? new Set()).add(x));
    }
    // What the code (and the Functions host on its behalf) does, resource by resource.
    const needs = [
      // Host storage creates its own containers (locks, timers, keys); Flex reads the deployment container; Postroom writes blobs and takes leases.
      { role: ROLES.blobOwner, scope: account },
      ...[s.jobsQueue, `${s.jobsQueue}-poison`, s.outputQueue, s.notifyQueue, `${s.notifyQueue}-poison`].map((q) => ({
        role: ROLES.queueContributor,
        scope: `${account}/queueServices/default/queues/${q}`,
      })),
      { role: ROLES.tableContributor, scope: `${account}/tableServices/default/tables/${s.stateTable}` },
      ...[...kvActions].map(([v, actions]) => ({ role: narrowestKvRole([...actions]), scope: `Microsoft.KeyVault/vaults/${v}` })),
      { role: ROLES.metricsPublisher, scope: `Microsoft.Insights/components/${appInsights}` },
    ];
    const assignments = d.byType('Microsoft.Authorization/roleAssignments').map((r) => ({
      role: String(r.properties.roleDefinitionId).split('/').pop()!,
      scope: r.scope!,
      principalId: r.properties.principalId,
      principalType: r.properties.principalType,
    }));
    const key = (x: { role: string; scope: string }) => `${x.role} @ ${x.scope}`;
    assert.deepEqual(assignments.map(key).sort(), needs.map(key).sort());
    for (const a of assignments) {
      assert.equal(a.principalId, UAMI_PRINCIPAL);
      assert.equal(a.principalType, 'ServicePrincipal');
      assert.ok(!Object.values(FORBIDDEN_ROLES).includes(a.role), `forbidden role ${a.role}`);
      assert.doesNotMatch(a.scope, /^\/?subscriptions\/|resourceGroups/i, 'no subscription or resource-group scope');
    }
    // Each scope is a resource this template creates.
    const created = new Set(
      d.resources.map(
        (r) =>
          `${r.type.split('/').slice(0, 2).join('/')}/${r.name
            .split('/')
            .map((n, i) => (i === 0 ? n : `${r.type.split('/')[i + 1]}/${n}`))
            .join('/')}`,
      ),
    );
    for (const a of assignments) assert.ok(created.has(a.scope), `scope ${a.scope} is created here`);
    // The site waits for its roles: the host reads its storage at the first start.
    const siteDeps = new Set((d.site.dependsOn ?? []).map(String));
    for (const r of d.byType('Microsoft.Authorization/roleAssignments')) assert.ok(siteDeps.has(r.name), `site depends on ${r.name}`);
    // A federated app's managed identity is the template's (the one the federated credential trusts).
    for (const a of config.apps) if (a.credential.kind === 'federated') assert.equal(a.credential.clientId, UAMI_CLIENT);
    assert.deepEqual(config.warnings, []);
  });
}

test('no key, secret or connection string anywhere; local auth off on storage, Key Vault and Application Insights', () => {
  assert.doesNotMatch(templateText, /listKeys|listAccountSas|listServiceSas|listSecrets|AccountKey=|SharedAccessSignature|DefaultEndpointsProtocol|clientSecret|"password"/i);
  const storage = byType('Microsoft.Storage/storageAccounts')[0];
  assert.equal(storage.properties.allowSharedKeyAccess, false);
  assert.equal(storage.properties.allowBlobPublicAccess, false);
  assert.equal(storage.properties.minimumTlsVersion, 'TLS1_2');
  assert.equal(byType('Microsoft.KeyVault/vaults')[0].properties.enableRbacAuthorization, true);
  assert.equal(byType('Microsoft.Insights/components')[0].properties.DisableLocalAuth, true);
  assert.equal(byType('Microsoft.OperationalInsights/workspaces')[0].properties.features.disableLocalAuth, true);
  assert.equal(site.properties.siteConfig.connectionStrings, undefined);
  assert.equal(site.properties.httpsOnly, true);
  for (const p of byType('Microsoft.Web/sites/basicPublishingCredentialsPolicies')) assert.equal(p.properties.allow, false, p.name);
  assert.deepEqual(
    byType('Microsoft.Web/sites/basicPublishingCredentialsPolicies')
      .map((p) => p.name.split('/')[1])
      .sort(),
    ['ftp', 'scm'],
  );
  for (const [name, value] of Object.entries(settings)) {
    if (name === 'APPLICATIONINSIGHTS_CONNECTION_STRING') continue; // an ingestion address; useless without Entra auth (local auth off)
    assert.doesNotMatch(value, /AccountKey|SharedAccessSignature|sig=|InstrumentationKey|secret"\s*:\s*\{\s*"value"/i, name);
  }
});

test('Flex Consumption on Node 22 with the deployment container authenticated by the user-assigned identity', () => {
  const plan = byType('Microsoft.Web/serverfarms')[0];
  assert.deepEqual(plan.sku, { name: 'FC1', tier: 'FlexConsumption' });
  assert.equal(plan.properties.reserved, true);
  const uami = resourceId('Microsoft.ManagedIdentity/userAssignedIdentities', evaluate("[variables('identityName')]"));
  assert.deepEqual(site.identity, { type: 'UserAssigned', userAssignedIdentities: { [uami]: {} } });
  const fc = site.properties.functionAppConfig;
  assert.deepEqual(fc.runtime, { name: 'node', version: '22' });
  assert.deepEqual(fc.deployment.storage.authentication, { type: 'UserAssignedIdentity', userAssignedIdentityResourceId: uami });
  const container = new URL(fc.deployment.storage.value);
  assert.equal(container.hostname, `${sa}.blob.core.windows.net`);
  const containers = byType('Microsoft.Storage/storageAccounts/blobServices/containers').map((c) => c.name.split('/')[2]);
  assert.ok(containers.includes(container.pathname.slice(1)), 'the deployment container is created');
  const s = loadConfig(settings).storage;
  for (const c of [s.blobContainer, s.leaseContainer]) assert.ok(containers.includes(c), c);
  const queues = byType('Microsoft.Storage/storageAccounts/queueServices/queues').map((q) => q.name.split('/')[2]);
  assert.deepEqual(queues.sort(), [s.jobsQueue, `${s.jobsQueue}-poison`, s.outputQueue, s.notifyQueue, `${s.notifyQueue}-poison`].sort());
  assert.deepEqual(
    byType('Microsoft.Storage/storageAccounts/tableServices/tables').map((t) => t.name.split('/')[2]),
    [s.stateTable],
  );
});

test('resource names are valid, API versions current, and the outputs give what the admin needs next', () => {
  assert.match(sa, /^[a-z0-9]{3,24}$/);
  assert.match(vault, /^[a-zA-Z](?!.*--)[a-zA-Z0-9-]{1,22}[a-zA-Z0-9]$/);
  const app = evaluate("[parameters('functionAppName')]") as string;
  assert.match(app, /^[a-z0-9](?!.*--)[a-z0-9-]{0,58}[a-z0-9]$/);
  for (const r of resources) {
    for (const part of r.name.split('/')) assert.match(part, /^[A-Za-z0-9][A-Za-z0-9-]{1,62}$/, `${r.type} name ${r.name}`);
    assert.ok(API_VERSIONS[r.type]?.includes(r.apiVersion), `${r.type}@${r.apiVersion} is not in the allow-list`);
  }
  const outputs = evaluate(template.outputs) as Record<string, { value: string }>;
  assert.equal(outputs.identityClientId.value, UAMI_CLIENT);
  assert.equal(outputs.identityPrincipalId.value, UAMI_PRINCIPAL);
  assert.equal(outputs.vaultName.value, vault);
  assert.equal(outputs.vaultUri.value, `https://${vault}.vault.azure.net`);
  assert.equal(outputs.functionAppName.value, app);
  assert.equal(outputs.federatedCredentialIssuer.value, `https://login.microsoftonline.com/${TENANT}/v2.0`);
});

test('docs/deploy.md walks through the template: its file, every output, every parameter without a default, and the package step', () => {
  const doc = readFileSync(join(root, 'docs', 'deploy.md'), 'utf8');
  assert.match(doc, /az deployment group create[^\n]*\n?[^\n]*--template-file infra\/azuredeploy\.json/);
  for (const name of Object.keys(template.outputs)) assert.ok(doc.includes(`\`${name}\``), `output ${name} documented`);
  for (const [name, p] of Object.entries(template.parameters)) assert.ok(doc.includes(name), `parameter ${name} documented${'defaultValue' in p ? '' : ' (required)'}`);
  assert.match(doc, /npm run package/);
  assert.match(doc, /func azure functionapp publish/);
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
  assert.equal(pkg.scripts.package, 'node scripts/package.mjs');
});

test('docs/deploy.md shows an apps example per credential kind, each deployable: it loads and gets exactly its Key Vault role', () => {
  const doc = readFileSync(join(root, 'docs', 'deploy.md'), 'utf8');
  const examples = [...doc.matchAll(/```json\n([\s\S]*?)\n```/g)].map(
    (m) => JSON.parse(m[1].replace(/<[^>]+>/g, (x) => (x.includes('tenant') ? TENANT : APP_CLIENT))) as { name: string }[],
  );
  const kinds = examples.map((apps) => {
    const d = deploy(apps);
    const [app] = loadConfig(d.settings).apps;
    const kvRoles = d.byType('Microsoft.Authorization/roleAssignments').filter((r) => r.scope!.startsWith('Microsoft.KeyVault/'));
    assert.equal(kvRoles.length, app.credential.kind === 'federated' ? 0 : 1, app.credential.kind);
    if (app.credential.kind === 'federated') assert.equal(app.credential.clientId, UAMI_CLIENT);
    return app.credential.kind;
  });
  assert.deepEqual(kinds.sort(), ['certificate', 'federated', 'secret']);
  // The federated credential step uses the template's outputs for issuer and subject.
  assert.match(doc, /az ad app federated-credential create[\s\S]*federatedCredentialIssuer[\s\S]*identityPrincipalId[\s\S]*api:\/\/AzureADTokenExchange/);
});

test('the Node worker gets the memory settings bench figure D6 measures, and this Node accepts them', () => {
  const args = settings['languageWorkers__node__arguments'].split(/\s+/).filter(Boolean);
  assert.ok(args.some((a) => a.startsWith('--max-semi-space-size=')) && args.some((a) => a.startsWith('--heap-growing-percent=')), args.join(' '));
  assert.equal(settings['MALLOC_ARENA_MAX'], '2');
  // A flag V8 does not know makes node exit 9 ("bad option"); the worker would then never start.
  const run = spawnSync(process.execPath, [...args, '-e', 'process.stdout.write(String(require("v8").getHeapStatistics().total_heap_size > 0))'], { encoding: 'utf8' });
  assert.equal(run.status, 0, run.stderr);
  assert.equal(run.stdout, 'true');
  const bench = shippedWorkerSettings(root);
  assert.deepEqual(bench.execArgv, args, 'the bench measures what ships');
  assert.deepEqual(bench.env, { MALLOC_ARENA_MAX: '2' });
});
