/**
 * A benchmark child process (forked with IPC by bench/run.ts). Modes, from
 * the first IPC message:
 * - `poll`: one pollMailbox of one mailbox (CPU profile runs, memory runs
 *   which sample this process's RSS every 20 ms);
 * - `worker`: a Functions-instance stand-in (sandbox/host.ts) that drains
 *   the jobs queue when told to;
 * - `replay`: the raw storage replay of a run's writes (bench/replay.ts),
 *   warm-up then timed, its CPU time measured here as a poll's is.
 */
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { loadConfig } from '../shared/config/index.js';
import { createLogger, type Logger } from '../shared/logger.js';
import { createRuntime, type Runtime } from '../shared/runtime.js';
import { pollMailbox } from '../shared/poll/poll-mailbox.js';
import { startLocalHost } from '../sandbox/host.js';
import { replayWrites, type Writes } from './replay.js';

export type ChildRequest =
  | {
      mode: 'poll';
      env: Record<string, string>;
      mailboxIndex: number;
      warmMailboxIndex?: number;
      warmOutput?: string;
      resetKey: string;
      sampleMemory?: boolean;
      cpuProfilePath?: string;
    }
  | { mode: 'worker'; env: Record<string, string> }
  | { mode: 'replay'; conn: string; name: string; warmName: string; warm?: Writes; writes: Writes; concurrency: number };

/** What a `replay` child answers: the timed replay's seconds and this process's CPU during it. */
export interface ReplayReply {
  seconds: number;
  cpuMs: number;
  error?: string;
}

export interface PollReply {
  ok: boolean;
  delivered: number;
  durationMs: number;
  /** CPU time (user + system) of this process during the poll. */
  cpuMs: number;
  error?: string;
  warnings: string[];
  memory?: { idleRss: number; peakRss: number; hwmBefore: number; hwmAfter: number; samples: number; atPeak?: NodeJS.MemoryUsage; idle?: NodeJS.MemoryUsage };
}

function collectingLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  return Object.assign(
    createLogger((level, line) => lines.length < 50 && lines.push(`${level} ${line}`), { level: 'warn' }),
    { lines },
  );
}

function vmHwm(): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

async function startProfiler(): Promise<{ stop(): Promise<unknown> }> {
  const { Session } = await import('node:inspector/promises');
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.setSamplingInterval', { interval: 500 });
  await session.post('Profiler.start');
  return {
    async stop() {
      const { profile } = await session.post('Profiler.stop');
      session.disconnect();
      return profile;
    },
  };
}

function runtimeFrom(env: Record<string, string>, log: Logger): Runtime {
  return createRuntime({ config: loadConfig(env), logger: log });
}

/** Polls `mailbox` from its start (checkpoint reset); resolves to the messages delivered. */
async function warmUp(rt: Runtime, mailbox: Runtime['config']['mailboxes'][number], resetKey: string): Promise<number> {
  await rt.state.delete(mailbox.id, resetKey);
  const r = await pollMailbox(rt, mailbox);
  if (r.outcome !== 'ok') throw new Error(`warm-up poll of ${mailbox.address} failed: ${r.error?.message ?? r.outcome}`);
  return r.delivered.length;
}

/** CPU time (user + system) of this process since `since`, in ms. */
function cpuMsSince(since: NodeJS.CpuUsage): number {
  const cpu = process.cpuUsage(since);
  return (cpu.user + cpu.system) / 1000;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function poll(req: Extract<ChildRequest, { mode: 'poll' }>): Promise<PollReply> {
  const log = collectingLogger();
  const rt = runtimeFrom(req.env, log);
  const mailbox = rt.config.mailboxes[req.mailboxIndex];
  await rt.state.delete(mailbox.id, req.resetKey);
  if (req.warmMailboxIndex !== undefined) {
    // Loads every module and opens every client once, so that "idle" is a process ready to poll;
    // with `warmOutput`, into other outputs, so that the timed poll starts on empty ones.
    const warmRt = req.warmOutput ? runtimeFrom({ ...req.env, POSTROOM_OUTPUT_QUEUE: req.warmOutput, POSTROOM_BLOB_CONTAINER: req.warmOutput }, log) : rt;
    await warmUp(warmRt, warmRt.config.mailboxes[req.warmMailboxIndex], req.resetKey);
  }
  // Modules loaded, token cached, clients and containers ready: a warm Functions instance.
  await Promise.all([
    rt.tokens(mailbox.app).getToken({ renew: false }),
    rt.storage.container(rt.config.storage.blobContainer),
    rt.storage.queue(rt.config.storage.outputQueue),
    rt.storage.container(rt.config.storage.leaseContainer),
    rt.storage.table(rt.config.storage.stateTable),
    import('mailparser'),
    mailbox.protocol === 'imap' ? import('imapflow') : import('../shared/pop3/source.js'),
  ]);
  let memory: PollReply['memory'];
  let timer: NodeJS.Timeout | undefined;
  let peak = 0;
  let samples = 0;
  let atPeak: NodeJS.MemoryUsage | undefined;
  if (req.sampleMemory) {
    (globalThis as { gc?: () => void }).gc?.();
    await sleep(200);
    const idle: number[] = [];
    for (let i = 0; i < 10; i++) {
      idle.push(process.memoryUsage.rss());
      await sleep(20);
    }
    idle.sort((a, b) => a - b);
    memory = { idleRss: idle[5], peakRss: 0, hwmBefore: vmHwm(), hwmAfter: 0, samples: 0, idle: process.memoryUsage() };
    peak = memory.idleRss;
    timer = setInterval(() => {
      samples++;
      const r = process.memoryUsage.rss();
      if (r > peak) {
        peak = r;
        // What the peak is made of: V8 heap, or Buffers (external / arrayBuffers).
        atPeak = process.memoryUsage();
      }
    }, 20);
  }
  // The profile covers the timed poll only: start-up and the warm-up poll are not in it.
  const profiler = req.cpuProfilePath ? await startProfiler() : undefined;
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  const res = await pollMailbox(rt, mailbox);
  const durationMs = performance.now() - t0;
  const cpuMs = cpuMsSince(cpu0);
  if (profiler) await writeFile(req.cpuProfilePath!, JSON.stringify(await profiler.stop()));
  if (timer) clearInterval(timer);
  if (memory) {
    memory.peakRss = Math.max(peak, process.memoryUsage.rss());
    memory.hwmAfter = vmHwm();
    memory.samples = samples;
    memory.atPeak = atPeak;
  }
  return { ok: res.outcome === 'ok', delivered: res.delivered.length, durationMs, cpuMs, error: res.error?.message, warnings: log.lines, memory };
}

async function worker(req: Extract<ChildRequest, { mode: 'worker' }>): Promise<void> {
  const log = collectingLogger();
  const rt = runtimeFrom(req.env, log);
  let handled = 0;
  let failed = 0;
  const host = await startLocalHost({
    runtime: rt,
    logger: log,
    // The background loop would only add a pause between receives; drain() does the work.
    pollIntervalMs: 3_600_000,
    batchSize: 4,
    onHandled: (e) => {
      if (e.ok) handled++;
      else failed++;
    },
  });
  // Warm: token, storage clients and modules ready before the clock starts.
  await rt.tokens(rt.config.mailboxes[0].app).getToken({ renew: false });
  await Promise.all([
    rt.storage.container(rt.config.storage.blobContainer),
    rt.storage.queue(rt.config.storage.outputQueue),
    rt.storage.container(rt.config.storage.leaseContainer),
    rt.storage.table(rt.config.storage.stateTable),
  ]);
  process.send!({ ready: true });
  const onCommand = async (m: { cmd: string }) => {
    if (m.cmd === 'tick') {
      await host.tick();
      process.send!({ ticked: true });
    } else if (m.cmd === 'warm') {
      // A worker that has polled before (JIT warm), as a long-running Functions instance is.
      const w = m as unknown as { env: Record<string, string>; resetKey: string };
      const warmRt = runtimeFrom(w.env, log);
      try {
        process.send!({ warmed: true, delivered: await warmUp(warmRt, warmRt.config.mailboxes[0], w.resetKey) });
      } catch (e) {
        process.send!({ error: (e as Error).message });
      }
    } else if (m.cmd === 'drain') {
      const t0 = performance.now();
      const cpu0 = process.cpuUsage();
      await host.drain();
      process.send!({ drained: true, ms: performance.now() - t0, cpuMs: cpuMsSince(cpu0), handled, failed, warnings: log.lines });
    } else if (m.cmd === 'exit') {
      process.exit(0);
    }
  };
  // A failed command stays an unhandled rejection: it ends the worker, and the parent sees the exit.
  process.on('message', (m: { cmd: string }) => void onCommand(m));
}

async function replay(req: Extract<ChildRequest, { mode: 'replay' }>): Promise<ReplayReply> {
  if (req.warm) await replayWrites(req.conn, req.warmName, req.warm, req.concurrency);
  return replayWrites(req.conn, req.name, req.writes, req.concurrency);
}

process.once('message', (req: ChildRequest) => {
  if (req.mode === 'replay') {
    replay(req).then(
      (r) => process.send!(r, () => process.exit(0)),
      (e) => process.send!({ seconds: 0, cpuMs: 0, error: String((e as Error)?.stack ?? e) } satisfies ReplayReply, () => process.exit(1)),
    );
  } else if (req.mode === 'poll') {
    poll(req).then(
      (r) => process.send!(r, () => process.exit(0)),
      (e) => process.send!({ ok: false, delivered: 0, durationMs: 0, cpuMs: 0, error: String((e as Error)?.stack ?? e), warnings: [] }, () => process.exit(1)),
    );
  } else {
    worker(req).catch((e) => {
      process.send!({ error: String((e as Error)?.stack ?? e) }, () => process.exit(1));
    });
  }
});
