import type { Runtime } from '../runtime.js';
import { readStatus, type MailboxStatus } from '../status/index.js';

export interface StatusReport {
  generatedAt: string;
  mailboxes: Array<{ id: string; address: string; protocol: string; folder: string; status: MailboxStatus | null }>;
}

/** The status function's body: one entry per configured mailbox. */
export async function mailboxStatusReport(runtime: Runtime): Promise<StatusReport> {
  const mailboxes = await Promise.all(
    runtime.config.mailboxes.map(async (m) => ({
      id: m.id,
      address: m.address,
      protocol: m.protocol,
      folder: m.folder,
      status: (await readStatus(runtime.state, m)) ?? null,
    })),
  );
  return { generatedAt: runtime.now().toISOString(), mailboxes };
}
