import { z } from 'zod';

/** Where an app registration's client secret comes from. */
export const SecretSourceSchema = z.union([
  z
    .object({
      vaultUrl: z.url({ protocol: /^https$/ }).describe('Key Vault URL, e.g. https://my-vault.vault.azure.net'),
      name: z.string().regex(/^[0-9a-zA-Z-]{1,127}$/, 'a Key Vault secret name (letters, digits, hyphens)'),
      version: z
        .string()
        .regex(/^[0-9a-f]{32}$/i)
        .optional(),
    })
    .strict()
    .describe('A Key Vault reference (production).'),
  z
    .object({ value: z.string().min(1) })
    .strict()
    .describe('A plain secret value: accepted only when POSTROOM_SANDBOX=true (local sandbox).'),
]);

const vaultUrl = z.url({ protocol: /^https$/ }).describe('Key Vault URL, e.g. https://my-vault.vault.azure.net');
const vaultVersion = z
  .string()
  .regex(/^[0-9a-f]{32}$/i)
  .optional()
  .describe('A fixed version; default: the current one.');

/** A certificate (with its private key) of an app registration, kept in Key Vault. */
export const CertificateSourceSchema = z
  .object({
    vaultUrl,
    name: z.string().regex(/^[0-9a-zA-Z-]{1,127}$/, 'a Key Vault certificate name (letters, digits, hyphens)'),
    version: vaultVersion,
  })
  .strict()
  .describe('A Key Vault certificate (content type PEM); its private key is read through the secret of the same name. Upload its public part to the app registration.');

/** A secretless credential: the Function App's managed identity, trusted by the app registration. */
export const FederatedSourceSchema = z
  .object({
    clientId: z
      .uuid({ version: undefined })
      .optional()
      .describe("Client id of the user-assigned managed identity; omitted: the system-assigned one (Entra's federated credentials accept user-assigned identities only)."),
  })
  .strict()
  .describe('A federated identity credential: the managed identity token for api://AzureADTokenExchange is the client assertion (nothing to store, nothing expires).');

const CREDENTIAL_KINDS = ['secret', 'certificate', 'federated'] as const;

const hostPort = z
  .string()
  .regex(/^[A-Za-z0-9.-]+(:\d{1,5})?$/, 'host or host:port')
  .describe('host or host:port');

export const AppSchema = z
  .object({
    name: z
      .string()
      .regex(/^[A-Za-z0-9_-]{1,40}$/)
      .default('default')
      .describe('How mailboxes refer to this app.'),
    cloud: z.enum(['public', 'usgov', 'usgovdod', 'china']).default('public'),
    tenantId: z.string().min(3).describe('Directory (tenant) id or verified domain.'),
    clientId: z
      .uuid({ version: undefined })
      .or(z.string().regex(/^[A-Za-z0-9-]{3,64}$/))
      .describe('Application (client) id.'),
    secret: SecretSourceSchema.optional().describe('Client secret. Exactly one of secret, certificate, federated.'),
    certificate: CertificateSourceSchema.optional().describe('Client certificate. Exactly one of secret, certificate, federated.'),
    federated: FederatedSourceSchema.optional().describe('Federated credential (managed identity). Exactly one of secret, certificate, federated.'),
    authorityHost: z
      .url({ protocol: /^https$/ })
      .optional()
      .describe('Overrides the cloud login host (private or test stacks).'),
    resource: z.url().optional().describe('Overrides the Exchange resource of the cloud; the scope is <resource>/.default.'),
    imapHost: hostPort.optional(),
    pop3Host: hostPort.optional(),
    smtpHost: hostPort.optional(),
    servicePrincipalObjectId: z
      .uuid({ version: undefined })
      .optional()
      .describe("The Enterprise application's (service principal's) object id: filled into the admin fixes (New-ServicePrincipal -ObjectId, Add-MailboxPermission -User)."),
  })
  .strict()
  .superRefine((a, ctx) => {
    const given = CREDENTIAL_KINDS.filter((k) => a[k] !== undefined);
    if (given.length !== 1) {
      ctx.addIssue({
        code: 'custom',
        path: given.length ? [given[1]] : [],
        message: given.length
          ? `only one credential per app: have ${given.join(' and ')}; keep one of secret, certificate, federated`
          : 'a credential is required: one of "secret" { vaultUrl, name }, "certificate" { vaultUrl, name } or "federated" { clientId }',
      });
    }
  })
  // The published JSON Schema says "exactly one" too (zod's refinements do not reach it).
  .meta({ oneOf: CREDENTIAL_KINDS.map((k) => ({ required: [k] })) });

export const PostActionSchema = z
  .string()
  .regex(/^(none|seen|delete|move:.+)$/, "one of 'none', 'seen', 'delete', 'move:<folder>'")
  .describe("After durable enqueue: 'none' (default; a shared mailbox is also read by people), 'seen', 'move:<folder>' or 'delete'.");

export const NotifySchema = z
  .object({
    to: z.array(z.email()).min(1),
    from: z.email().optional().describe('Sender mailbox; the app must be allowed to send as it. Default: the mailbox itself.'),
    digest: z.boolean().default(true),
    perMessage: z.boolean().default(false),
    failureThreshold: z.number().int().min(1).max(1000).default(3),
    subjectPrefix: z
      .string()
      .max(60)
      .regex(/^[^\r\n\x00-\x1f\x7f]*$/, 'no control characters (it goes into a mail header)')
      .default('[Postroom]')
      .describe('Put before the subject of every notification.'),
  })
  .strict();

export const MailboxSchema = z
  .object({
    address: z.email().describe('The mailbox address (shared mailboxes included); goes in the XOAUTH2 user=.'),
    app: z.string().optional().describe('Name of the app registration; default: the only one.'),
    protocol: z.enum(['imap', 'pop3']).default('imap'),
    host: z
      .string()
      .regex(/^[A-Za-z0-9.-]+$/)
      .optional(),
    port: z.number().int().min(1).max(65535).optional(),
    tls: z.enum(['implicit', 'starttls']).default('implicit'),
    folder: z.string().min(1).max(512).default('INBOX'),
    postAction: PostActionSchema.default('none'),
    since: z.iso.date().or(z.iso.datetime()).optional().describe('Ignore messages received before this date.'),
    maxMessageBytes: z.number().int().min(1024).optional().describe('Messages larger than this are not fetched; they are reported as skipped.'),
    notify: NotifySchema.optional(),
  })
  .strict();

export const AppsSchema = z.array(AppSchema).min(1);
export const MailboxesSchema = z.array(MailboxSchema);

/** One `POSTROOM_APPS` entry as validated, before cloud defaults are resolved (see `AppConfig`). */
export type AppSettings = z.infer<typeof AppSchema>;
/** One `POSTROOM_MAILBOXES` entry as validated, with its defaults applied (see `MailboxConfig`). */
export type MailboxSettings = z.infer<typeof MailboxSchema>;

/** JSON Schemas published in docs/ for the two JSON-valued settings. */
export function settingsJsonSchemas(): { apps: unknown; mailboxes: unknown } {
  return {
    apps: z.toJSONSchema(AppsSchema, { io: 'input' }),
    mailboxes: z.toJSONSchema(MailboxesSchema, { io: 'input' }),
  };
}

/** A zod issue path as settings problems name it: `.field[2].sub`. */
export function issuePath(path: readonly PropertyKey[]): string {
  return path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`)).join('');
}
