import type { MailSession, SourceMessage } from '../source.js';

/** Batches read ahead of the oldest unacknowledged one: the next FETCH overlaps the current writes. */
export const READ_AHEAD = 2;

/** Options of {@link pipelineBatches}. */
export interface PipelineOptions<R> {
  /** Messages in flight (parse + write) at once, across batches. */
  readonly limit: number;
  /** Hard stop: aborts reads and deliveries in flight. */
  readonly signal: AbortSignal;
  /** Soft stop (the poll's deadline): no new batch is read; what is in flight is finished and acknowledged. */
  readonly stop?: AbortSignal;
  /** Writes one message durably. */
  deliver(m: SourceMessage): Promise<R>;
  /** Acknowledges a batch whose every message is durable. */
  acknowledge(batch: SourceMessage[], done: R[]): Promise<void>;
  /**
   * After a failure: records the durable messages that were not acknowledged
   * (the oldest first, up to the first one not durable), so that a dropped
   * session does not make them be written again. Must not need the session.
   */
  salvage?(messages: SourceMessage[], done: R[]): Promise<void>;
}

/** One batch in the pipeline and its deliveries. */
interface Pending<R> {
  batch: SourceMessage[];
  results: Promise<PromiseSettledResult<R>[]>;
}

/**
 * Delivers every batch with at most `limit` messages in flight across
 * batches (so the pool never drains at a batch's tail), reads up to
 * READ_AHEAD batches ahead, and acknowledges strictly in order, each batch
 * only after all of its messages are durable. On the first failure nothing
 * more starts, the in-flight deliveries settle, the durable prefix is
 * salvaged, and the first real failure is thrown.
 */
export async function pipelineBatches<R>(session: MailSession, o: PipelineOptions<R>): Promise<void> {
  const pool = new DeliveryPool(o.limit, o.deliver);
  const pending: Pending<R>[] = [];
  const ackOldest = async () => {
    const { batch, results } = pending[0];
    const done = successes(await results);
    if (done.length < batch.length) throw pool.firstFailure(await results);
    // A batch whose acknowledgement fails stays pending: it is durable, so it is salvaged with the rest.
    await o.acknowledge(batch, done);
    pending.shift();
  };
  try {
    for await (const batch of session.batches({ signal: o.signal })) {
      pending.push({ batch, results: Promise.allSettled(batch.map((m) => pool.run(m))) });
      while (pending.length > READ_AHEAD) await ackOldest();
      if (o.stop?.aborted) break;
    }
    while (pending.length) await ackOldest();
  } catch (e) {
    pool.stop();
    // No delivery may outlive the session: the caller aborts the connection next.
    const settled = await Promise.all(pending.map((p) => p.results));
    // Also after a failed acknowledgement: a post-action on a dropped connection must not make later batches be written again.
    await salvage(pending, settled, o).catch(() => undefined);
    throw e instanceof PipelineStopped ? pool.firstFailure(settled.flat()) : e;
  }
}

/** The durable prefix of the unacknowledged batches, handed to `salvage`. */
async function salvage<R>(pending: Pending<R>[], settled: PromiseSettledResult<R>[][], o: PipelineOptions<R>): Promise<void> {
  if (!o.salvage) return;
  const messages: SourceMessage[] = [];
  const done: R[] = [];
  outer: for (let b = 0; b < pending.length; b++) {
    for (let i = 0; i < pending[b].batch.length; i++) {
      const r = settled[b][i];
      if (r.status !== 'fulfilled') break outer;
      messages.push(pending[b].batch[i]);
      done.push(r.value);
    }
  }
  if (messages.length) await o.salvage(messages, done);
}

function successes<R>(results: PromiseSettledResult<R>[]): R[] {
  return results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
}

/** At most `limit` deliveries at once; after the first failure nothing more starts. */
class DeliveryPool<R> {
  #active = 0;
  #stopped = false;
  readonly #waiters: Array<() => void> = [];

  constructor(
    private readonly limit: number,
    private readonly deliver: (m: SourceMessage) => Promise<R>,
  ) {}

  async run(m: SourceMessage): Promise<R> {
    while (this.#active >= this.limit && !this.#stopped) await new Promise<void>((r) => this.#waiters.push(r));
    if (this.#stopped) throw new PipelineStopped();
    this.#active++;
    try {
      return await this.deliver(m);
    } catch (e) {
      this.stop();
      throw e;
    } finally {
      this.#active--;
      this.#waiters.shift()?.();
    }
  }

  stop(): void {
    this.#stopped = true;
    for (const w of this.#waiters.splice(0)) w();
  }

  /** The first real failure among `results` (not a delivery skipped because of it). */
  firstFailure(results: PromiseSettledResult<R>[]): unknown {
    const first = results.find((r): r is PromiseRejectedResult => r.status === 'rejected' && !(r.reason instanceof PipelineStopped));
    return first?.reason ?? new PipelineStopped();
  }
}

/** A delivery not started because an earlier one failed. */
class PipelineStopped extends Error {
  override readonly name = 'PipelineStopped';
}
