/**
 * A generated corpus of hostile and broken messages: broken MIME structure,
 * thousands of parts, deep nesting, bad encodings and charsets, hostile
 * filenames, huge headers, encoded-word bombs, non-mail bytes, odd line
 * endings. Deterministic (seeded), built in memory, a few MB in all.
 *
 * Every case is distinct byte for byte (most carry their name), so a test
 * can tell which case a delivered message came from.
 */
import { seededRandom } from './seeded-random.js';

/** One generated message. */
export interface HostileCase {
  /** Unique, kebab-case. */
  readonly name: string;
  /** What the case attacks. */
  readonly group: 'structure' | 'parts' | 'nesting' | 'encoding' | 'charset' | 'filename' | 'header' | 'bytes' | 'line-endings' | 'body';
  readonly raw: Buffer;
  /**
   * True when a mail server may store or serve the bytes differently
   * (bare LF/CR, NUL, no trailing line end): Dovecot serves bare LF as CRLF.
   */
  readonly serverMayRewrite: boolean;
}

const CRLF = '\r\n';

function randomBytesSeeded(n: number, seed: number): Buffer {
  const r = seededRandom(seed);
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(r() * 256);
  return b;
}

function head(name: string, extra: string[] = [], subject = `hostile ${name}`): string[] {
  return [
    'From: Mallory <mallory@evil.test>',
    'To: victim@contoso.test',
    `Subject: ${subject}`,
    'Date: Mon, 06 Jan 2025 08:00:00 +0000',
    `Message-ID: <${name}@corpus.test>`,
    'MIME-Version: 1.0',
    ...extra,
  ];
}

/** A message from header and body lines, CRLF everywhere. */
function msg(name: string, extra: string[], body: string[], subject?: string): Buffer {
  return Buffer.from([...head(name, extra, subject), '', ...body].join(CRLF) + CRLF, 'utf8');
}

function b64(data: Buffer | string): string[] {
  const s = Buffer.from(data).toString('base64');
  const out: string[] = [];
  for (let i = 0; i < s.length; i += 76) out.push(s.slice(i, i + 76));
  return out;
}

/** A multipart/mixed message whose attachments are given as [filename header value, content]. */
function withAttachments(name: string, files: Array<[string, Buffer | string]>, opts: { boundary?: string; textFirst?: boolean } = {}): Buffer {
  const bd = opts.boundary ?? `b-${name}`;
  const body: string[] = [];
  if (opts.textFirst !== false) body.push(`--${bd}`, 'Content-Type: text/plain; charset=utf-8', '', `case ${name}`);
  for (const [fname, content] of files) {
    body.push(`--${bd}`, 'Content-Type: application/octet-stream', `Content-Disposition: attachment; ${fname}`, 'Content-Transfer-Encoding: base64', '', ...b64(content));
  }
  body.push(`--${bd}--`);
  return msg(name, [`Content-Type: multipart/mixed; boundary="${bd}"`], body);
}

function manyParts(name: string, n: number, asAttachments: boolean): Buffer {
  const bd = `many-${name}`;
  const body: string[] = [];
  for (let i = 0; i < n; i++) {
    body.push(`--${bd}`);
    if (asAttachments) body.push('Content-Type: text/plain', `Content-Disposition: attachment; filename="f${i}.txt"`, '', `part ${i}`);
    else body.push('Content-Type: text/plain', '', '');
  }
  body.push(`--${bd}--`);
  return msg(name, [`Content-Type: multipart/mixed; boundary="${bd}"`], body);
}

function streamedParts(name: string): Buffer {
  const bd = `st-${name}`;
  const body: string[] = [];
  for (let i = 0; i < 990; i++) body.push(`--${bd}`, 'Content-Type: text/plain', '', `p${i}`);
  body.push(
    `--${bd}`,
    'Content-Type: application/octet-stream',
    'Content-Disposition: attachment; filename="big.bin"',
    'Content-Transfer-Encoding: base64',
    '',
    ...b64(randomBytesSeeded(1024 * 1024, 5)),
  );
  for (let i = 0; i < 200; i++) body.push(`--${bd}`, 'Content-Type: text/plain', '', `q${i}`);
  body.push(`--${bd}--`);
  return msg(name, [`Content-Type: multipart/mixed; boundary="${bd}"`], body);
}

function nested(name: string, depth: number, kind: 'multipart' | 'rfc822'): Buffer {
  let inner = [`Content-Type: text/plain`, '', `innermost of ${name}`];
  for (let d = depth - 1; d >= 0; d--) {
    if (kind === 'multipart') {
      inner = [`Content-Type: multipart/mixed; boundary="n${d}"`, '', `--n${d}`, ...inner, `--n${d}--`];
    } else {
      inner = ['Content-Type: message/rfc822', '', `Subject: level ${d}`, ...inner];
    }
  }
  const [ct, ...rest] = inner;
  return msg(name, [ct], rest.slice(1));
}

function structureCases(): Array<Omit<HostileCase, 'serverMayRewrite'>> {
  const s = (name: string, extra: string[], body: string[]) => ({ name, group: 'structure' as const, raw: msg(name, extra, body) });
  return [
    s('plain-baseline', ['Content-Type: text/plain; charset=utf-8'], ['A well-formed message, for comparison.']),
    s('missing-closing-boundary', ['Content-Type: multipart/mixed; boundary="x"'], ['--x', 'Content-Type: text/plain', '', 'never closed']),
    s('no-boundary-param', ['Content-Type: multipart/mixed'], ['--x', 'Content-Type: text/plain', '', 'where is the boundary', '--x--']),
    s('boundary-never-appears', ['Content-Type: multipart/mixed; boundary="absent"'], ['just text, no parts at all']),
    s(
      'duplicate-boundary-nested',
      ['Content-Type: multipart/mixed; boundary="same"'],
      ['--same', 'Content-Type: multipart/alternative; boundary="same"', '', '--same', 'Content-Type: text/plain', '', 'inner', '--same--', '--same--'],
    ),
    s('empty-boundary', ['Content-Type: multipart/mixed; boundary=""'], ['--', 'Content-Type: text/plain', '', 'empty boundary', '----']),
    s(
      'boundary-1000-chars',
      [`Content-Type: multipart/mixed; boundary="${'q'.repeat(1000)}"`],
      [`--${'q'.repeat(1000)}`, 'Content-Type: text/plain', '', 'long boundary', `--${'q'.repeat(1000)}--`],
    ),
    s('garbage-content-type', ['Content-Type: ;;;===;;"unterminated'], ['garbage content type']),
    s('multipart-preamble-only', ['Content-Type: multipart/mixed; boundary="p"'], ['preamble only', '--p--', 'epilogue']),
    s('parts-without-headers', ['Content-Type: multipart/mixed; boundary="h"'], ['--h', '', 'no headers 1', '--h', '', 'no headers 2', '--h--']),
    { name: 'truncated-mid-header', group: 'structure' as const, raw: Buffer.from('From: a@b.test\r\nSubject: truncated-mid-header\r\nContent-Type: multipart/mix') },
    s(
      'truncated-mid-base64',
      ['Content-Type: multipart/mixed; boundary="t"'],
      [
        '--t',
        'Content-Type: application/pdf',
        'Content-Disposition: attachment; filename="cut.pdf"',
        'Content-Transfer-Encoding: base64',
        '',
        'JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFIvRmls',
      ],
    ),
    s('message-rfc822-garbage', ['Content-Type: message/rfc822'], ['\u0001\u0002 not a message at all ;;;', ':::']),
    s('multipart-digest-empty', ['Content-Type: multipart/digest; boundary="d"'], ['--d', '', '--d', '', '--d--']),
    s(
      'multipart-alternative-500',
      ['Content-Type: multipart/alternative; boundary="alt"'],
      [...Array.from({ length: 500 }, (_, i) => [`--alt`, 'Content-Type: text/plain', '', `alt ${i}`]).flat(), '--alt--'],
    ),
    s(
      'boundary-inside-base64',
      ['Content-Type: multipart/mixed; boundary="AAAA"'],
      [
        '--AAAA',
        'Content-Type: application/octet-stream',
        'Content-Transfer-Encoding: base64',
        'Content-Disposition: attachment; filename="x.bin"',
        '',
        '--AAAAAAAAAAAAAAAA',
        '--AAAA--',
      ],
    ),
    s(
      'tnef-garbage',
      ['Content-Type: multipart/mixed; boundary="w"'],
      [
        '--w',
        'Content-Type: application/ms-tnef; name="winmail.dat"',
        'Content-Disposition: attachment; filename="winmail.dat"',
        'Content-Transfer-Encoding: base64',
        '',
        ...b64(randomBytesSeeded(3000, 7)),
        '--w--',
      ],
    ),
    s('calendar-bad', ['Content-Type: text/calendar; method=REQUEST; charset=utf-8'], ['BEGIN:VCALENDAR', 'BEGIN:VEVENT', 'DTSTART:not-a-date', 'END:VCALENDAR']),
  ];
}

function partsCases(): Array<Omit<HostileCase, 'serverMayRewrite'>> {
  return [
    // The known hang: the parser gives up at its child-node limit while an attachment stream is open.
    { name: 'attachments-2000', group: 'parts', raw: manyParts('attachments-2000', 2000, true) },
    { name: 'attachments-250', group: 'parts', raw: manyParts('attachments-250', 250, true) },
    { name: 'empty-parts-5000', group: 'parts', raw: manyParts('empty-parts-5000', 5000, false) },
    {
      name: 'same-filename-50',
      group: 'parts',
      raw: withAttachments(
        'same-filename-50',
        Array.from({ length: 50 }, (_, i) => ['filename="same.txt"', `copy ${i}`] as [string, string]),
      ),
    },
    // Over 1 MiB, so the raw message streams while the parser fails at its limit, just after a large attachment.
    { name: 'parts-1200-streamed', group: 'parts', raw: streamedParts('parts-1200-streamed') },
  ];
}

function nestingCases(): Array<Omit<HostileCase, 'serverMayRewrite'>> {
  return [
    { name: 'nested-multipart-20', group: 'nesting', raw: nested('nested-multipart-20', 20, 'multipart') },
    { name: 'nested-multipart-200', group: 'nesting', raw: nested('nested-multipart-200', 200, 'multipart') },
    { name: 'nested-multipart-2000', group: 'nesting', raw: nested('nested-multipart-2000', 2000, 'multipart') },
    { name: 'nested-rfc822-150', group: 'nesting', raw: nested('nested-rfc822-150', 150, 'rfc822') },
  ];
}

function encodingCases(): Array<Omit<HostileCase, 'serverMayRewrite'>> {
  const att = (name: string, cte: string, lines: string[]) => ({
    name,
    group: 'encoding' as const,
    raw: msg(
      name,
      ['Content-Type: multipart/mixed; boundary="e"'],
      ['--e', 'Content-Type: application/octet-stream', `Content-Transfer-Encoding: ${cte}`, `Content-Disposition: attachment; filename="${name}.bin"`, '', ...lines, '--e--'],
    ),
  });
  const big = randomBytesSeeded(2 * 1024 * 1024, 11).toString('base64');
  return [
    att('bad-base64-chars', 'base64', ['!!!!****^^^^%%%%', 'SGVsbG8@@@@gd29ybGQ=', '====']),
    att('base64-bad-padding', 'base64', ['SGVsbG8=V29ybGQ===', 'QQ', 'Q']),
    att('base64-one-line-2mb', 'base64', [big.slice(0, 2 * 1024 * 1024)]),
    att('base64-2mb-garbage-middle', 'base64', [...b64(randomBytesSeeded(700_000, 12)), '%%%% not base64 %%%%', ...b64(randomBytesSeeded(700_000, 13))]),
    att('qp-bad-escapes', 'quoted-printable', ['=ZZ=G1=\u00ff=', '=', '==3D=3', 'trailing =']),
    att(
      'qp-soft-break-storm',
      'quoted-printable',
      Array.from({ length: 20_000 }, () => '='),
    ),
    att('unknown-cte', 'x-martian', ['whatever this is']),
    att('uuencode', 'x-uuencode', ['begin 644 evil.txt', 'M86%A86%A86%A86%A86%A86%A86%A86%A86%A86%A86%A86%A86%A86%A86%A', '`', 'end']),
    {
      name: 'cte-binary-on-text',
      group: 'encoding',
      raw: msg('cte-binary-on-text', ['Content-Type: text/plain; charset=utf-8', 'Content-Transfer-Encoding: binary'], [randomBytesSeeded(200, 14).toString('latin1')]),
    },
  ];
}

function charsetCases(): Array<Omit<HostileCase, 'serverMayRewrite'>> {
  const c = (name: string, ct: string, body: Buffer | string, subject?: string) => ({
    name,
    group: 'charset' as const,
    raw: Buffer.concat([Buffer.from([...head(name, [`Content-Type: ${ct}`], subject), '', ''].join(CRLF)), Buffer.from(body), Buffer.from(CRLF)]),
  });
  return [
    c('charset-unknown', 'text/plain; charset=x-unknown-charset', 'text in an unknown charset'),
    c('charset-quoted-garbage', 'text/plain; charset="utf-8\\"; foo=bar', 'broken charset parameter'),
    c('charset-utf7', 'text/plain; charset=utf-7', '+AGEAYgBj- +ZeVnLIqe-'),
    c('charset-iso2022jp-bad', 'text/plain; charset=iso-2022-jp', Buffer.from([0x1b, 0x24, 0x42, 0xff, 0xfe, 0x1b, 0x28, 0x42, 0x41])),
    c('invalid-utf8', 'text/plain; charset=utf-8', Buffer.from([0xc3, 0x28, 0xa0, 0xa1, 0xe2, 0x28, 0xa1, 0xf0, 0x28, 0x8c, 0xbc, 0xed, 0xa0, 0x80])),
    c('utf16-odd-bytes', 'text/plain; charset=utf-16', Buffer.from([0xff, 0xfe, 0x41, 0x00, 0x42])),
    c('encoded-word-bogus-charset', 'text/plain', 'body', '=?x-bogus?B?SGVsbG8=?= =?utf-8?Q?broken=ZZ?= =?utf-8?X?unknownenc?='),
    c('encoded-word-overlong', 'text/plain', 'body', `=?utf-8?B?${Buffer.from('A'.repeat(30_000)).toString('base64')}?=`),
  ];
}

function filenameCases(): Array<Omit<HostileCase, 'serverMayRewrite'>> {
  const f = (name: string, fname: string) => ({ name, group: 'filename' as const, raw: withAttachments(name, [[fname, `content of ${name}`]]) });
  const enc = (s: string) => `filename*=utf-8''${encodeURIComponent(s)}`;
  return [
    f('fn-path-traversal', 'filename="../../../../etc/passwd"'),
    f('fn-windows-traversal', 'filename="..\\..\\Windows\\System32\\cmd.exe"'),
    f('fn-nul-2231', "filename*=utf-8''a%00b%00..%2F..%2Fc.txt"),
    f('fn-control-chars', enc('bell\u0007tab\tnewline\nesc\u001b.txt')),
    f('fn-very-long', `filename="${'A'.repeat(5000)}.pdf"`),
    f('fn-rtl-override', enc('invoice\u202Efdp.exe')),
    f('fn-only-dots', 'filename="...."'),
    f('fn-encoded-word-slash', 'filename="=?utf-8?B?Li4vLi4vZXRjL3NoYWRvdw==?="'),
    f('fn-2231-continuation', "filename*0*=utf-8''..%2F..%2F; filename*1=etc; filename*2=/hosts"),
    f('fn-empty', 'filename=""'),
    f('fn-absolute', 'filename="/etc/shadow"'),
    f('fn-emoji-combining', enc('😀\u0301\u0301\u0301 Z\u0351\u0352\u0353algo.txt')),
    f('fn-reserved-windows', 'filename="CON.txt"; name="aux:stream"'),
    f('fn-url-and-query', 'filename="https://evil.test/a?b=c#d%2e%2e%2f"'),
  ];
}

function headerCases(): Array<Omit<HostileCase, 'serverMayRewrite'>> {
  const h = (name: string, extra: string[], body = [`case ${name}`], subject?: string) => ({ name, group: 'header' as const, raw: msg(name, extra, body, subject) });
  return [
    h('huge-header-2mb', [`X-Huge: ${'h'.repeat(2 * 1024 * 1024)}`]),
    h(
      'header-lines-50000',
      Array.from({ length: 50_000 }, (_, i) => `X-Line-${i}: v`),
    ),
    h('folded-header-200kb', ['X-Folded: start', ...Array.from({ length: 4000 }, () => ` ${'f'.repeat(50)}`)]),
    h('encoded-word-bomb', [], undefined, Array.from({ length: 20_000 }, (_, i) => `=?utf-8?B?${Buffer.from(`w${i}`).toString('base64')}?=`).join(' ')),
    h('recipients-10000', [`Cc: ${Array.from({ length: 10_000 }, (_, i) => `"R ${i}" <r${i}@many.test>`).join(', ')}`]),
    h('duplicate-headers', ['Subject: second subject', 'From: other@evil.test', 'Content-Type: text/html', 'Content-Type: text/plain; charset=utf-8', 'Message-ID: <dup@x>']),
    h('date-garbage', ['Date: Yesterday at teatime, 99:99 +9999']),
    h('header-without-colon', ['This line has no colon', ': empty name', 'X-Ok: fine']),
    h('address-garbage', ['Reply-To: <<<@@@>>> ,,, "unterminated', 'Sender: =?utf-8?Q?=00?= <a@b>']),
    h('references-10000', [`References: ${Array.from({ length: 10_000 }, (_, i) => `<r${i}@refs.test>`).join(' ')}`]),
    { name: 'header-only-no-blank', group: 'header', raw: Buffer.from(head('header-only-no-blank').join(CRLF) + CRLF) },
    { name: 'header-only-blank', group: 'header', raw: Buffer.from(head('header-only-blank').join(CRLF) + CRLF + CRLF) },
    { name: 'header-nul-bytes', group: 'header', raw: msg('header-nul-bytes', ['X-Nul: a\u0000b\u0000c'], ['body']) },
  ];
}

function bytesCases(): Array<Omit<HostileCase, 'serverMayRewrite'>> {
  const png = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), randomBytesSeeded(20_000, 21)]);
  return [
    { name: 'empty-message', group: 'bytes', raw: Buffer.alloc(0) },
    { name: 'random-binary-64k', group: 'bytes', raw: randomBytesSeeded(64 * 1024, 22) },
    { name: 'png-file', group: 'bytes', raw: png },
    { name: 'single-newline', group: 'bytes', raw: Buffer.from('\r\n') },
    { name: 'body-only-no-headers', group: 'bytes', raw: Buffer.from('\r\njust a body, no headers: body-only-no-headers\r\n') },
    {
      name: 'eight-bit-everywhere',
      group: 'bytes',
      raw: Buffer.from(
        `From: J\xfcrgen <j@m\xfcller.test>\r\nSubject: eight-bit-everywhere Gr\xfc\xdfe\r\nContent-Type: multipart/mixed; boundary="8"\r\n\r\n--8\r\nContent-Disposition: attachment; filename="\xdcbersicht.pdf"\r\n\r\n\xe4\xf6\xfc\xff\r\n--8--\r\n`,
        'latin1',
      ),
    },
    {
      name: 'utf8-raw-everywhere',
      group: 'bytes',
      raw: Buffer.from(
        'From: 山田 <山田@例え.テスト>\r\nSubject: utf8-raw-everywhere 注文 ✓\r\nContent-Disposition: attachment; filename="請求書.pdf"\r\n\r\nкириллица ✓\r\n',
        'utf8',
      ),
    },
    { name: 'mbox-from-line', group: 'bytes', raw: Buffer.from('From mallory@evil.test Mon Jan  6 08:00:00 2025\r\nFrom: m@evil.test\r\nSubject: mbox-from-line\r\n\r\nbody\r\n') },
  ];
}

function lineEndingCases(): HostileCase[] {
  const lines = [
    ...head('LE'),
    'Content-Type: multipart/mixed; boundary="le"',
    '',
    '--le',
    'Content-Type: text/plain',
    '',
    'text',
    '--le',
    'Content-Disposition: attachment; filename="a.txt"',
    '',
    'att',
    '--le--',
    '',
  ];
  const named = (n: string) => lines.map((l) => l.replace('LE', n));
  return [
    { name: 'bare-lf', group: 'line-endings', raw: Buffer.from(named('bare-lf').join('\n')), serverMayRewrite: true },
    { name: 'bare-cr', group: 'line-endings', raw: Buffer.from(named('bare-cr').join('\r')), serverMayRewrite: true },
    {
      name: 'mixed-endings',
      group: 'line-endings',
      raw: Buffer.from(
        named('mixed-endings')
          .map((l, i) => l + ['\r\n', '\n', '\r'][i % 3])
          .join(''),
      ),
      serverMayRewrite: true,
    },
    { name: 'no-final-newline', group: 'line-endings', raw: Buffer.from(named('no-final-newline').join('\r\n').trimEnd()), serverMayRewrite: true },
    { name: 'nul-in-body', group: 'line-endings', raw: msg('nul-in-body', ['Content-Type: text/plain'], ['a\u0000b\u0000\u0000c']), serverMayRewrite: true },
  ];
}

function bodyCases(): Array<Omit<HostileCase, 'serverMayRewrite'>> {
  const b = (name: string, ct: string, body: string[]) => ({ name, group: 'body' as const, raw: msg(name, [`Content-Type: ${ct}`], body) });
  return [
    b('line-1mb-no-newline', 'text/plain', ['x'.repeat(1024 * 1024)]),
    b('html-deep-tags', 'text/html', ['<div>'.repeat(20_000) + 'deep' + '</div>'.repeat(20_000)]),
    b(
      'linkify-bait',
      'text/plain',
      Array.from({ length: 2000 }, (_, i) => `xn--a.xn--b.xn--c.xn--d.xn--e.xn--f.xn--g${i}.test http://${'a.'.repeat(60)}test/${i}`),
    ),
    b('delivery-status', 'multipart/report; report-type=delivery-status; boundary="r"', [
      '--r',
      'Content-Type: message/delivery-status',
      '',
      'Reporting-MTA: ;;;',
      'Final-Recipient: garbage',
      '--r--',
    ]),
    b('content-disposition-bogus', 'multipart/mixed; boundary="c"', ['--c', 'Content-Disposition: attachment; size=-1; filename; =; "x"', '', 'bogus disposition', '--c--']),
    b(
      'text-500kb',
      'text/plain; charset=utf-8',
      Array.from({ length: 5000 }, (_, i) => `line ${i} ${'ä'.repeat(40)}`),
    ),
  ];
}

/**
 * The whole corpus, in a fixed order. Cases whose bytes a server may store
 * or serve differently (bare LF/CR, NUL, no final line end) say so.
 */
export function hostileCorpus(): HostileCase[] {
  const rest = [
    ...structureCases(),
    ...partsCases(),
    ...nestingCases(),
    ...encodingCases(),
    ...charsetCases(),
    ...filenameCases(),
    ...headerCases(),
    ...bytesCases(),
    ...bodyCases(),
  ];
  const cases: HostileCase[] = [...rest.map((c) => ({ ...c, serverMayRewrite: rewritable(c.raw) })), ...lineEndingCases()];
  const names = new Set(cases.map((c) => c.name));
  if (names.size !== cases.length) throw new TypeError('hostile corpus: case names must be unique');
  return cases;
}

// Bare LF or CR, NUL, or no CRLF at the end: bytes a server may normalise.
function rewritable(raw: Buffer): boolean {
  if (raw.length === 0) return true;
  if (raw.includes(0)) return true;
  for (let i = 0; i < raw.length; i++) {
    if (raw[i] === 0x0a && raw[i - 1] !== 0x0d) return true;
    if (raw[i] === 0x0d && raw[i + 1] !== 0x0a) return true;
  }
  return !(raw[raw.length - 2] === 0x0d && raw[raw.length - 1] === 0x0a);
}
