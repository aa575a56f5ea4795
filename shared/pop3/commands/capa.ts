import type { Pop3CommandOptions, Pop3Connection } from '../connection.js';
import { expectOk } from './common.js';

/**
 * The server's capabilities (RFC 2449 CAPA): names upper-cased, each with its
 * arguments, e.g. `SASL` -> `['PLAIN', 'XOAUTH2']`, `TOP` -> `[]`.
 */
export class Pop3Capabilities {
  readonly map: ReadonlyMap<string, readonly string[]>;

  constructor(map: ReadonlyMap<string, readonly string[]>) {
    this.map = map;
  }

  has(name: string): boolean {
    return this.map.has(name.toUpperCase());
  }

  args(name: string): readonly string[] | undefined {
    return this.map.get(name.toUpperCase());
  }

  /** SASL mechanisms, upper-cased. */
  get saslMechanisms(): readonly string[] {
    return (this.map.get('SASL') ?? []).map((m) => m.toUpperCase());
  }
}

/** Parses CAPA's body lines. */
export function parseCapa(lines: readonly (Buffer | string)[]): Pop3Capabilities {
  const map = new Map<string, string[]>();
  for (const raw of lines) {
    const line = (typeof raw === 'string' ? raw : raw.toString('latin1')).trim();
    if (line === '') continue;
    const [name, ...args] = line.split(/ +/);
    map.set(name.toUpperCase(), args);
  }
  return new Pop3Capabilities(map);
}

export async function capa(conn: Pop3Connection, opts: Pop3CommandOptions = {}): Promise<Pop3Capabilities> {
  const reply = await conn.exchange('CAPA', opts, (io) => io.send('CAPA', 'multi'));
  return parseCapa(expectOk(reply, 'CAPA', conn.subject).lines ?? []);
}
