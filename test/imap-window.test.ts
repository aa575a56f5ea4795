import { test } from 'node:test';
import assert from 'node:assert/strict';
import { windowSizer } from '../shared/imap/partial-download.js';

const KiB = 1024;

/** Replays windows through a sizer on a fake clock: each window takes `rtt + length / bytesPerMs`, one at a time. */
function replay(rttMs: number, bytesPerMs: number, count: number, queued = 2): number[] {
  let window = 512 * KiB;
  let clock = 0;
  const sizer = windowSizer(
    () => window,
    (w) => (window = Math.min(w, 2048 * KiB)),
    () => clock,
  );
  const sizes: number[] = [];
  // `queued` windows are requested together at the start, as the download does.
  const pending = Array.from({ length: queued }, () => window);
  for (let i = 0; i < count; i++) {
    const length = pending.shift()!;
    clock += rttMs + length / bytesPerMs;
    sizer.completed(0, length);
    sizes.push(length);
    pending.push(window);
  }
  return sizes;
}

test('window sizer: grows on a slow link (40 ms), not on loopback; same-size windows queued together do not stop it', () => {
  // 40 ms round trip, ~100 MB/s: a doubled window costs little more time, so it grows to the cap.
  const far = replay(40, 100_000, 12);
  assert.equal(far.at(-1), 2048 * KiB, `windows at 40 ms: ${far.map((w) => w / KiB).join(',')}`);
  // Loopback, ~200 MB/s and no round trip: time is all transfer, doubling buys nothing.
  const near = replay(0.05, 200_000, 12);
  assert.ok(
    near.every((w) => w <= 1024 * KiB),
    `windows on loopback: ${near.map((w) => w / KiB).join(',')}`,
  );
  // Many 512 KiB windows queued at once complete one after another at the same cost: not a reason to stop.
  const queuedMany = replay(40, 100_000, 24, 8);
  assert.equal(queuedMany.at(-1), 2048 * KiB);
});
