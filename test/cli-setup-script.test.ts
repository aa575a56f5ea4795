import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { readFileSync } from 'node:fs';
import { loadConfig } from '../shared/config/index.js';
import { renderSetupScript } from '../shared/setup/script.js';
import { SANDBOX_APP, SANDBOX_MAILBOXES, SANDBOX_OPS, SANDBOX_TENANT } from '../sandbox/index.js';

const root = resolve(import.meta.dirname, '..', '..');
const SAMPLE = JSON.parse(readFileSync(join(root, 'local.settings.sample.json'), 'utf8')).Values as Record<string, string>;

/** The sample settings with the apps and mailboxes `npm start` fills in for the sandbox (ports are not part of the script). */
function sampleWithSandbox(): Record<string, string> {
  return {
    ...SAMPLE,
    POSTROOM_APPS: JSON.stringify([{ name: 'sandbox', tenantId: SANDBOX_TENANT, clientId: SANDBOX_APP.clientId, secret: { value: SANDBOX_APP.clientSecret } }]),
    POSTROOM_MAILBOXES: JSON.stringify([
      { address: SANDBOX_MAILBOXES.shared, protocol: 'imap', notify: { to: [SANDBOX_OPS] } },
      { address: SANDBOX_MAILBOXES.archive, protocol: 'imap', postAction: 'move:Archive', notify: { to: [SANDBOX_OPS], digest: false, perMessage: true } },
      { address: SANDBOX_MAILBOXES.pop, protocol: 'pop3' },
    ]),
  };
}

const MAIN = '6e1f0c2a-4b3d-4c5e-8f9a-0b1c2d3e4f5a';
const GOV = '0c9d8e7f-1a2b-4c3d-8e4f-5a6b7c8d9e0f';
const TENANT = '3f5c2b1e-8a4d-4e6f-9b0a-1c2d3e4f5a6b';
/** A production-like set-up: two apps (one in GCC High), Key Vault secrets, IMAP + POP3, a notify sender that is not the mailbox. */
const PRODUCTION = {
  ...SAMPLE,
  POSTROOM_SANDBOX: 'false',
  POSTROOM_APPS: JSON.stringify([
    { name: 'main', tenantId: TENANT, clientId: MAIN, secret: { vaultUrl: 'https://contoso-postroom.vault.azure.net', name: 'postroom-client-secret' } },
    { name: 'gov', cloud: 'usgov', tenantId: 'contoso.onmicrosoft.us', clientId: GOV, secret: { vaultUrl: 'https://contoso-gov.vault.usgovcloudapi.net/', name: 'gov-secret' } },
  ]),
  POSTROOM_MAILBOXES: JSON.stringify([
    { address: 'invoices@contoso.com', app: 'main', postAction: 'move:Processed', notify: { to: ['ops@contoso.com'], from: 'alerts@contoso.com' } },
    { address: 'invoices@contoso.com', app: 'main', folder: 'Vendors' },
    { address: 'support@contoso.com', app: 'main', protocol: 'pop3', notify: { to: ['ops@contoso.com'] } },
    { address: 'gov-box@contoso.us', app: 'gov', protocol: 'pop3' },
  ]),
};

const lines = (s: string) => s.split('\n');
const count = (s: string, needle: string) => lines(s).filter((l) => l.includes(needle)).length;
const code = (s: string) => lines(s).filter((l) => l.trim() && !l.trim().startsWith('#'));

/** Every line that creates or changes something carries its own check (safe to re-run). */
function assertGuarded(script: string): void {
  const creating =
    /\b(New-ServicePrincipal|Add-MailboxPermission|Set-CASMailbox|Add-RecipientPermission|ad sp create|ad app permission add|keyvault secret set|role assignment create)\b/;
  for (const l of code(script).filter((x) => creating.test(x))) {
    assert.match(l, /^\s*(if \(|\|\||\[ -n )|\|\| (az|Invoke-Az) |^\s*(\$secretValue|Invoke-Az keyvault secret set)/, `unguarded: ${l}`);
  }
}

describe('postroom setup-script', () => {
  it('for the sample settings as shipped (no apps yet): exit 2 naming both missing settings, read from ./local.settings.json', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'postroom-cli-'));
    try {
      await copyFile(join(root, 'local.settings.sample.json'), join(dir, 'local.settings.json'));
      const r = await cli(['setup-script'], dir, {});
      assert.equal(r.code, 2);
      assert.match(r.stderr, /POSTROOM_APPS: missing/);
      assert.match(r.stderr, /POSTROOM_MAILBOXES: missing/);
      assert.equal(r.stdout, '');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('for the sample settings with the sandbox app: every mailbox where it belongs, real ids, no placeholders (PowerShell)', () => {
    const s = renderSetupScript(loadConfig(sampleWithSandbox()), { format: 'powershell' });
    const id = SANDBOX_APP.clientId;
    assert.ok(
      lines(s).includes(
        `if (-not (Test-Az ad app show --id '${id}')) { throw 'App registration ${id} not found in tenant ${SANDBOX_TENANT}: check clientId/tenantId in POSTROOM_APPS' }`,
      ),
    );
    assert.ok(
      lines(s).includes(
        `if ($granted -notcontains '5e5addcd-3e8d-4e90-baf5-964efab2b20a') { Invoke-Az ad app permission add --id '${id}' --api 00000002-0000-0ff1-ce00-000000000000 --api-permissions 5e5addcd-3e8d-4e90-baf5-964efab2b20a=Role | Out-Null }   # IMAP.AccessAsApp`,
      ),
    );
    assert.ok(
      lines(s).includes(
        `if ($granted -notcontains 'cb842b43-da6e-4506-86fe-bb12199c656d') { Invoke-Az ad app permission add --id '${id}' --api 00000002-0000-0ff1-ce00-000000000000 --api-permissions cb842b43-da6e-4506-86fe-bb12199c656d=Role | Out-Null }   # POP.AccessAsApp`,
      ),
    );
    assert.ok(
      lines(s).includes(
        `if ($granted -notcontains '7146a1f0-8703-45b3-9eae-527a64c00995') { Invoke-Az ad app permission add --id '${id}' --api 00000002-0000-0ff1-ce00-000000000000 --api-permissions 7146a1f0-8703-45b3-9eae-527a64c00995=Role | Out-Null }   # SMTP.SendAsApp`,
      ),
    );
    assert.ok(lines(s).includes(`Invoke-Az ad app permission admin-consent --id '${id}' | Out-Null`));
    assert.ok(lines(s).includes(`Connect-ExchangeOnline -Organization '${SANDBOX_TENANT}' -ExchangeEnvironmentName O365Default -ShowBanner:$false`));
    assert.ok(lines(s).includes(`if (-not $sp) { $sp = New-ServicePrincipal -AppId '${id}' -ObjectId $spObjectId -DisplayName 'Postroom (sandbox)' }`));
    for (const m of Object.values(SANDBOX_MAILBOXES)) {
      assert.equal(count(s, `Add-MailboxPermission -Identity '${m}' -User $spObjectId -AccessRights FullAccess`), 1, m);
    }
    assert.ok(
      lines(s).includes(
        `if (-not (Get-CASMailbox -Identity '${SANDBOX_MAILBOXES.shared}').ImapEnabled) { Set-CASMailbox -Identity '${SANDBOX_MAILBOXES.shared}' -ImapEnabled $true }`,
      ),
    );
    assert.ok(
      lines(s).includes(`if (-not (Get-CASMailbox -Identity '${SANDBOX_MAILBOXES.pop}').PopEnabled) { Set-CASMailbox -Identity '${SANDBOX_MAILBOXES.pop}' -PopEnabled $true }`),
    );
    assert.equal(count(s, '-ImapEnabled $true'), 2);
    assert.equal(count(s, '-PopEnabled $true'), 1);
    // The two mailboxes with notify send as themselves: SMTP AUTH on each, no SendAs grant.
    assert.equal(count(s, "Set-CASMailbox -Identity 'shared-inbox@contoso.test' -SmtpClientAuthenticationDisabled $false"), 1);
    assert.equal(count(s, "Set-CASMailbox -Identity 'invoices@contoso.test' -SmtpClientAuthenticationDisabled $false"), 1);
    assert.equal(count(s, `-SmtpClientAuthenticationDisabled $false }`), 2);
    assert.equal(count(s, 'Add-RecipientPermission'), 0);
    // A plain sandbox secret: the Key Vault step says so instead of inventing a vault.
    assert.equal(count(s, 'keyvault'), 0);
    assert.ok(s.includes('App "sandbox" uses a plain secret value (POSTROOM_SANDBOX, local only): no Key Vault step.'));
    assert.ok(!code(s).some((l) => /<(appId|mailbox|tenantId|SP id|Enterprise application object id)>/.test(l)), 'no placeholders in commands');
    assertGuarded(s);
  });

  it('production-like settings, bash: per-app Entra steps, Key Vault secret + role, Exchange part through pwsh, SendAs only where from differs', () => {
    const s = renderSetupScript(loadConfig(PRODUCTION), { format: 'bash', functionApp: 'postroom-func', resourceGroup: 'rg-postroom' });
    const l = lines(s);
    assert.equal(l[0], '#!/usr/bin/env bash');
    assert.ok(l.includes('set -euo pipefail'));
    assert.ok(l.includes('FUNCTION_APP="${FUNCTION_APP:-postroom-func}"'));
    assert.ok(
      l.includes(`[ "$(az account show --query tenantId -o tsv)" = '${TENANT}' ] || { echo 'az is signed in to another tenant: run az login --tenant ${TENANT}' >&2; exit 1; }`),
    );
    assert.ok(l.includes(`az ad sp show --id '${MAIN}' --query id -o tsv >/dev/null 2>&1 || az ad sp create --id '${MAIN}' --query id -o tsv >/dev/null`));
    // main reads IMAP + POP3 and sends: three roles; gov reads POP3 only: one role.
    assert.equal(count(s, `have_role '${MAIN}' `), 3);
    assert.equal(count(s, `have_role '${GOV}' `), 1);
    assert.ok(
      l.includes(
        `have_role '${GOV}' cb842b43-da6e-4506-86fe-bb12199c656d || az ad app permission add --id '${GOV}' --api 00000002-0000-0ff1-ce00-000000000000 --api-permissions cb842b43-da6e-4506-86fe-bb12199c656d=Role   # POP.AccessAsApp`,
      ),
    );
    assert.ok(l.includes('# usgov cloud: sign az in there first: az cloud set --name AzureUSGovernment'));
    assert.ok(l.includes(`echo "App main: Enterprise application object id $(az ad sp show --id '${MAIN}' --query id -o tsv)"`));
    assert.ok(s.includes("NOT the App registration's object id"));
    assert.ok(
      l.includes(
        `  || az keyvault secret set --vault-name 'contoso-postroom' --name 'postroom-client-secret' --value "$(az ad app credential reset --id '${MAIN}' --append --display-name postroom --years 1 --query password -o tsv)" --output none`,
      ),
    );
    assert.ok(l.includes(`az keyvault secret show --vault-name 'contoso-gov' --name 'gov-secret' --query id -o tsv >/dev/null 2>&1 \\`));
    assert.ok(l.includes('PRINCIPAL_ID=$(az functionapp identity assign -g "$RESOURCE_GROUP" -n "$FUNCTION_APP" --query principalId -o tsv)'));
    assert.equal(
      count(s, 'az role assignment create --assignee-object-id "$PRINCIPAL_ID" --assignee-principal-type ServicePrincipal --role 4633458b-17de-408a-b874-0445c86b69e6'),
      2,
      'one role assignment per vault',
    );
    // Exchange: one connection per tenant, with the cloud's environment; the PowerShell is quoted away from bash.
    assert.ok(l.includes(`Connect-ExchangeOnline -Organization '${TENANT}' -ExchangeEnvironmentName O365Default -ShowBanner:$false`));
    assert.ok(l.includes(`Connect-ExchangeOnline -Organization 'contoso.onmicrosoft.us' -ExchangeEnvironmentName O365USGovGCCHigh -ShowBanner:$false`));
    assert.ok(l.includes('cat >"$EXO_DIR/postroom-exchange.ps1" <<\'POSTROOM_EXO\''));
    assert.ok(l.includes('pwsh -NoLogo -NoProfile -File "$EXO_DIR/postroom-exchange.ps1"'));
    // The mailbox read from two folders gets one grant; the notify sender gets one too (Postroom signs in as it).
    for (const m of ['invoices@contoso.com', 'alerts@contoso.com', 'support@contoso.com', 'gov-box@contoso.us']) {
      assert.equal(count(s, `Add-MailboxPermission -Identity '${m}' `), 1, m);
    }
    assert.ok(s.includes('# invoices@contoso.com: read over IMAP (INBOX, Vendors).'));
    assert.equal(count(s, '-SmtpClientAuthenticationDisabled $false }'), 2);
    assert.equal(count(s, "Set-CASMailbox -Identity 'alerts@contoso.com' -SmtpClientAuthenticationDisabled $false"), 1);
    assert.equal(count(s, "Set-CASMailbox -Identity 'support@contoso.com' -SmtpClientAuthenticationDisabled $false"), 1);
    assert.equal(count(s, "Set-CASMailbox -Identity 'invoices@contoso.com' -SmtpClientAuthenticationDisabled"), 0);
    assert.ok(
      l.includes(
        "if (-not (Get-RecipientPermission -Identity 'alerts@contoso.com' -Trustee 'invoices@contoso.com' -ErrorAction SilentlyContinue | Where-Object { $_.AccessRights -contains 'SendAs' })) { Add-RecipientPermission -Identity 'alerts@contoso.com' -Trustee 'invoices@contoso.com' -AccessRights SendAs -Confirm:$false | Out-Null }",
      ),
    );
    assert.equal(count(s, 'Add-RecipientPermission'), 1);
    assert.equal(count(s, "Set-CASMailbox -Identity 'gov-box@contoso.us' -PopEnabled $true"), 1);
    assert.equal(count(s, "Set-CASMailbox -Identity 'gov-box@contoso.us' -ImapEnabled"), 0);
    assertGuarded(s);
  });

  it('the bash script parses (bash -n), and a missing Function App is asked for at run time, not invented', async () => {
    const s = renderSetupScript(loadConfig(PRODUCTION), { format: 'bash' });
    assert.ok(lines(s).includes('FUNCTION_APP="${FUNCTION_APP:-}"'));
    assert.match(s, /: "\$\{FUNCTION_APP:\?set the Function App/);
    const dir = await mkdtemp(join(tmpdir(), 'postroom-cli-'));
    try {
      await writeFile(join(dir, 'setup.sh'), s);
      const r = await new Promise<number | null>((res) => execFile('bash', ['-n', join(dir, 'setup.sh')], (e) => res(e ? ((e as { code?: number }).code ?? 1) : 0)));
      assert.equal(r, 0);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('PowerShell: the Function App as parameters, the secret never printed, Key Vault Secrets User only when missing', () => {
    const s = renderSetupScript(loadConfig(PRODUCTION), { format: 'powershell', functionApp: 'postroom-func', resourceGroup: 'rg-postroom' });
    const l = lines(s);
    assert.ok(l.includes("param([string]$FunctionApp = 'postroom-func', [string]$ResourceGroup = 'rg-postroom')"));
    assert.ok(l.includes(`  $secretValue = Invoke-Az ad app credential reset --id '${MAIN}' --append --display-name postroom --years 1 --query password -o tsv`));
    assert.ok(l.includes('  Remove-Variable secretValue'));
    assert.ok(!/Write-Host.*secretValue/.test(s));
    assert.ok(
      l.includes(
        "if (-not (Invoke-Az role assignment list --assignee $principalId --role 4633458b-17de-408a-b874-0445c86b69e6 --scope $vaultId --query '[].id' -o tsv)) { Invoke-Az role assignment create --assignee-object-id $principalId --assignee-principal-type ServicePrincipal --role 4633458b-17de-408a-b874-0445c86b69e6 --scope $vaultId --output none }",
      ),
    );
    assert.equal(count(s, 'POSTROOM_EXO'), 0, 'no here-doc in the PowerShell format');
    assertGuarded(s);
  });

  it('CLI: settings from the environment, --format bash on stdout, exit 0; a bad --format is exit 2', async () => {
    const ok = await cli(['setup-script', '--format', 'bash'], tmpdir(), PRODUCTION);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout, renderSetupScript(loadConfig(PRODUCTION), { format: 'bash' }));
    const bad = await cli(['setup-script', '--format', 'cmd'], tmpdir(), PRODUCTION);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--format must be powershell or bash/);
    const unknown = await cli(['setup-script', '--nope'], tmpdir(), PRODUCTION);
    assert.equal(unknown.code, 2);
    const help = await cli(['help', 'setup-script'], tmpdir(), {});
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^postroom setup-script \[--format powershell\|bash\]/);
    const doctor = await cli(['help', 'doctor'], tmpdir(), {});
    assert.equal(doctor.code, 0);
    assert.match(doctor.stdout, /^postroom doctor \[--mailbox <id or address>\]/);
  });
});

/** Runs bin/postroom.mjs as a child process with exactly these settings in its environment. */
export function cli(args: string[], cwd: string, settings: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((res) => {
    execFile(process.execPath, [join(root, 'bin', 'postroom.mjs'), ...args], { cwd, env: { PATH: process.env.PATH, ...settings }, timeout: 60_000 }, (e, stdout, stderr) => {
      res({ code: e ? ((e as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}
