// oidc-provider ships no type declarations; this covers only what the sandbox uses.
declare module 'oidc-provider' {
  import type { IncomingMessage, ServerResponse } from 'node:http';

  export interface KoaContext {
    path: string;
    method: string;
    status: number;
    body: unknown;
    state: Record<string, unknown>;
    headers: Record<string, string | string[] | undefined>;
    set(name: string, value: string): void;
    oidc: any;
  }
  export type Middleware = (ctx: KoaContext, next: () => Promise<void>) => Promise<void>;

  export class Provider {
    constructor(issuer: string, configuration?: Record<string, unknown>);
    readonly issuer: string;
    proxy: boolean;
    callback(): (req: IncomingMessage, res: ServerResponse) => void;
    use(middleware: Middleware): void;
    on(event: string, listener: (...args: any[]) => void): this;
  }

  export namespace errors {
    class OIDCProviderError extends Error {
      constructor(status: number, message: string, options?: unknown);
      status: number;
      statusCode: number;
      error: string;
      error_description?: string;
      error_detail?: string;
      expose: boolean;
    }
    class InvalidClientAuth extends OIDCProviderError {}
    class InvalidScope extends OIDCProviderError {}
    class InvalidRequest extends OIDCProviderError {
      constructor(description?: string, code?: number, options?: unknown);
    }
  }

  export default Provider;
}
