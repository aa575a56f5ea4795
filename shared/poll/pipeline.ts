import type { MailSession, SourceMessage } from '../source.js';

/** Batches read ahead of the oldest unacknowledged one: the next FETCH overlaps the current writes. */
export const READ_AHEAD = 2;

/**
 * Delivers every batch with at most `limit` messages in flight across
 * batches (so the pool never drains at a batch's tail), reads up to
 * READ_AHEAD batches ahead, and acknowledges strictly in order, each batch
 * only after all of its messages are durable. On the first failure nothing
 * more starts, the in-flight deliveries settle, and nothing after the last
 * fully delivered batch is acknowledged.
 */
export async function pipelineBatches<R>(
  session: MailSession,
  limit: number,
  signal: AbortSignal,
  deliver: (m: SourceMessage) => Promise<R>,
  acknowledge: (batch: SourceMessage[], done: R[]) => Promise<void>,
): Promise<void> {
  let active = 0;
  let failed = false;
  const waiters: Array<() => void> = [];
  const stop = () => {
    failed = true;
    for (const w of waiters.splice(0)) w();
  };
  const run = async (m: SourceMessage): Promise<R> => {
    while (active >= limit && !failed) await new Promise<void>((r) => waiters.push(r));
    if (failed) throw new PipelineStopped();
    active++;
    try {
      return await deliver(m);
    } catch (e) {
      stop();
      throw e;
    } finally {
      active--;
      waiters.shift()?.();
    }
  };
  const pending: Array<{ batch: SourceMessage[]; done: Promise<PromiseSettledResult<R>[]> }> = [];
  const ackOldest = async () => {
    const { batch, done } = pending.shift()!;
    const results = await done;
    const rejected = results.find((r): r is PromiseRejectedResult => r.status === 'rejected' && !(r.reason instanceof PipelineStopped));
    if (rejected) throw rejected.reason;
    if (results.some((r) => r.status === 'rejected')) throw new PipelineStopped();
    await acknowledge(batch, results.map((r) => (r as PromiseFulfilledResult<R>).value));
  };
  try {
    for await (const batch of session.batches({ signal })) {
      pending.push({ batch, done: Promise.allSettled(batch.map(run)) });
      while (pending.length > READ_AHEAD) await ackOldest();
    }
    while (pending.length) await ackOldest();
  } catch (e) {
    stop();
    // No delivery may outlive the session: the caller aborts the connection next.
    const later = await Promise.all(pending.map((p) => p.done));
    if (e instanceof PipelineStopped) {
      const first = later.flat().find((r): r is PromiseRejectedResult => r.status === 'rejected' && !(r.reason instanceof PipelineStopped));
      throw first?.reason ?? e;
    }
    throw e;
  }
}

/** A delivery not started because an earlier one failed. */
class PipelineStopped extends Error {}
