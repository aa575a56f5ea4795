import { request as httpsRequest } from 'node:https';
import { ClientAuthError, ClientAuthErrorCodes, type INetworkModule, type NetworkRequestOptions, type NetworkResponse } from '@azure/msal-node';
import { trustedCas } from '../tls.js';

/** Options of `createNetworkClient`. */
export interface NetworkClientOptions {
  /**
   * Extra CA certificate(s) (PEM) to trust besides Node's default trust, e.g.
   * a private CA in front of the login host or a local sandbox CA.
   */
  ca?: string | Buffer;
  /** Per-request timeout when msal gives none (it gives none for POST). Default 15 s. */
  timeoutMs?: number;
}

/**
 * An msal-node network module over `node:https` that can trust an explicit CA.
 * msal-node's own client uses `fetch`, which takes no CA option and only sees
 * `NODE_EXTRA_CA_CERTS` read once at process start; this one makes the CA a
 * setting. Pass it as `system.networkClient`.
 */
export function createNetworkClient(options: NetworkClientOptions = {}): INetworkModule {
  const ca = trustedCas(options.ca);
  const defaultTimeout = options.timeoutMs ?? 15_000;

  const send = <T>(method: 'GET' | 'POST', url: string, req: NetworkRequestOptions | undefined, timeout?: number) =>
    new Promise<NetworkResponse<T>>((resolve, reject) => {
      const body = method === 'POST' ? Buffer.from(req?.body ?? '', 'utf8') : undefined;
      const headers: Record<string, string | number> = { ...(req?.headers ?? {}) };
      if (body) headers['content-length'] = body.length;
      const limit = timeout ?? defaultTimeout;
      const r = httpsRequest(url, { method, headers, ...(ca ? { ca } : {}), timeout: limit }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (e) => reject(networkError(`response failed: ${e.message}`, e)));
        res.on('end', () => {
          const out: Record<string, string> = {};
          for (const [k, v] of Object.entries(res.headers)) {
            if (v !== undefined) out[k.toLowerCase()] = Array.isArray(v) ? v.join(', ') : v;
          }
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: T;
          try {
            parsed = JSON.parse(text) as T;
          } catch {
            // msal's fetch client fails the same way on a non-JSON body (e.g. an HTML proxy page).
            reject(new ClientAuthError(ClientAuthErrorCodes.tokenParsingError, '', `Failed to parse response (HTTP ${res.statusCode})`));
            return;
          }
          resolve({ headers: out, body: parsed, status: res.statusCode ?? 0 });
        });
      });
      r.on('timeout', () => r.destroy(new Error('Request timeout')));
      r.on('error', (e) => reject(networkError(`Network request failed: ${e.message}`, e)));
      r.end(body);
    });

  return {
    sendGetRequestAsync: <T>(url: string, req?: NetworkRequestOptions, timeout?: number) => send<T>('GET', url, req, timeout),
    sendPostRequestAsync: <T>(url: string, req?: NetworkRequestOptions) => send<T>('POST', url, req),
  };
}

function networkError(message: string, cause: Error): ClientAuthError {
  const err = new ClientAuthError(ClientAuthErrorCodes.networkError, '', message);
  Object.defineProperty(err, 'cause', { value: cause, enumerable: false });
  return err;
}
