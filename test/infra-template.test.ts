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
import { join } from 'node:path';
import { loadConfig, SETTINGS } from '../shared/config/index.js';

const root = join(import.meta.dirname, '..', '..');
const templateText = readFileSync(join(root, 'infra', 'azuredeploy.json'), 'utf8');
const template = JSON.parse(templateText) as Template;

interface Resource { type: string; apiVersion: string; name: string; scope?: string; properties?: any; sku?: any; kind?: string; identity?: any; dependsOn?: string[] }
interface Template { parameters: Record<string, { type: string; defaultValue?: unknown }>; variables: Record<string, unknown>; resources: Resource[]; outputs: Record<string, { value: unknown }> }

const UAMI_CLIENT = '6b0c4f3e-1d2a-4c5b-9e8f-0a1b2c3d4e5f';
const UAMI_PRINCIPAL = '9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a';
const TENANT = '72f988bf-86f1-41af-91ab-2d7cd011db47';
const RG = '/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-postroom';
const ROLES = {
  blobOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b',
  queueContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88',
  tableContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3',
  secretsUser: '4633458b-17de-408a-b874-0445c86b69e6',
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
      return evaluate(p!.defaultValue);
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
    take: (s: string, n: number) => s.slice(0, n),
    uniqueString: (...a: string[]) => BigInt('0x' + hash(...a).slice(0, 16)).toString(36).padStart(13, 'a').slice(0, 13),
    guid: (...a: string[]) => hash(...a).slice(0, 32).replace(/^(.{8})(.{4})(.{4})(.{4})(.{12})$/, '$1-$2-$3-$4-$5'),
    resourceGroup: () => ({ id: RG, location: 'westeurope', name: 'rg-postroom' }),
    subscription: () => ({ tenantId: TENANT, subscriptionId: '00000000-0000-0000-0000-000000000001' }),
    environment: () => ({ name: 'AzureCloud', suffixes: { storage: 'core.windows.net', keyvaultDns: '.vault.azure.net' }, authentication: { loginEndpoint: 'https://login.microsoftonline.com/' } }),
    resourceId,
    subscriptionResourceId: (type: string, name: string) => `/subscriptions/00000000-0000-0000-0000-000000000001/providers/${type}/${name}`,
    reference: (id: string) => {
      if (id.includes('/userAssignedIdentities/')) return { clientId: UAMI_CLIENT, principalId: UAMI_PRINCIPAL, tenantId: TENANT };
      if (id.includes('/components/')) return { ConnectionString: 'InstrumentationKey=00000000-0000-0000-0000-0000000000aa;IngestionEndpoint=https://westeurope-5.in.applicationinsights.azure.com/' };
      throw new Error(`reference() to ${id} is not modelled`);
    },
  };

  function evalExpr(src: string): Value {
    let i = 0;
    const ws = () => { while (src[i] === ' ') i++; };
    const primary = (): Value => {
      ws();
      if (src[i] === "'") {
        let s = '';
        for (i++; ; i++) {
          if (src[i] === "'" && src[i + 1] === "'") { s += "'"; i++; } else if (src[i] === "'") { i++; return s; } else s += src[i];
        }
      }
      const num = /^-?\d+/.exec(src.slice(i));
      if (num) { i += num[0].length; return Number(num[0]); }
      const id = /^[A-Za-z_][A-Za-z0-9_]*/.exec(src.slice(i));
      assert.ok(id, `expression syntax at ${i}: ${src}`);
      i += id![0].length;
      ws();
      if (src[i] !== '(') { if (id![0] === 'true') return true; if (id![0] === 'false') return false; throw new Error(`bare identifier ${id![0]}`); }
      i++;
      const args: Value[] = [];
      ws();
      while (src[i] !== ')') { args.push(postfix()); ws(); if (src[i] === ',') i++; ws(); }
      i++;
      const fn = fns[id![0]];
      assert.ok(fn, `ARM function ${id![0]}() is not modelled by this test`);
      return fn!(...args);
    };
    const postfix = (): Value => {
      let v = primary();
      for (;;) {
        ws();
        if (src[i] === '.') { i++; const p = /^[A-Za-z_][A-Za-z0-9_]*/.exec(src.slice(i))![0]; i += p.length; v = v[p]; }
        else if (src[i] === '[') { i++; const k = postfix(); ws(); i++; v = v[k]; }
        else return v;
      }
    };
    const v = postfix();
    ws();
    assert.equal(i, src.length, `trailing input in [${src}]`);
    return v;
  }

  function evaluate(v: unknown): Value {
    if (typeof v === 'string') return v.startsWith('[') && !v.startsWith('[[') && v.endsWith(']') ? evalExpr(v.slice(1, -1)) : v;
    if (Array.isArray(v)) return v.map(evaluate);
    if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [evaluate(k), evaluate(x)]));
    return v;
  }
  return evaluate;
}

const placeholderParams = {
  apps: [{ name: 'main', tenantId: TENANT, clientId: '0a5bd0c5-1111-4000-8000-000000000001', secret: { vaultUrl: '{vaultUrl}', name: 'postroom-client-secret' } }],
  mailboxes: [{ address: 'invoices@contoso.com', postAction: 'move:Processed' }, { address: 'legacy@contoso.com', protocol: 'pop3' }],
};
const evaluate = makeEvaluator(placeholderParams);
const resources = template.resources.map((r) => ({ raw: r, ...(evaluate(r) as Resource) }));
const byType = (t: string) => resources.filter((r) => r.type === t);
const site = byType('Microsoft.Web/sites')[0]!;
const settings: Record<string, string> = Object.fromEntries((site.properties.siteConfig.appSettings as { name: string; value: unknown }[]).map((s) => [s.name, String(s.value)]));
const sa = evaluate("[parameters('storageAccountName')]") as string;
const vault = evaluate("[parameters('vaultName')]") as string;
const appInsights = evaluate("[variables('appInsightsName')]") as string;

test('the app settings the template sets load with the real loadConfig: identity-based storage, the template\'s vault, no warnings', () => {
  const config = loadConfig(settings);
  assert.equal(config.storage.connectionString, undefined);
  assert.deepEqual(config.storage.serviceUris, { blob: `https://${sa}.blob.core.windows.net`, queue: `https://${sa}.queue.core.windows.net`, table: `https://${sa}.table.core.windows.net` });
  assert.deepEqual(config.storage.credential, { kind: 'managedidentity', clientId: UAMI_CLIENT });
  assert.deepEqual(config.apps[0]!.secret, { kind: 'keyvault', vaultUrl: `https://${vault}.vault.azure.net`, name: 'postroom-client-secret', version: undefined });
  assert.equal(config.mailboxes.length, 2);
  assert.equal(config.sandbox, false);
  assert.deepEqual(config.warnings, []);
  // Only settings the code knows, the host's own, and the telemetry ones.
  const host = /^(AzureWebJobsStorage__(blobServiceUri|queueServiceUri|tableServiceUri|credential|clientId)|APPLICATIONINSIGHTS_CONNECTION_STRING|APPLICATIONINSIGHTS_AUTHENTICATION_STRING|AZURE_CLIENT_ID)$/;
  for (const name of Object.keys(settings)) assert.ok((SETTINGS as readonly string[]).includes(name) || host.test(name), `unexpected app setting ${name}`);
  // Flex Consumption rejects these: the runtime comes from functionAppConfig.
  for (const name of ['FUNCTIONS_WORKER_RUNTIME', 'FUNCTIONS_EXTENSION_VERSION', 'WEBSITE_RUN_FROM_PACKAGE', 'WEBSITE_CONTENTAZUREFILECONNECTIONSTRING', 'AzureWebJobsStorage']) assert.ok(!(name in settings), name);
});

test('every binding expression and trigger connection in functions/ is satisfied by the app settings (identity-based, user-assigned)', () => {
  const dir = join(root, 'functions');
  const sources = readdirSync(dir).filter((f) => f.endsWith('.ts')).map((f) => readFileSync(join(dir, f), 'utf8')).join('\n');
  const expressions = [...sources.matchAll(/%([A-Z0-9_]+)%/g)].map((m) => m[1]!);
  const connections = [...sources.matchAll(/connection:\s*'([A-Za-z0-9_]+)'/g)].map((m) => m[1]!);
  assert.ok(expressions.length >= 3 && connections.length >= 2, 'found the bindings');
  for (const e of expressions) assert.ok(settings[e], `%${e}% needs the app setting ${e}`);
  for (const c of ['AzureWebJobsStorage', ...connections]) {
    assert.ok(!(c in settings), `${c} must not be a connection string`);
    assert.match(settings[`${c}__queueServiceUri`] ?? '', /^https:\/\/[a-z0-9]+\.queue\.core\.windows\.net$/, `${c}__queueServiceUri`);
    assert.equal(settings[`${c}__credential`], 'managedidentity');
    assert.equal(settings[`${c}__clientId`], UAMI_CLIENT);
  }
  assert.match(settings.AzureWebJobsStorage__blobServiceUri!, /^https:\/\/[a-z0-9]+\.blob\.core\.windows\.net$/);
  assert.equal(settings.APPLICATIONINSIGHTS_AUTHENTICATION_STRING, `Authorization=AAD;ClientId=${UAMI_CLIENT}`);
  assert.match(settings.APPLICATIONINSIGHTS_CONNECTION_STRING!, /^InstrumentationKey=/);
});

test('every role the code needs is assigned to the identity at the narrowest scope, and nothing more', () => {
  const config = loadConfig(settings);
  const s = config.storage;
  const account = `Microsoft.Storage/storageAccounts/${sa}`;
  const vaultOf = (url: string) => new URL(url).hostname.split('.')[0];
  // What the code (and the Functions host on its behalf) does, resource by resource.
  const needs = [
    // Host storage creates its own containers (locks, timers, keys); Flex reads the deployment container; Postroom writes blobs and takes leases.
    { role: ROLES.blobOwner, scope: account },
    ...[s.jobsQueue, `${s.jobsQueue}-poison`, s.outputQueue, s.notifyQueue, `${s.notifyQueue}-poison`].map((q) => ({ role: ROLES.queueContributor, scope: `${account}/queueServices/default/queues/${q}` })),
    { role: ROLES.tableContributor, scope: `${account}/tableServices/default/tables/${s.stateTable}` },
    ...[...new Set(config.apps.flatMap((a) => (a.secret?.kind === 'keyvault' ? [vaultOf(a.secret.vaultUrl)] : [])))].map((v) => ({ role: ROLES.secretsUser, scope: `Microsoft.KeyVault/vaults/${v}` })),
    { role: ROLES.metricsPublisher, scope: `Microsoft.Insights/components/${appInsights}` },
  ];
  const assignments = byType('Microsoft.Authorization/roleAssignments').map((r) => ({
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
  const created = new Set(resources.map((r) => `${r.type.split('/').slice(0, 2).join('/')}/${r.name.split('/').map((n, i) => (i === 0 ? n : `${r.type.split('/')[i + 1]}/${n}`)).join('/')}`));
  for (const a of assignments) assert.ok(created.has(a.scope), `scope ${a.scope} is created here`);
  // The site waits for its roles: the host reads its storage at the first start.
  const siteDeps = new Set((site.dependsOn ?? []).map(String));
  for (const r of byType('Microsoft.Authorization/roleAssignments')) assert.ok(siteDeps.has(r.name), `site depends on ${r.name}`);
});

test('no key, secret or connection string anywhere; local auth off on storage, Key Vault and Application Insights', () => {
  assert.doesNotMatch(templateText, /listKeys|listAccountSas|listServiceSas|listSecrets|AccountKey=|SharedAccessSignature|DefaultEndpointsProtocol|clientSecret|"password"/i);
  const storage = byType('Microsoft.Storage/storageAccounts')[0]!;
  assert.equal(storage.properties.allowSharedKeyAccess, false);
  assert.equal(storage.properties.allowBlobPublicAccess, false);
  assert.equal(storage.properties.minimumTlsVersion, 'TLS1_2');
  assert.equal(byType('Microsoft.KeyVault/vaults')[0]!.properties.enableRbacAuthorization, true);
  assert.equal(byType('Microsoft.Insights/components')[0]!.properties.DisableLocalAuth, true);
  assert.equal(byType('Microsoft.OperationalInsights/workspaces')[0]!.properties.features.disableLocalAuth, true);
  assert.equal(site.properties.siteConfig.connectionStrings, undefined);
  assert.equal(site.properties.httpsOnly, true);
  for (const p of byType('Microsoft.Web/sites/basicPublishingCredentialsPolicies')) assert.equal(p.properties.allow, false, p.name);
  assert.deepEqual(byType('Microsoft.Web/sites/basicPublishingCredentialsPolicies').map((p) => p.name.split('/')[1]).sort(), ['ftp', 'scm']);
  for (const [name, value] of Object.entries(settings)) {
    if (name === 'APPLICATIONINSIGHTS_CONNECTION_STRING') continue; // an ingestion address; useless without Entra auth (local auth off)
    assert.doesNotMatch(value, /AccountKey|SharedAccessSignature|sig=|InstrumentationKey|secret"\s*:\s*\{\s*"value"/i, name);
  }
});

test('Flex Consumption on Node 22 with the deployment container authenticated by the user-assigned identity', () => {
  const plan = byType('Microsoft.Web/serverfarms')[0]!;
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
  assert.deepEqual(byType('Microsoft.Storage/storageAccounts/tableServices/tables').map((t) => t.name.split('/')[2]), [s.stateTable]);
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
  assert.equal(outputs.identityClientId!.value, UAMI_CLIENT);
  assert.equal(outputs.identityPrincipalId!.value, UAMI_PRINCIPAL);
  assert.equal(outputs.vaultName!.value, vault);
  assert.equal(outputs.vaultUri!.value, `https://${vault}.vault.azure.net`);
  assert.equal(outputs.functionAppName!.value, app);
  assert.equal(outputs.federatedCredentialIssuer!.value, `https://login.microsoftonline.com/${TENANT}/v2.0`);
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
