import type { ContainerClient } from '@azure/storage-blob';
import { PostroomError } from '../errors.js';
import type { Logger } from '../logger.js';

/** A held mailbox lease. */
export interface MailboxLease {
  /** Aborted when the lease could not be renewed: stop work, acknowledge nothing more. */
  readonly signal: AbortSignal;
  /** Stops renewing and releases the lease so that the next poll need not wait for it to expire; never throws (a failed release is logged). */
  release(): Promise<void>;
}

/** Options of {@link acquireMailboxLease}. */
export interface AcquireLeaseOptions {
  /** Lease duration; Azure allows 15-60 s (or infinite, which a crash would leave held). */
  seconds: number;
  /** Gets the lease's warnings: renewal stopped for lack of progress, lease lost, release failed. */
  logger: Logger;
  /**
   * Asked before each renewal: a poll that no longer moves (or is past its
   * deadline) lets the lease expire instead of holding the mailbox forever.
   */
  shouldRenew?: () => boolean;
  /** Abandons the acquisition (storage not answering). */
  signal?: AbortSignal;
}

/**
 * Takes the per-mailbox blob lease so that two Functions instances never
 * poll one mailbox at once. Returns undefined when another holder has it.
 * The lease is renewed in the background at a third of its duration.
 *
 * @example
 * ```ts
 * const lease = await acquireMailboxLease(container, mailbox.key, { seconds: 60, logger });
 * if (!lease) return; // someone else is polling it
 * try { await poll(lease.signal); } finally { await lease.release(); }
 * ```
 */
export async function acquireMailboxLease(container: ContainerClient, key: string, options: AcquireLeaseOptions): Promise<MailboxLease | undefined> {
  if (!(options.seconds >= 15 && options.seconds <= 60)) throw new TypeError('lease seconds must be 15..60');
  const blob = container.getBlockBlobClient(`leases/${key}`);
  try {
    await blob.upload('', 0, { conditions: { ifNoneMatch: '*' }, abortSignal: options.signal });
  } catch (e) {
    const s = (e as { statusCode?: number }).statusCode;
    if (s !== 409 && s !== 412) throw new PostroomError('SinkFailed', `lease blob for ${key} could not be created`, { cause: e });
  }
  const leaseClient = blob.getBlobLeaseClient();
  try {
    await leaseClient.acquireLease(options.seconds, { abortSignal: options.signal });
  } catch (e) {
    if ((e as { statusCode?: number }).statusCode === 409) return undefined;
    throw new PostroomError('StorageUnavailable', `the lease for ${key} could not be taken (${describe(e)})`, { cause: e });
  }
  const controller = new AbortController();
  const timer = setInterval(
    () => {
      if (options.shouldRenew && !options.shouldRenew()) {
        options.logger.warn('the poll has made no progress: no longer renewing the mailbox lease (it expires)', { key });
        clearInterval(timer);
        controller.abort(new PostroomError('LeaseHeld', `the lease for ${key} was given up: the poll made no progress`));
        return;
      }
      leaseClient.renewLease().catch((e) => {
        options.logger.error('mailbox lease lost; stopping this poll', { key, error: e as Error });
        clearInterval(timer);
        controller.abort(new PostroomError('LeaseHeld', `lease for ${key} was lost`, { cause: e }));
      });
    },
    (options.seconds * 1000) / 3,
  );
  timer.unref();
  return {
    signal: controller.signal,
    async release() {
      clearInterval(timer);
      await leaseClient.releaseLease().catch((e) => options.logger.warn('lease release failed (it will expire)', { key, error: e as Error }));
    },
  };
}

function describe(e: unknown): string {
  const err = e as { statusCode?: number; code?: string; message?: string };
  return [err.statusCode, err.code, err.message?.split('\n')[0]?.slice(0, 160)].filter(Boolean).join(' ');
}
