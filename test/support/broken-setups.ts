import type { SandboxApp } from '../../sandbox/token-endpoint.js';

/** The tenant the wrong-tenant app's tokens come from. */
export const OTHER_TENANT = '0b0b0b0b-0000-4000-8000-000000000bad';

/**
 * Sandbox app registrations for the broken set-ups the diagnosis must name:
 * a service principal not registered in Exchange (the caller unregisters it),
 * tokens of another tenant, Graph-audience tokens, and a login host whose
 * clock is 70 minutes behind (its tokens are expired on arrival). Client ids
 * end in `<idTag>0<n>`, so each suite's apps are its own.
 */
export function brokenSetupApps(idTag: string) {
  const app = (n: number, name: string, extra: Partial<SandboxApp> = {}): SandboxApp => ({
    name,
    clientId: `0a5bd0c5-0000-4000-8000-00000000${idTag}0${n}`,
    clientSecret: `${name}-secret`,
    roles: ['IMAP.AccessAsApp', 'POP.AccessAsApp', 'SMTP.SendAsApp'],
    ...extra,
  });
  return {
    unregistered: app(1, 'unregistered'),
    wrongTenant: app(2, 'wrong-tenant', { tokenClaims: { tid: OTHER_TENANT } }),
    graph: app(3, 'graph-audience', { tokenClaims: { aud: 'https://graph.microsoft.com', roles: ['Mail.Read'] } }),
    expired: app(4, 'expired', { tokenClaims: (c) => ({ iat: Number(c.iat) - 4200, nbf: Number(c.nbf) - 4200, exp: Number(c.exp) - 4200 }) }),
  };
}
