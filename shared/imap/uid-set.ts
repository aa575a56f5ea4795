/**
 * IMAP UID sets (RFC 3501 `sequence-set`, numbers and ranges only) as the
 * checkpoint row stores the UIDs whose post-action is still pending:
 * compact (`4:9,12`), sorted, without duplicates.
 */
export function formatUidSet(uids: Iterable<number>): string {
  const sorted = [...new Set(uids)].filter((u) => Number.isSafeInteger(u) && u > 0).sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < sorted.length;) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j] + 1) j++;
    parts.push(i === j ? String(sorted[i]) : `${sorted[i]}:${sorted[j]}`);
    i = j + 1;
  }
  return parts.join(',');
}

/** The UIDs of a set written by {@link formatUidSet}; `TypeError` on anything else. */
export function parseUidSet(set: string): number[] {
  if (set === '') return [];
  const out: number[] = [];
  for (const part of set.split(',')) {
    const m = /^(\d+)(?::(\d+))?$/.exec(part);
    if (!m) throw new TypeError(`not a UID set: ${set.slice(0, 80)}`);
    const from = Number(m[1]);
    const to = m[2] === undefined ? from : Number(m[2]);
    if (to < from || to - from > 1_000_000) throw new TypeError(`not a UID range: ${part}`);
    for (let u = from; u <= to; u++) out.push(u);
  }
  return out;
}
