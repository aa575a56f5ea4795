import type { AppConfig, CloudName, PostroomConfig } from '../config/index.js';

/** Office 365 Exchange Online, the resource whose app roles IMAP/POP/SMTP need. */
export const EXCHANGE_RESOURCE_APP_ID = '00000002-0000-0ff1-ce00-000000000000';

/** Exchange Online application permissions (app role ids) per protocol. */
export const EXCHANGE_APP_ROLES = Object.freeze({
  imap: { name: 'IMAP.AccessAsApp', id: '5e5addcd-3e8d-4e90-baf5-964efab2b20a' },
  pop3: { name: 'POP.AccessAsApp', id: 'cb842b43-da6e-4506-86fe-bb12199c656d' },
  smtp: { name: 'SMTP.SendAsApp', id: '7146a1f0-8703-45b3-9eae-527a64c00995' },
} as const);

/** Built-in Azure role "Key Vault Secrets User". */
export const KEY_VAULT_SECRETS_USER_ROLE_ID = '4633458b-17de-408a-b874-0445c86b69e6';

/** A protocol whose Exchange Online app role an app needs: `imap`, `pop3` or `smtp`. */
export type SetupProtocol = keyof typeof EXCHANGE_APP_ROLES;

/** One mailbox the service principal must be able to open, and how. */
export interface SetupMailbox {
  /** The address (as configured). */
  readonly address: string;
  /** Protocols Postroom reads it with (IMAP and/or POP3). */
  readonly read: readonly ('imap' | 'pop3')[];
  /** Folders read over IMAP (for the comment). */
  readonly folders: readonly string[];
  /** True when Postroom signs in to SMTP as this mailbox (it is a notify sender). */
  readonly sends: boolean;
  /** Polled mailboxes whose notifications are sent from this address although it is not them. */
  readonly sendAsFor: readonly string[];
}

/** What the admin must set up for one app registration. */
export interface SetupApp {
  /** The app registration as configured (ids, cloud, credential). */
  readonly app: AppConfig;
  /** Protocols in use, in a fixed order (imap, pop3, smtp). */
  readonly protocols: readonly SetupProtocol[];
  /** Every mailbox the app reads or sends as, once each (addresses compared case-insensitively). */
  readonly mailboxes: readonly SetupMailbox[];
}

/** The setup derived from the settings: apps with their mailboxes, in settings order. */
export interface SetupPlan {
  /** One entry per configured app registration, in settings order. */
  readonly apps: readonly SetupApp[];
}

/** Derives what each app registration needs from the configured mailboxes. */
export function setupPlan(config: PostroomConfig): SetupPlan {
  return { apps: config.apps.map((app) => setupApp(config, app)) };
}

function setupApp(config: PostroomConfig, app: AppConfig): SetupApp {
  const boxes = new Map<string, { address: string; read: Set<'imap' | 'pop3'>; folders: Set<string>; sends: boolean; sendAsFor: Set<string> }>();
  const box = (address: string) => {
    const k = address.toLowerCase();
    let b = boxes.get(k);
    if (!b) boxes.set(k, (b = { address, read: new Set(), folders: new Set(), sends: false, sendAsFor: new Set() }));
    return b;
  };
  const used = new Set<SetupProtocol>();
  for (const m of config.mailboxes.filter((x) => x.app.name === app.name)) {
    const b = box(m.address);
    b.read.add(m.protocol);
    if (m.protocol === 'imap') b.folders.add(m.folder);
    used.add(m.protocol);
    if (!m.notify) continue;
    used.add('smtp');
    const sender = box(m.notify.from);
    sender.sends = true;
    if (m.notify.from.toLowerCase() !== m.address.toLowerCase()) sender.sendAsFor.add(m.address);
  }
  const order: SetupProtocol[] = ['imap', 'pop3', 'smtp'];
  return {
    app,
    protocols: order.filter((p) => used.has(p)),
    mailboxes: [...boxes.values()].map((b) => ({
      address: b.address,
      read: (['imap', 'pop3'] as const).filter((p) => b.read.has(p)),
      folders: [...b.folders],
      sends: b.sends,
      sendAsFor: [...b.sendAsFor],
    })),
  };
}

/** `az cloud set --name` per Postroom cloud. */
export const AZ_CLOUD: Readonly<Record<CloudName, string>> = Object.freeze({
  public: 'AzureCloud',
  usgov: 'AzureUSGovernment',
  usgovdod: 'AzureUSGovernment',
  china: 'AzureChinaCloud',
});

/** `Connect-ExchangeOnline -ExchangeEnvironmentName` per Postroom cloud. */
export const EXO_ENVIRONMENT: Readonly<Record<CloudName, string>> = Object.freeze({
  public: 'O365Default',
  usgov: 'O365USGovGCCHigh',
  usgovdod: 'O365USGovDoD',
  china: 'O365China',
});

/** The vault name from a Key Vault URL (https://<name>.vault.azure.net). */
export function vaultName(vaultUrl: string): string {
  return new URL(vaultUrl).hostname.split('.')[0];
}
