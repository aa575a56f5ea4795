/**
 * The raw storage replay: the blob and queue writes a Postroom run made, issued again with the
 * SDKs and nothing else (one Put Blob each, one Put Message each). It runs in a bench child
 * (bench/child.ts, mode `replay`), as Postroom's polls do, so that its CPU time is its own: in
 * the bench process it would also count the link emulator's proxies, which run there.
 */
import { BlobServiceClient } from '@azure/storage-blob';
import { QueueClient } from '@azure/storage-queue';
import { mapPool } from './support.js';

/** What a run wrote: each blob's name and size (staged blocks summed), each queue message's size. */
export interface Writes {
  blobs: Array<{ name: string; bytes: number }>;
  queue: number[];
}

/** Issues `w` into a new container and queue `name` at `concurrency`; returns seconds and this process's CPU ms. */
export async function replayWrites(conn: string, name: string, w: Writes, concurrency: number): Promise<{ seconds: number; cpuMs: number }> {
  const container = BlobServiceClient.fromConnectionString(conn).getContainerClient(name);
  const queue = new QueueClient(conn, name);
  await Promise.all([container.createIfNotExists(), queue.createIfNotExists()]);
  const maxBlob = Math.max(0, ...w.blobs.map((b) => b.bytes));
  const data = Buffer.alloc(maxBlob, 0x61);
  // The SDK wraps the text in <QueueMessage><MessageText>…</MessageText></QueueMessage> (≈100 bytes).
  const overhead = 100;
  const blobOps = w.blobs.map((b) => () => container.getBlockBlobClient(b.name).upload(data.subarray(0, b.bytes), b.bytes));
  const queueOps = w.queue.map((bytes) => () => queue.sendMessage('A'.repeat(Math.max(1, bytes - overhead))));
  // Interleave blob and queue writes, as message-by-message delivery does.
  const ops: Array<() => Promise<unknown>> = [];
  const per = blobOps.length / Math.max(1, queueOps.length);
  for (let i = 0, b = 0; i < queueOps.length || b < blobOps.length; i++) {
    while (b < blobOps.length && b < (i + 1) * per) ops.push(blobOps[b++]);
    if (i < queueOps.length) ops.push(queueOps[i]);
  }
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  await mapPool(ops, concurrency, (op) => op());
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  return { seconds, cpuMs: (cpu.user + cpu.system) / 1000 };
}
