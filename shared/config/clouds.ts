/**
 * Endpoints per national cloud. Hosts other than the public cloud's come
 * from third-party reports (see docs/exchange-setup.md); every one of them
 * can be overridden per app registration for private or test stacks.
 */
/** Exchange Online's clouds: `public`, `usgov` (GCC High), `usgovdod` (DoD), `china` (21Vianet). */
export type CloudName = 'public' | 'usgov' | 'usgovdod' | 'china';

/** The endpoints of one cloud, used unless an app overrides them. */
export interface CloudPreset {
  /** Entra login host as an https URL (the authority is `<loginHost>/<tenantId>`). */
  readonly loginHost: string;
  /** Exchange Online resource; the token scope is `${resource}/.default` (never a Graph scope). */
  readonly resource: string;
  /** IMAP host (port 993, implicit TLS). */
  readonly imapHost: string;
  /** POP3 host (port 995, implicit TLS). */
  readonly pop3Host: string;
  /** SMTP submission host (port 587, STARTTLS). */
  readonly smtpHost: string;
}

export const CLOUDS: Readonly<Record<CloudName, CloudPreset>> = Object.freeze({
  public: {
    loginHost: 'https://login.microsoftonline.com',
    resource: 'https://outlook.office365.com',
    imapHost: 'outlook.office365.com',
    pop3Host: 'outlook.office365.com',
    smtpHost: 'smtp.office365.com',
  },
  usgov: {
    loginHost: 'https://login.microsoftonline.us',
    resource: 'https://outlook.office365.us',
    imapHost: 'outlook.office365.us',
    pop3Host: 'outlook.office365.us',
    smtpHost: 'smtp.office365.us',
  },
  usgovdod: {
    loginHost: 'https://login.microsoftonline.us',
    resource: 'https://outlook-dod.office365.us',
    imapHost: 'outlook-dod.office365.us',
    pop3Host: 'outlook-dod.office365.us',
    smtpHost: 'outlook-dod.office365.us',
  },
  china: {
    loginHost: 'https://login.partner.microsoftonline.cn',
    resource: 'https://partner.outlook.cn',
    imapHost: 'partner.outlook.cn',
    pop3Host: 'partner.outlook.cn',
    smtpHost: 'smtp.partner.outlook.cn',
  },
});

export const DEFAULT_PORTS = Object.freeze({ imap: 993, pop3: 995, smtp: 587 });

/** The role an app token must carry for each protocol. */
export const PROTOCOL_ROLES = Object.freeze({
  imap: 'IMAP.AccessAsApp',
  pop3: 'POP.AccessAsApp',
  smtp: 'SMTP.SendAsApp',
} as const);
