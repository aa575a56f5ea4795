import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { after, before, describe, test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { ensureCertificates, type SandboxCertificates } from '../sandbox/ca.js';
import { isPostroomError } from '../shared/errors.js';
import { memoryLogger } from '../shared/logger.js';
import { Pop3Client, Pop3ReplyParser, errorFromReply, parseCapa, parseStatusLine, xoauth2Blob, type ParserEvent, type Pop3ConnectOptions } from '../shared/pop3/index.js';
import { parseUidl } from '../shared/pop3/commands/uidl.js';
import { dotStuff, maildropScript, startScriptServer, type ScriptConn, type ScriptServer } from './support/pop3-script-server.js';
import { seededRandom } from './support/seeded-random.js';

const MS_USER = 'test@contoso.onmicrosoft.com';
const MS_TOKEN = 'EwBAAl3BAAUFFpUAo7J3Ve0bjLBWZWCclRC3EoAA';
const MS_BLOB = 'dXNlcj10ZXN0QGNvbnRvc28ub25taWNyb3NvZnQuY29tAWF1dGg9QmVhcmVyIEV3QkFBbDNCQUFVRkZwVUFvN0ozVmUwYmpMQldaV0NjbFJDM0VvQUEBAQ==';

// ---------------------------------------------------------------- parser helpers

interface Collected {
  body: Buffer;
  ended: boolean;
  statuses: string[];
  replies: { status: string; text: string; lines?: string[] }[];
}

function collect(events: ParserEvent[], into: Collected, parts: Buffer[]): void {
  for (const e of events) {
    if (e.type === 'data') parts.push(Buffer.from(e.chunk));
    else if (e.type === 'end') into.ended = true;
    else if (e.type === 'status') into.statuses.push(`${e.status.status} ${e.status.text}`);
    else into.replies.push({ status: e.reply.status, text: e.reply.text, lines: e.reply.lines?.map((l) => l.toString('latin1')) });
  }
}

/** Feeds `chunks` as a RETR reply followed by a NOOP reply; returns what the parser produced. */
function runStream(chunks: Buffer[]): Collected {
  const p = new Pop3ReplyParser();
  const out: Collected = { body: Buffer.alloc(0), ended: false, statuses: [], replies: [] };
  const parts: Buffer[] = [];
  collect(p.expect('stream'), out, parts);
  let expectedNext = false;
  for (const c of chunks) {
    collect(p.push(c), out, parts);
    if (out.ended && !expectedNext) {
      expectedNext = true;
      collect(p.expect('single'), out, parts);
    }
  }
  out.body = Buffer.concat(parts);
  return out;
}

function bytewise(b: Buffer): Buffer[] {
  return [...b].map((x) => Buffer.from([x]));
}

function splitAt(b: Buffer, ...cuts: number[]): Buffer[] {
  const out: Buffer[] = [];
  let prev = 0;
  for (const c of cuts) {
    out.push(b.subarray(prev, c));
    prev = c;
  }
  out.push(b.subarray(prev));
  return out;
}

const TRICKY = '..x\r\n.\r\n\r\n..\r\n...\r\n.\rX\r\nend';
const TRICKY_MESSAGE = Buffer.from(`Subject: t\r\n\r\n.leading\r\n\r\n${TRICKY}\r\n`, 'latin1');

// ---------------------------------------------------------------- parser

describe('reply parser (pure)', () => {
  test('status lines: +OK, -ERR, continuation; anything else is a ProtocolError', () => {
    assert.deepEqual(parseStatusLine(Buffer.from('+OK 2 320')), { status: '+OK', text: '2 320' });
    assert.deepEqual(parseStatusLine(Buffer.from('+OK')), { status: '+OK', text: '' });
    assert.deepEqual(parseStatusLine(Buffer.from('-ERR [IN-USE] locked')), { status: '-ERR', text: '[IN-USE] locked' });
    assert.deepEqual(parseStatusLine(Buffer.from('+ ')), { status: '+', text: '' });
    assert.deepEqual(parseStatusLine(Buffer.from('+ eyJzIjoxfQ==')), { status: '+', text: 'eyJzIjoxfQ==' });
    for (const bad of ['OK', '+OKAY', '-ERROR', '* OK', '']) {
      assert.throws(
        () => parseStatusLine(Buffer.from(bad)),
        (e) => isPostroomError(e, 'ProtocolError'),
        bad,
      );
    }
  });

  test('RETR body: dot-unstuffing, empty lines and the terminator, whole and byte-by-byte', () => {
    const wire = Buffer.concat([Buffer.from('+OK 99 octets\r\n'), dotStuff(TRICKY_MESSAGE), Buffer.from('+OK next\r\n')]);
    for (const chunks of [[wire], bytewise(wire)]) {
      const r = runStream(chunks);
      assert.deepEqual(r.statuses, ['+OK 99 octets']);
      assert.equal(r.ended, true);
      assert.equal(r.body.toString('latin1'), TRICKY_MESSAGE.toString('latin1'));
      assert.deepEqual(r.replies, [{ status: '+OK', text: 'next', lines: undefined }]);
    }
  });

  test('the terminator and every "..", split at every possible position (one and two cuts)', () => {
    const msg = Buffer.from('A\r\n..\r\n.b\r\n\r\n.\r\nz', 'latin1');
    const wire = Buffer.concat([Buffer.from('+OK\r\n'), dotStuff(msg), Buffer.from('+OK after\r\n')]);
    for (let i = 0; i <= wire.length; i++) {
      for (let j = i; j <= wire.length; j++) {
        const r = runStream(splitAt(wire, i, j));
        assert.equal(r.body.toString('latin1'), msg.toString('latin1') + '\r\n', `cuts ${i},${j}`);
        assert.equal(r.ended, true);
        assert.equal(r.replies[0]?.text, 'after', `cuts ${i},${j}`);
      }
    }
  });

  test('random messages with dot lines survive random chunkings (fuzz)', () => {
    const rand = seededRandom(1939);
    const pieces = ['.', '..', '.\r', '\r\n', '\r\n.', '\r\n.\r', 'a', 'bc', '\n', '\r', ' ', '.x', '\r\n.\r\n'];
    for (let round = 0; round < 300; round++) {
      let s = '';
      const n = Math.floor(rand() * 40);
      for (let k = 0; k < n; k++) s += pieces[Math.floor(rand() * pieces.length)];
      // A server stuffs lines beginning with '.' and ends the message with CRLF.
      const msg = s.endsWith('\r\n') || s === '' ? s : s + '\r\n';
      const wire = Buffer.concat([Buffer.from('+OK\r\n'), dotStuff(msg), Buffer.from('+OK tail\r\n')]);
      const chunks: Buffer[] = [];
      for (let i = 0; i < wire.length;) {
        const len = 1 + Math.floor(rand() * 6);
        chunks.push(wire.subarray(i, i + len));
        i += len;
      }
      const r = runStream(chunks);
      assert.equal(r.body.toString('latin1'), msg, `round ${round}: ${JSON.stringify(msg)}`);
      assert.equal(r.replies[0]?.text, 'tail');
    }
  });

  test('a line starts only after CRLF: a dot after a bare LF is content', () => {
    const wire = Buffer.from('+OK\r\na\n.b\r\n.\r\n', 'latin1');
    for (const chunks of [[wire], bytewise(wire)]) {
      assert.equal(runStream(chunks).body.toString('latin1'), 'a\n.b\r\n');
    }
  });

  test('-ERR to RETR ends the reply without a body', () => {
    const r = runStream([Buffer.from('-ERR no such message\r\n+OK x\r\n')]);
    assert.deepEqual(r.statuses, ['-ERR no such message']);
    assert.equal(r.ended, false);
    assert.equal(r.body.length, 0);
  });

  test('UIDL multi-line: 50,000 entries in arbitrary chunks', () => {
    const p = new Pop3ReplyParser();
    let wire = '+OK\r\n';
    for (let i = 1; i <= 50_000; i++) wire += `${i} ${(0x10000000 + i).toString(16).toUpperCase()}5f3a${i % 7 === 0 ? '.x' : ''}\r\n`;
    wire += '.\r\n';
    const buf = Buffer.from(wire);
    const out: Collected = { body: Buffer.alloc(0), ended: false, statuses: [], replies: [] };
    p.expect('multi');
    for (let i = 0; i < buf.length; i += 997) collect(p.push(buf.subarray(i, i + 997)), out, []);
    assert.equal(out.replies.length, 1);
    const entries = parseUidl(out.replies[0].lines!);
    assert.equal(entries.length, 50_000);
    assert.deepEqual(entries[6], { msg: 7, uid: `${(0x10000000 + 7).toString(16).toUpperCase()}5f3a.x` });
    assert.deepEqual(entries[49_999]?.msg, 50_000);
  });

  test('buffered multi-line: dot-unstuffed lines; a -ERR has no body', () => {
    const p = new Pop3ReplyParser();
    const out: Collected = { body: Buffer.alloc(0), ended: false, statuses: [], replies: [] };
    p.expect('multi');
    collect(p.push(Buffer.from('+OK\r\nTOP\r\n..dot\r\n\r\n.\r\n')), out, []);
    p.expect('multi');
    collect(p.push(Buffer.from('-ERR nope\r\n')), out, []);
    assert.deepEqual(out.replies, [
      { status: '+OK', text: '', lines: ['TOP', '.dot', ''] },
      { status: '-ERR', text: 'nope', lines: undefined },
    ]);
  });

  test('an over-long line (outside RETR) and an over-large multi-line reply are ProtocolErrors', () => {
    const p = new Pop3ReplyParser();
    p.expect('single');
    assert.throws(
      () => {
        for (let i = 0; i < 100; i++) p.push(Buffer.alloc(1024, 0x41));
      },
      (e) => isPostroomError(e, 'ProtocolError') && /longer than 65536/.test(e.message),
    );

    const small = new Pop3ReplyParser({ maxBufferedBytes: 1000 });
    small.expect('multi');
    small.push(Buffer.from('+OK\r\n'));
    assert.throws(
      () => {
        for (let i = 0; i < 1000; i++) small.push(Buffer.from(`${i} UID${i}\r\n`));
      },
      (e) => isPostroomError(e, 'ProtocolError') && /larger than 1000/.test(e.message),
    );

    // A RETR body has no line limit: it is never buffered.
    const big = Buffer.concat([Buffer.from('+OK\r\n'), Buffer.alloc(200_000, 0x42), Buffer.from('\r\n.\r\n')]);
    assert.equal(runStream([big]).body.length, 200_002);
  });

  test('unsolicited bytes while idle are kept for the next reply, but bounded', () => {
    const p = new Pop3ReplyParser();
    assert.deepEqual(p.push(Buffer.from('+OK early\r\n')), []);
    assert.equal(p.hasPending, true);
    const ev = p.expect('single');
    assert.equal(ev.length, 1);
    assert.throws(
      () => p.push(Buffer.alloc(70_000, 0x41)),
      (e) => isPostroomError(e, 'ProtocolError'),
    );
  });
});

// ---------------------------------------------------------------- errors, CAPA, XOAUTH2 blob

describe('reply mapping, CAPA and the XOAUTH2 blob', () => {
  test('-ERR with an RFC 2449 code keeps the code and the text', () => {
    const e = errorFromReply('[IN-USE] Do you have another POP session running?', { command: 'AUTH XOAUTH2', subject: 'a@b.c', auth: true });
    assert.equal(e.code, 'CommandFailed');
    assert.equal(e.serverResponseCode, 'IN-USE');
    assert.equal(e.responseText, '[IN-USE] Do you have another POP session running?');
    assert.equal(e.subject, 'a@b.c');
    assert.equal(errorFromReply('[SYS/TEMP] try later', { command: 'RETR' }).serverResponseCode, 'SYS/TEMP');
    assert.equal(errorFromReply('[LOGIN-DELAY] wait', { command: 'AUTH', auth: true }).code, 'CommandFailed');
    assert.equal(errorFromReply('[AUTH] bad', { command: 'AUTH', auth: true }).code, 'AuthenticationFailed');
    assert.equal(errorFromReply('no such message', { command: 'RETR' }).code, 'CommandFailed');
  });

  test('Exchange texts: throttling, token expiry, authentication failure', () => {
    const t = errorFromReply('Request is throttled. Suggested Backoff Time: 12000 milliseconds', { command: 'RETR' });
    assert.equal(t.code, 'Throttled');
    assert.equal(t.retryAfterMs, 12000);
    assert.equal(errorFromReply('Session invalidated - AccessTokenExpired', { command: 'UIDL' }).code, 'SessionExpired');
    const a = errorFromReply('Authentication failure: unknown user name or bad password.', { command: 'AUTH XOAUTH2', auth: true });
    assert.equal(a.code, 'AuthenticationFailed');
    assert.equal(a.responseText, 'Authentication failure: unknown user name or bad password.');
    assert.equal(errorFromReply('User is authenticated but not connected.', { command: 'AUTH', auth: true }).code, 'MailboxNotConnected');
  });

  test('CAPA lines become a capability map', () => {
    const c = parseCapa(['TOP', 'UIDL', 'SASL PLAIN XOAUTH2', 'USER', 'RESP-CODES', 'STLS', 'IMPLEMENTATION Exchange']);
    assert.equal(c.has('top'), true);
    assert.equal(c.has('STLS'), true);
    assert.deepEqual(c.saslMechanisms, ['PLAIN', 'XOAUTH2']);
    assert.deepEqual(c.args('IMPLEMENTATION'), ['Exchange']);
    assert.equal(c.has('PIPELINING'), false);
  });

  test("the XOAUTH2 blob matches Microsoft's test vector", () => {
    assert.equal(xoauth2Blob(MS_USER, MS_TOKEN), MS_BLOB);
    assert.throws(() => xoauth2Blob('', MS_TOKEN), TypeError);
    assert.throws(() => xoauth2Blob(MS_USER, 'a b'), TypeError);
    assert.throws(() => xoauth2Blob('x\x01y', MS_TOKEN), TypeError);
  });
});

// ---------------------------------------------------------------- over sockets

let certs: SandboxCertificates;
let certDir: string;

before(async () => {
  certDir = await mkdtemp(join(tmpdir(), 'postroom-pop3-'));
  certs = await ensureCertificates(certDir);
});

after(async () => {
  await rm(certDir, { recursive: true, force: true });
});

const servers: ScriptServer[] = [];
async function server(scripts: Parameters<typeof startScriptServer>[0], tls = true): Promise<ScriptServer> {
  const s = await startScriptServer(scripts, tls ? { tls: { key: certs.key, cert: certs.cert } } : {});
  servers.push(s);
  return s;
}
after(async () => {
  await Promise.all(servers.map((s) => s.close()));
});

function opts(port: number, extra: Partial<Pop3ConnectOptions> = {}): Pop3ConnectOptions {
  return { host: '127.0.0.1', port, tls: 'implicit', ca: certs.ca, mailbox: MS_USER, commandTimeoutMs: 5_000, connectTimeoutMs: 5_000, ...extra };
}

async function expectLine(c: ScriptConn, expected: string): Promise<void> {
  assert.equal(await c.readLine(), expected);
}

describe('Pop3Client over TLS', () => {
  test('implicit TLS: two-step AUTH XOAUTH2 and every command', async () => {
    const messages = [
      { uid: 'AAA1', body: 'Subject: one\r\n\r\nline 1\r\n.dot line\r\nline 3\r\n' },
      { uid: 'BBB2', body: 'Subject: two\r\n\r\nbody\r\n' },
    ];
    const s = await server(maildropScript({ messages, accept: (u, t) => u === MS_USER && t === MS_TOKEN }));
    const client = await Pop3Client.connect(opts(s.port));
    assert.equal(client.greeting, 'POP3 ready');
    const capa = await client.capa();
    assert.deepEqual(capa.saslMechanisms, ['PLAIN', 'XOAUTH2']);
    await client.authXoauth2(MS_USER, MS_TOKEN);
    assert.deepEqual(s.connections[0].received.slice(1, 3), ['AUTH XOAUTH2', MS_BLOB]);
    assert.deepEqual(await client.stat(), { count: 2, size: Buffer.byteLength(messages[0].body) + Buffer.byteLength(messages[1].body) });
    assert.deepEqual(await client.uidl(), [
      { msg: 1, uid: 'AAA1' },
      { msg: 2, uid: 'BBB2' },
    ]);
    assert.deepEqual(await client.uidl(2), { msg: 2, uid: 'BBB2' });
    assert.deepEqual(await client.list(), [
      { msg: 1, size: Buffer.byteLength(messages[0].body) },
      { msg: 2, size: Buffer.byteLength(messages[1].body) },
    ]);
    assert.equal((await client.top(1, 1)).toString(), 'Subject: one\r\n\r\nline 1\r\n');
    const chunks: Buffer[] = [];
    for await (const c of await client.retr(1)) chunks.push(c as Buffer);
    assert.equal(Buffer.concat(chunks).toString(), messages[0].body);
    await assert.rejects(client.retr(9), (e) => isPostroomError(e, 'CommandFailed') && e.responseText === 'no such message');
    await client.dele(1);
    await client.rset();
    await client.dele(2);
    await client.noop();
    await client.quit();
    assert.equal(client.usable, false);
    assert.deepEqual(
      messages.map((m) => m.uid),
      ['AAA1'],
    );
    assert.deepEqual(s.errors, []);
  });

  test('STLS upgrade on a plain connection', async () => {
    const s = await server(async (c) => {
      await c.write('+OK hello\r\n');
      await expectLine(c, 'STLS');
      await c.write('+OK Begin TLS negotiation\r\n');
      await c.upgrade({ key: certs.key, cert: certs.cert });
      await expectLine(c, 'NOOP');
      await c.write('+OK\r\n');
      await expectLine(c, 'QUIT');
      await c.write('+OK bye\r\n');
    }, false);
    const client = await Pop3Client.connect(opts(s.port, { tls: 'starttls' }));
    await client.noop();
    await client.quit();
    assert.deepEqual(s.errors, []);
  });

  test('STLS refused -> TlsFailed', async () => {
    const s = await server(async (c) => {
      await c.write('+OK hello\r\n');
      await expectLine(c, 'STLS');
      await c.write('-ERR not available\r\n');
      await c.readLine();
    }, false);
    await assert.rejects(Pop3Client.connect(opts(s.port, { tls: 'starttls' })), (e) => isPostroomError(e, 'TlsFailed') && e.responseText === 'not available');
  });

  test('an untrusted certificate -> TlsFailed (verification is on)', async () => {
    const s = await server(maildropScript({ messages: [] }));
    await assert.rejects(Pop3Client.connect(opts(s.port, { ca: undefined })), (e) => isPostroomError(e, 'TlsFailed') && e.subject === MS_USER);
  });

  test('nothing listening -> ConnectionFailed', async () => {
    const s = await startScriptServer(async () => {});
    const port = s.port;
    await s.close();
    await assert.rejects(Pop3Client.connect(opts(port)), (e) => isPostroomError(e, 'ConnectionFailed') && /ECONNREFUSED/.test(e.message));
  });

  test('a server silent during the handshake -> Timeout on connect; abort on connect -> Aborted', async () => {
    const s = await server(async (c) => {
      await c.readLine(); // never answers the TLS hello
    }, false);
    await assert.rejects(Pop3Client.connect(opts(s.port, { connectTimeoutMs: 150 })), (e) => isPostroomError(e, 'Timeout'));
    const ac = new AbortController();
    const p = Pop3Client.connect(opts(s.port, { signal: ac.signal }));
    setTimeout(() => ac.abort(), 50);
    await assert.rejects(p, (e) => isPostroomError(e, 'Aborted'));
  });

  test('AUTH refused after the error challenge: empty line sent, AuthenticationFailed, blob never in errors or logs', async () => {
    const log = memoryLogger();
    const s = await server(maildropScript({ messages: [], accept: () => false }));
    const client = await Pop3Client.connect(opts(s.port, { logger: log }));
    const err = await client.authXoauth2(MS_USER, MS_TOKEN).then(
      () => assert.fail('expected a failure'),
      (e: unknown) => e,
    );
    assert.ok(isPostroomError(err, 'AuthenticationFailed'));
    assert.equal(err.responseText, 'Authentication failure: unknown user name or bad password.');
    assert.equal(err.subject, MS_USER);
    const received = s.connections[0].received;
    assert.deepEqual(received.slice(0, 3), ['AUTH XOAUTH2', MS_BLOB, '']);
    const everything = [err.message, JSON.stringify(err.toJSON()), String(err.stack), ...log.lines].join('\n');
    assert.ok(log.lines.length > 0);
    assert.ok(!everything.includes(MS_BLOB), 'blob leaked');
    assert.ok(!everything.includes(MS_TOKEN), 'token leaked');
    // The session stays in the AUTHORIZATION state and can be ended normally.
    await client.quit();
  });

  test('-ERR [IN-USE] to AUTH -> CommandFailed with the response code; throttled text -> Throttled', async () => {
    const s = await server(async (c) => {
      await c.write('+OK\r\n');
      await expectLine(c, 'AUTH XOAUTH2');
      await c.write('+\r\n');
      await c.readLine();
      await c.write('-ERR [IN-USE] Do you have another POP session running?\r\n');
      await expectLine(c, 'AUTH XOAUTH2');
      await c.write('+\r\n');
      await c.readLine();
      await c.write('+OK\r\n');
      await expectLine(c, 'UIDL');
      await c.write('-ERR Request is throttled. Suggested Backoff Time: 3500 milliseconds\r\n');
      await c.readLine();
    });
    const client = await Pop3Client.connect(opts(s.port));
    await assert.rejects(
      client.authXoauth2(MS_USER, MS_TOKEN),
      (e) => isPostroomError(e, 'CommandFailed') && e.serverResponseCode === 'IN-USE' && e.responseText === '[IN-USE] Do you have another POP session running?',
    );
    await client.authXoauth2(MS_USER, MS_TOKEN);
    await assert.rejects(client.uidl(), (e) => isPostroomError(e, 'Throttled') && e.retryAfterMs === 3500);
    client.destroy();
  });

  test('commands are serialised: the second is sent only after the first reply', async () => {
    const s = await server(async (c) => {
      await c.write('+OK\r\n');
      await expectLine(c, 'STAT');
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(c.unread, '', 'NOOP arrived before STAT was answered');
      await c.write('+OK 3 300\r\n');
      await expectLine(c, 'NOOP');
      await c.write('+OK\r\n');
      await c.readLine();
    });
    const client = await Pop3Client.connect(opts(s.port));
    const [st] = await Promise.all([client.stat(), client.noop()]);
    assert.deepEqual(st, { count: 3, size: 300 });
    client.destroy();
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(s.errors, []);
  });

  test('a command issued while a RETR body streams waits for its end, then runs', async () => {
    const messages = [
      { uid: 'AAA1', body: 'Subject: one\r\n\r\n' + 'x'.repeat(200_000) + '\r\n' },
      { uid: 'BBB2', body: 'Subject: two\r\n\r\nbody\r\n' },
    ];
    const s = await server(maildropScript({ messages, accept: () => true }));
    const client = await Pop3Client.connect(opts(s.port));
    await client.authXoauth2(MS_USER, MS_TOKEN);
    const first = await client.retr(1);
    let secondDone = false;
    const second = client.retr(2).then(async (body) => {
      secondDone = true;
      const parts: Buffer[] = [];
      for await (const c of body) parts.push(c as Buffer);
      return Buffer.concat(parts).toString();
    });
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(secondDone, false, 'RETR 2 must wait while RETR 1 is unread');
    assert.ok(!s.connections[0].received.includes('RETR 2'), 'RETR 2 not sent during the first body');
    const parts: Buffer[] = [];
    for await (const c of first) parts.push(c as Buffer);
    assert.equal(Buffer.concat(parts).toString(), messages[0].body);
    assert.equal(await second, messages[1].body);
    await client.quit();
    assert.deepEqual(s.errors, []);
  });

  test('a silent server -> Timeout, and the client is closed afterwards', async () => {
    const s = await server(async (c) => {
      await c.write('+OK\r\n');
      await c.readLine(); // NOOP: no answer
      await c.readLine();
    });
    const client = await Pop3Client.connect(opts(s.port, { commandTimeoutMs: 150 }));
    await assert.rejects(client.noop(), (e) => isPostroomError(e, 'Timeout') && e.subject === MS_USER);
    assert.equal(client.usable, false);
    await assert.rejects(client.noop(), (e) => isPostroomError(e, 'ConnectionFailed'));
  });

  test('a malformed reply -> ProtocolError; a dropped connection -> ConnectionFailed', async () => {
    const s = await server([
      async (c) => {
        await c.write('+OK\r\n');
        await c.readLine();
        await c.write('* garbage\r\n');
        await c.readLine();
      },
      async (c) => {
        await c.write('+OK\r\n');
        await c.readLine();
        c.socket.destroy();
      },
    ]);
    const a = await Pop3Client.connect(opts(s.port));
    await assert.rejects(a.noop(), (e) => isPostroomError(e, 'ProtocolError'));
    const b = await Pop3Client.connect(opts(s.port));
    await assert.rejects(b.stat(), (e) => isPostroomError(e, 'ConnectionFailed'));
  });

  /** A script that answers RETR with `head`, then stalls until the client leaves. */
  function stallingRetr(head: string): (c: ScriptConn) => Promise<void> {
    return async (c) => {
      await c.write('+OK\r\n');
      await expectLine(c, 'RETR 1');
      await c.write(`+OK\r\n${head}`);
      await c.readLine();
    };
  }

  test('abort during RETR destroys the stream with Aborted and closes the connection', async () => {
    const s = await server(stallingRetr('Subject: x\r\n\r\npartial'));
    const client = await Pop3Client.connect(opts(s.port));
    const ac = new AbortController();
    const body = await client.retr(1, { signal: ac.signal });
    const first = await new Promise<Buffer>((r) => body.once('data', r));
    assert.equal(first.toString(), 'Subject: x\r\n\r\npartial');
    const errored = new Promise<unknown>((r) => body.once('error', r));
    ac.abort();
    assert.ok(isPostroomError(await errored, 'Aborted'));
    assert.equal(client.usable, false);
    await assert.rejects(client.noop(), (e) => isPostroomError(e, 'ConnectionFailed'));
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(s.connections[0].isClosed, true);
  });

  test('a stalled RETR body -> the stream errors with Timeout', async () => {
    const s = await server(stallingRetr('Subject: x\r\n'));
    const client = await Pop3Client.connect(opts(s.port, { commandTimeoutMs: 150 }));
    const body = await client.retr(1);
    await assert.rejects(pipeline(body, new Writable({ write: (_c, _e, cb) => cb() })), (e) => isPostroomError(e, 'Timeout'));
    assert.equal(client.usable, false);
  });

  test('destroying a RETR stream midway closes the connection; a command waiting behind it fails with ConnectionFailed', async () => {
    const s = await server(stallingRetr('Subject: x\r\n'));
    const client = await Pop3Client.connect(opts(s.port));
    const body = await client.retr(1);
    const waiting = client.noop();
    body.destroy();
    await assert.rejects(waiting, (e) => isPostroomError(e, 'ConnectionFailed'));
    await new Promise((r) => setImmediate(r));
    assert.equal(client.usable, false);
    await assert.rejects(client.noop(), (e) => isPostroomError(e, 'ConnectionFailed'));
  });

  test('a 20 MB message streams through with bounded memory and exact bytes', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const TOTAL = 20 * 1024 * 1024;
    // Lines of varied length, many beginning with '.', generated on the fly (never held whole).
    function* lines(): Generator<Buffer> {
      const rand = seededRandom(42);
      let sent = 0;
      while (sent < TOTAL) {
        const len = Math.floor(rand() * 200);
        const start = rand() < 0.3 ? '.' : rand() < 0.05 ? '..' : '';
        const line = Buffer.from(start + 'x'.repeat(len) + '\r\n');
        sent += line.length;
        yield line;
      }
    }
    const expected = createHash('sha256');
    let expectedBytes = 0;
    const s = await server(async (c) => {
      await c.write('+OK\r\n');
      await expectLine(c, 'RETR 1');
      await c.write('+OK\r\n');
      let batch: Buffer[] = [];
      let batchBytes = 0;
      for (const line of lines()) {
        expected.update(line);
        expectedBytes += line.length;
        batch.push(line[0] === 0x2e ? Buffer.concat([Buffer.from('.'), line]) : line);
        batchBytes += line.length;
        if (batchBytes > 16 * 1024) {
          await c.write(Buffer.concat(batch));
          batch = [];
          batchBytes = 0;
        }
      }
      await c.write(Buffer.concat([...batch, Buffer.from('.\r\n')]));
      await expectLine(c, 'QUIT');
      await c.write('+OK\r\n');
    });
    const client = await Pop3Client.connect(opts(s.port));
    gc();
    const base = process.memoryUsage();
    const baseline = base.heapUsed + base.arrayBuffers;
    let peak = 0;
    let received = 0;
    let sinceSample = 0;
    const got = createHash('sha256');
    const body = await client.retr(1);
    await pipeline(
      body,
      new Writable({
        highWaterMark: 16 * 1024,
        write(chunk: Buffer, _enc, cb) {
          got.update(chunk);
          received += chunk.length;
          sinceSample += chunk.length;
          if (sinceSample >= 2 * 1024 * 1024) {
            sinceSample = 0;
            gc();
            const m = process.memoryUsage();
            peak = Math.max(peak, m.heapUsed + m.arrayBuffers - baseline);
          }
          // A slow consumer: yield to the event loop on every chunk so backpressure engages.
          setImmediate(cb);
        },
      }),
    );
    await client.quit();
    assert.equal(received, expectedBytes);
    assert.equal(got.digest('hex'), expected.digest('hex'));
    assert.ok(peak < 6 * 1024 * 1024, `heap + buffers grew by ${(peak / 1048576).toFixed(1)} MiB while streaming 20 MiB`);
    assert.deepEqual(s.errors, []);
  });
});
