import type { DigestData, FailureData, NotificationJob, NotifiedMessage, RecoveredData } from './job.js';

/** A notification ready to send: header-safe subject, and the same content as text and as escaped HTML. */
export interface RenderedNotification {
  /** Subject with the mailbox's `subjectPrefix`, header-safe (one line, no control characters). */
  subject: string;
  /** Plain-text body; untrusted values cannot start lines of their own. */
  text: string;
  /** HTML body; every untrusted value is escaped. */
  html: string;
}

/** Escapes text for HTML element content and attribute values. */
export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

// CR/LF would end the header and let a hostile subject add headers or a body; the
// other controls (and Unicode line/paragraph separators) are no better in a header.
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]+/g;

/** One line, no control characters, at most `max` characters: safe in a mail header. */
export function headerSafe(s: string, max = 200): string {
  const one = s
    .replace(CONTROL, ' ')
    .replace(/\s{2,}/g, ' ')
    .trim();
  return one.length > max ? one.slice(0, max - 1) + '…' : one;
}

/** One line of the plain-text body: a hostile value cannot start lines of its own. */
function line(s: string | null | undefined): string {
  return (s ?? '').replace(CONTROL, ' ').trim();
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KB', 'MB', 'GB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

const plural = (n: number, one: string, many = one + 's') => `${n} ${n === 1 ? one : many}`;

function messageRows(messages: readonly NotifiedMessage[]): { text: string[]; html: string[] } {
  const text: string[] = [];
  const html: string[] = [];
  for (const m of messages) {
    const subject = m.subject === null ? '(no subject)' : line(m.subject) || '(empty subject)';
    const extra = [m.attachments ? plural(m.attachments, 'attachment') : '', m.parseError ? 'could not be parsed; delivered raw' : ''].filter(Boolean).join(', ');
    text.push(
      `- ${subject}`,
      `  from: ${line(m.from) || 'unknown'}; size: ${formatBytes(m.size)} (${m.size} bytes)${extra ? `; ${extra}` : ''}`,
      `  key: ${m.idempotencyKey}`,
      `  blobs: ${m.blobPrefix}/`,
    );
    html.push(
      '<tr>' +
        `<td>${escapeHtml(subject)}</td>` +
        `<td>${escapeHtml(line(m.from) || 'unknown')}</td>` +
        `<td style="text-align:right">${escapeHtml(formatBytes(m.size))}</td>` +
        `<td>${escapeHtml(extra)}</td>` +
        `<td><code>${escapeHtml(m.idempotencyKey)}</code><br><code>${escapeHtml(m.blobPrefix)}/</code></td>` +
        '</tr>',
    );
  }
  return { text, html };
}

const TABLE_HEAD = '<table border="1" cellpadding="4" cellspacing="0"><tr><th>Subject</th><th>From</th><th>Size</th><th>Notes</th><th>Idempotency key / blobs</th></tr>';

function page(title: string, body: string): string {
  return `<!doctype html><html><head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head><body style="font-family:sans-serif">${body}</body></html>`;
}

/**
 * Renders a notification as subject + plain text + simple HTML. Everything
 * that came from a mail (subjects, names) is HTML-escaped in the HTML and
 * flattened to one line in the subject and the text.
 */
export function renderNotification(job: NotificationJob, options: { subjectPrefix: string; container?: string }): RenderedNotification {
  const prefix = headerSafe(options.subjectPrefix, 60);
  const ctx: RenderContext = {
    mbx: line(job.mailbox),
    subj: (s: string) => headerSafe(prefix ? `${prefix} ${s}` : s),
    where: options.container ? ` in container "${options.container}"` : '',
  };
  switch (job.kind) {
    case 'digest':
      return renderDigest(job.data, ctx);
    case 'message':
      return renderMessage(job.data, ctx);
    case 'failure':
      return renderFailure(job.data, ctx);
    case 'recovered':
      return renderRecovered(job.data, ctx);
  }
}

/** What every kind's renderer shares: the mailbox as one line, the subject maker, where the blobs are. */
interface RenderContext {
  mbx: string;
  subj: (s: string) => string;
  where: string;
}

function renderDigest(d: DigestData, { mbx, subj, where }: RenderContext): RenderedNotification {
  const rows = messageRows(d.messages);
  const head = `${plural(d.count, 'new message')} (${formatBytes(d.totalBytes)}) ingested from ${mbx}.`;
  const more = d.omitted ? `${plural(d.omitted, 'more message')} not listed (one notification holds at most ${d.messages.length}).` : '';
  const tail = d.outcome === 'failed' ? 'The poll then failed; a failure alert follows if it keeps failing.' : '';
  return {
    subject: subj(`${plural(d.count, 'new message')} in ${mbx}`),
    text: [head, `Blobs are under the prefixes below${where}.`, '', ...rows.text, ...(more ? ['', more] : []), ...(tail ? ['', tail] : []), ''].join('\n'),
    html: page(
      head,
      `<p>${escapeHtml(head)} Blobs are under the prefixes below${escapeHtml(where)}.</p>${TABLE_HEAD}${rows.html.join('')}</table>` +
        (more ? `<p>${escapeHtml(more)}</p>` : '') +
        (tail ? `<p>${escapeHtml(tail)}</p>` : ''),
    ),
  };
}

function renderMessage(m: NotifiedMessage, { mbx, subj }: RenderContext): RenderedNotification {
  const rows = messageRows([m]);
  const head = `New message ingested from ${mbx}.`;
  return {
    subject: subj(`New message in ${mbx}: ${m.subject ?? '(no subject)'}`),
    text: [head, '', ...rows.text, ''].join('\n'),
    html: page(head, `<p>${escapeHtml(head)}</p>${TABLE_HEAD}${rows.html.join('')}</table>`),
  };
}

function renderFailure(f: FailureData, { mbx, subj }: RenderContext): RenderedNotification {
  const head = `Polling ${mbx} has failed ${plural(f.consecutiveFailures, 'time')} in a row (${f.code}).`;
  const last = f.lastSuccessAt ? `Last successful poll: ${f.lastSuccessAt}.` : 'No successful poll recorded yet.';
  const fix = f.fix || 'No admin step is known for this error; it may clear by itself. Check the function logs.';
  const note = 'You will not get another alert for this error until polling recovers.';
  return {
    subject: subj(`ALERT: polling ${mbx} failed ${plural(f.consecutiveFailures, 'time')} (${f.code})`),
    text: [head, '', `Error: ${line(f.message)}`, '', `How to fix: ${line(fix)}`, '', last, note, ''].join('\n'),
    html: page(
      head,
      `<p><strong>${escapeHtml(head)}</strong></p><p>Error: ${escapeHtml(line(f.message))}</p>` +
        `<p>How to fix:</p><pre style="white-space:pre-wrap">${escapeHtml(fix)}</pre><p>${escapeHtml(last)} ${escapeHtml(note)}</p>`,
    ),
  };
}

function renderRecovered(r: RecoveredData, { mbx, subj }: RenderContext): RenderedNotification {
  const head = `Polling ${mbx} works again (it had failed with ${r.code}).`;
  const detail = `${plural(r.delivered, 'message')} ingested by the recovering poll.${r.alertedAt ? ` Alerted at ${r.alertedAt}.` : ''}`;
  return {
    subject: subj(`Recovered: polling ${mbx} works again`),
    text: [head, detail, ''].join('\n'),
    html: page(head, `<p>${escapeHtml(head)}</p><p>${escapeHtml(detail)}</p>`),
  };
}
