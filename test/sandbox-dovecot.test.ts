import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import tls from 'node:tls';
import { promisify } from 'node:util';
import { ImapFlow } from 'imapflow';
import { simpleParser } from 'mailparser';
import { exportSPKI, generateKeyPair, SignJWT } from 'jose';
import { startDovecot, type Dovecot } from '../sandbox/dovecot.js';
import { freePort } from '../sandbox/ports.js';
import {
  largeAttachmentStream,
  multipartWithAttachments,
  nonUtf8Message,
  plainMessage,
  eightBitHeadersMessage,
  largeAttachmentMessage,
  noMessageIdMessage,
  sampleMailbox,
  HOSTILE_FILENAME,
  UNICODE_FILENAME,
  ATTACHMENT_CONTENTS,
} from '../sandbox/messages.js';
import { EXCHANGE, startFaultProxy, type FaultProxy } from './support/fault-proxy.js';

const run = promisify(execFile);

const ISSUER = 'https://127.0.0.1:1/contoso-tenant/v2.0';
const AUD = 'https://outlook.office365.com';
const KID = 'sandbox-key-1';
const APP = '11111111-2222-3333-4444-555555555555';
const OTHER_APP = '99999999-8888-7777-6666-555555555555';
const SHARED = 'shared-inbox@contoso.test';
const UNGRANTED = 'ceo@contoso.test';
const IMAP_FAIL = 'NO [AUTHENTICATIONFAILED] Authentication failed.';
const POP_FAIL = '-ERR [AUTH] Authentication failed.';

type Key = Awaited<ReturnType<typeof generateKeyPair>>['privateKey'];
let dir: string;
let ca: string;
let cert: string;
let key: string;
let signKey: Key;
let rogueKey: Key;
let dovecot: Dovecot;

async function makeCerts(d: string): Promise<void> {
  const o = (...a: string[]) => run('openssl', a);
  await o(
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    join(d, 'ca.key'),
    '-out',
    join(d, 'ca.pem'),
    '-days',
    '2',
    '-subj',
    '/CN=Postroom test CA',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign',
  );
  await o('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(d, 'server.key'), '-out', join(d, 'server.csr'), '-subj', '/CN=localhost');
  await writeFile(join(d, 'ext.cnf'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n');
  await o(
    'x509',
    '-req',
    '-in',
    join(d, 'server.csr'),
    '-CA',
    join(d, 'ca.pem'),
    '-CAkey',
    join(d, 'ca.key'),
    '-CAcreateserial',
    '-out',
    join(d, 'server.pem'),
    '-days',
    '2',
    '-extfile',
    join(d, 'ext.cnf'),
  );
}

interface TokenOpts {
  roles?: string[];
  appid?: string;
  iss?: string;
  aud?: string;
  exp?: number;
  key?: Key;
  azp?: string;
}

async function token(t: TokenOpts = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const claims: Record<string, unknown> = { appid: t.appid ?? APP, roles: t.roles ?? ['IMAP.AccessAsApp', 'POP.AccessAsApp'], idtyp: 'app', tid: 'contoso-tenant', ver: '1.0' };
  if (t.azp) claims.azp = t.azp;
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'RS256', kid: KID, typ: 'JWT' })
    .setIssuer(t.iss ?? ISSUER)
    .setAudience(t.aud ?? AUD)
    .setSubject('sp-object-id')
    .setIssuedAt(now - 60)
    .setNotBefore(now - 60)
    .setExpirationTime(t.exp ?? now + 3600)
    .sign(t.key ?? signKey);
}

function xoauth2(user: string, tok: string): string {
  return Buffer.from(`user=${user}\x01auth=Bearer ${tok}\x01\x01`).toString('base64');
}

/** A line-oriented TLS client for exact reply texts. */
class LineClient {
  private buf = '';
  private waiters: Array<(l: string | null) => void> = [];
  private lines: Array<string | null> = [];
  constructor(readonly socket: tls.TLSSocket) {
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => {
      this.buf += d;
      let i: number;
      while ((i = this.buf.indexOf('\r\n')) >= 0) {
        this.push(this.buf.slice(0, i));
        this.buf = this.buf.slice(i + 2);
      }
    });
    socket.on('close', () => this.push(null));
    socket.on('error', () => {});
  }
  static async connect(port: number): Promise<LineClient> {
    const s = tls.connect({ host: '127.0.0.1', port, ca, servername: 'localhost' });
    await new Promise<void>((res, rej) => {
      s.once('secureConnect', res);
      s.once('error', rej);
    });
    return new LineClient(s);
  }
  private push(l: string | null) {
    const w = this.waiters.shift();
    if (w) w(l);
    else this.lines.push(l);
  }
  /** The next line, or null once the server closed. */
  read(): Promise<string | null> {
    if (this.lines.length) return Promise.resolve(this.lines.shift()!);
    return new Promise((r) => this.waiters.push(r));
  }
  async until(re: RegExp): Promise<string[]> {
    const got: string[] = [];
    for (;;) {
      const l = await this.read();
      if (l === null) throw new Error(`closed before ${re}: ${JSON.stringify(got)}`);
      got.push(l);
      if (re.test(l)) return got;
    }
  }
  send(line: string) {
    this.socket.write(line + '\r\n');
  }
  close() {
    this.socket.destroy();
  }
}

/** IMAP AUTHENTICATE XOAUTH2 with SASL-IR; returns every line after the command (challenge included). */
async function imapAuth(port: number, user: string, tok: string): Promise<{ lines: string[]; c: LineClient }> {
  const c = await LineClient.connect(port);
  await c.read(); // greeting
  c.send(`A1 AUTHENTICATE XOAUTH2 ${xoauth2(user, tok)}`);
  const lines: string[] = [];
  for (;;) {
    const l = await c.read();
    if (l === null) break;
    lines.push(l);
    if (l.startsWith('+')) c.send(''); // the failure challenge must be answered with an empty line
    if (l.startsWith('A1 ')) break;
  }
  return { lines, c };
}

/** POP3 AUTH XOAUTH2 in the two steps Exchange requires. */
async function pop3Auth(port: number, user: string, tok: string): Promise<{ lines: string[]; c: LineClient }> {
  const c = await LineClient.connect(port);
  await c.read();
  c.send('AUTH XOAUTH2');
  const first = await c.read();
  assert.equal(first, '+ ', 'POP3 first step: an empty challenge');
  c.send(xoauth2(user, tok));
  const lines: string[] = [];
  for (;;) {
    const l = await c.read();
    if (l === null) break;
    lines.push(l);
    if (l.startsWith('+ ')) {
      c.send('');
      continue;
    }
    if (/^(\+OK|-ERR)/.test(l)) break;
  }
  return { lines, c };
}

function decodeChallenge(line: string): unknown {
  return JSON.parse(Buffer.from(line.slice(2), 'base64').toString('utf8'));
}

function imapflow(port: number, user: string, accessToken: string): ImapFlow {
  return new ImapFlow({ host: '127.0.0.1', port, secure: true, tls: { ca, servername: 'localhost' }, auth: { user, accessToken }, logger: false });
}

/** Every INBOX message's raw bytes, in UID order, read under the INBOX lock. */
async function inboxSources(client: ImapFlow): Promise<Buffer[]> {
  const lock = await client.getMailboxLock('INBOX');
  try {
    const got: Buffer[] = [];
    for await (const m of client.fetch('1:*', { uid: true, source: true })) got.push(m.source!);
    return got;
  } finally {
    lock.release();
  }
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'postroom-dovecot-test-'));
  await makeCerts(dir);
  [ca, cert, key] = (await Promise.all(['ca.pem', 'server.pem', 'server.key'].map((f) => readFile(join(dir, f), 'utf8')))) as [string, string, string];
  const pair = await generateKeyPair('RS256', { extractable: true });
  signKey = pair.privateKey;
  rogueKey = (await generateKeyPair('RS256')).privateKey;
  dovecot = await startDovecot({
    dir: join(dir, 'dovecot'),
    certFile: join(dir, 'server.pem'),
    keyFile: join(dir, 'server.key'),
    issuer: ISSUER,
    kid: KID,
    publicKeyPem: await exportSPKI(pair.publicKey),
    grants: [{ appId: APP, mailbox: SHARED }],
    pop3StarttlsPort: await freePort(),
  });
});

after(async () => {
  await dovecot?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('sandbox Dovecot: app-only XOAUTH2 like Exchange Online', () => {
  it('lets a granted app log in over IMAP with imapflow and offers Exchange folders', async () => {
    const client = imapflow(dovecot.imapPort, SHARED, await token({ roles: ['IMAP.AccessAsApp'] }));
    await client.connect();
    try {
      assert.ok(client.authenticated);
      const names = (await client.list()).map((m) => m.path).sort();
      assert.deepEqual(names, ['Archive', 'Deleted Items', 'Drafts', 'INBOX', 'Junk Email', 'Sent Items']);
      assert.equal(client.capabilities.has('CONDSTORE'), false, 'Exchange advertises no CONDSTORE');
      assert.equal(client.capabilities.has('MOVE'), true);
    } finally {
      await client.logout();
    }
  });

  it('accepts a mailbox address in any letter case and a token with an azp claim', async () => {
    const { lines, c } = await imapAuth(dovecot.imapPort, 'Shared-Inbox@Contoso.TEST', await token({ azp: APP }));
    c.close();
    assert.match(lines.at(-1)!, /^A1 OK /);
  });

  const refused: Array<[string, () => Promise<string>, string?]> = [
    ['a bad signature', () => token({ key: rogueKey })],
    ['a wrong issuer', () => token({ iss: 'https://login.example.test/other/v2.0' })],
    ['a wrong audience', () => token({ aud: 'https://graph.microsoft.com' })],
    ['an expired token', () => token({ exp: Math.floor(Date.now() / 1000) - 120 })],
    ['a mailbox not granted to the app', () => token(), UNGRANTED],
    ['a token of an app without any grant', () => token({ appid: OTHER_APP })],
  ];

  for (const [what, mint, user] of refused) {
    it(`refuses ${what} over IMAP and POP3 with Dovecot's texts`, async () => {
      const tok = await mint();
      const imap = await imapAuth(dovecot.imapPort, user ?? SHARED, tok);
      imap.c.close();
      assert.equal(imap.lines.length, 2, JSON.stringify(imap.lines));
      assert.deepEqual(decodeChallenge(imap.lines[0]), { status: '401', schemes: 'bearer', scope: 'mail' });
      assert.equal(imap.lines[1], `A1 ${IMAP_FAIL}`);
      const pop = await pop3Auth(dovecot.pop3Port, user ?? SHARED, tok);
      pop.c.close();
      assert.equal(pop.lines.length, 2, JSON.stringify(pop.lines));
      assert.match(pop.lines[0], /^\+ eyJ/);
      assert.equal(pop.lines[1], POP_FAIL);
    });
  }

  it('checks the protocol role: POP.AccessAsApp alone opens POP3 but not IMAP, and the reverse', async () => {
    const popOnly = await token({ roles: ['POP.AccessAsApp'] });
    const imapOnly = await token({ roles: ['IMAP.AccessAsApp'] });
    const near = await token({ roles: ['IMAP.AccessAsApp.Extra', 'XPOP.AccessAsApp'] });
    const none = await token({ roles: [] });

    const a = await imapAuth(dovecot.imapPort, SHARED, popOnly);
    a.c.close();
    assert.equal(a.lines.at(-1), `A1 ${IMAP_FAIL}`);
    const b = await pop3Auth(dovecot.pop3Port, SHARED, popOnly);
    b.c.close();
    assert.match(b.lines.at(-1)!, /^\+OK Logged in\./);
    const c = await pop3Auth(dovecot.pop3Port, SHARED, imapOnly);
    c.c.close();
    assert.equal(c.lines.at(-1), POP_FAIL);
    const d = await imapAuth(dovecot.imapPort, SHARED, imapOnly);
    d.c.close();
    assert.match(d.lines.at(-1)!, /^A1 OK /);
    for (const tok of [near, none]) {
      const e = await imapAuth(dovecot.imapPort, SHARED, tok);
      e.c.close();
      assert.equal(e.lines.at(-1), `A1 ${IMAP_FAIL}`);
    }
    const log = await readFile(dovecot.logFile, 'utf8');
    assert.match(log, /lacks role IMAP\.AccessAsApp/);
    assert.doesNotMatch(log, /eyJ[A-Za-z0-9_-]{20,}/, 'no token in the log');
  });

  it('POP3 on the plain port offers STLS and takes XOAUTH2 after it', async () => {
    const sock = net.connect({ host: '127.0.0.1', port: dovecot.pop3StarttlsPort! });
    const plain = new LineClient(sock as unknown as tls.TLSSocket);
    assert.match((await plain.read())!, /^\+OK/);
    plain.send('CAPA');
    assert.ok((await plain.until(/^\.$/)).includes('STLS'));
    plain.send('STLS');
    assert.match((await plain.read())!, /^\+OK/);
    sock.removeAllListeners('data');
    const secure = tls.connect({ socket: sock, ca, servername: 'localhost' });
    await new Promise<void>((res, rej) => {
      secure.once('secureConnect', res);
      secure.once('error', rej);
    });
    const c = new LineClient(secure);
    c.send('AUTH XOAUTH2');
    assert.equal(await c.read(), '+ ');
    c.send(xoauth2(SHARED, await token({ roles: ['POP.AccessAsApp'] })));
    assert.equal(await c.read(), '+OK Logged in.');
    c.close();
  });

  it('imapflow reports a refused login as authenticationFailed', async () => {
    const client = imapflow(dovecot.imapPort, UNGRANTED, await token());
    client.on('error', () => {});
    await assert.rejects(client.connect(), (e: Error & { authenticationFailed?: boolean; serverResponseCode?: string }) => {
      assert.equal(e.authenticationFailed, true);
      assert.equal(e.serverResponseCode, 'AUTHENTICATIONFAILED');
      return true;
    });
    client.close();
  });

  it('applies grant and revoke to the next login without a restart', async () => {
    const mailbox = 'grant-test@contoso.test';
    const tok = await token({ appid: OTHER_APP });
    let r = await imapAuth(dovecot.imapPort, mailbox, tok);
    r.c.close();
    assert.equal(r.lines.at(-1), `A1 ${IMAP_FAIL}`);
    await dovecot.grant(OTHER_APP, mailbox);
    r = await imapAuth(dovecot.imapPort, mailbox, tok);
    r.c.close();
    assert.match(r.lines.at(-1)!, /^A1 OK /);
    const p = await pop3Auth(dovecot.pop3Port, mailbox, tok);
    p.c.close();
    assert.match(p.lines.at(-1)!, /^\+OK/);
    await dovecot.revoke(OTHER_APP, mailbox);
    r = await imapAuth(dovecot.imapPort, mailbox, tok);
    r.c.close();
    assert.equal(r.lines.at(-1), `A1 ${IMAP_FAIL}`);
  });

  it('delivers messages that IMAP and POP3 return byte for byte', async () => {
    const mailbox = 'roundtrip@contoso.test';
    await dovecot.grant(APP, mailbox);
    const msgs = [plainMessage({ subject: 'one' }), multipartWithAttachments(), nonUtf8Message(), eightBitHeadersMessage()];
    for (const m of msgs) await dovecot.deliver(mailbox, m);
    await dovecot.deliver(mailbox, plainMessage({ subject: 'archived' }), 'Archive');
    assert.equal((await dovecot.listMessages(mailbox)).length, 4);

    const client = imapflow(dovecot.imapPort, mailbox, await token());
    await client.connect();
    try {
      const got = await inboxSources(client);
      assert.equal(got.length, msgs.length);
      got.forEach((g, i) => assert.ok(g.equals(msgs[i]), `message ${i + 1} differs`));
      const lock = await client.getMailboxLock('INBOX');
      try {
        await client.messageFlagsAdd('1', ['\\Seen']);
      } finally {
        lock.release();
      }
      const archive = await client.status('Archive', { messages: true });
      assert.ok(archive);
      assert.equal(archive.messages, 1);
    } finally {
      await client.logout();
    }
    const listed = await dovecot.listMessages(mailbox);
    assert.equal(listed.filter((m) => m.flags.includes('S')).length, 1, 'the \\Seen flag is stored in the file name');
    assert.deepEqual(listed.map((m) => m.size).sort(), msgs.map((m) => m.length).sort());

    // POP3 RETR gives the same bytes (dot-unstuffed).
    const p = await pop3Auth(dovecot.pop3Port, mailbox, await token({ roles: ['POP.AccessAsApp'] }));
    p.c.send('UIDL 2');
    const uidl = await p.c.read();
    assert.match(uidl!, /^\+OK 2 [0-9a-fA-F]{16}$/, 'pop3_uidl_format %08Xu%08Xv');
    p.c.send('RETR 2');
    const lines = await p.c.until(/^\.$/);
    p.c.close();
    const body =
      lines
        .slice(1, -1)
        .map((l) => (l.startsWith('..') ? l.slice(1) : l))
        .join('\r\n') + '\r\n';
    assert.ok(Buffer.from(body, 'latin1').equals(msgs[1]));
  });

  it('resetUidValidity changes UIDVALIDITY and keeps the messages', async () => {
    const mailbox = 'resync@contoso.test';
    await dovecot.grant(APP, mailbox);
    await dovecot.deliver(mailbox, plainMessage({ subject: 'a' }));
    await dovecot.deliver(mailbox, plainMessage({ subject: 'b' }));
    const open = async () => {
      const client = imapflow(dovecot.imapPort, mailbox, await token());
      await client.connect();
      const box = await client.mailboxOpen('INBOX');
      const r = { uidValidity: box.uidValidity, exists: box.exists };
      await client.logout();
      return r;
    };
    const before1 = await open();
    await dovecot.resetUidValidity(mailbox);
    const after1 = await open();
    assert.notEqual(after1.uidValidity, before1.uidValidity);
    assert.equal(after1.exists, 2);
    assert.equal((await dovecot.listMessages(mailbox)).length, 2);
  });

  it('storeAsSdbox serves the same messages from sdbox, takes new deliveries and keeps other mailboxes in Maildir', async () => {
    const mailbox = 'sdbox@contoso.test';
    const other = 'still-maildir@contoso.test';
    await dovecot.grant(APP, mailbox);
    await dovecot.grant(APP, other);
    const msgs = [plainMessage({ subject: 'one' }), multipartWithAttachments()];
    for (const m of msgs) await dovecot.deliver(mailbox, m);
    await dovecot.deliver(other, plainMessage({ subject: 'other' }));
    await dovecot.storeAsSdbox(mailbox);
    const late = plainMessage({ subject: 'after the move' });
    await dovecot.deliver(mailbox, late);
    await assert.rejects(dovecot.listMessages(mailbox), TypeError);

    const client = imapflow(dovecot.imapPort, mailbox, await token());
    await client.connect();
    try {
      const got = await inboxSources(client);
      assert.equal(got.length, 3);
      [...msgs, late].forEach((m, i) => assert.ok(got[i].equals(m), `message ${i + 1} differs`));
    } finally {
      await client.logout();
    }
    // Dovecot really serves it from sdbox: the Maildir is gone, one u.<uid> file per message.
    const home = join(dir, 'dovecot', 'mail', mailbox);
    assert.equal(await readFile(join(home, 'Maildir', 'dovecot-uidlist'), 'utf8').catch((e) => e.code), 'ENOENT');
    const files = (await run('find', [join(home, 'sdbox'), '-name', 'u.*', '-type', 'f'])).stdout.trim().split('\n');
    assert.equal(files.length, 3);
    assert.equal((await dovecot.listMessages(other)).length, 1);
  });
});

describe('sample messages', () => {
  it('are CRLF-only, well-formed MIME with the advertised hostile parts', async () => {
    const all = [plainMessage(), multipartWithAttachments(), nonUtf8Message(), eightBitHeadersMessage(), noMessageIdMessage(), ...sampleMailbox(7)];
    for (const m of all) assert.doesNotMatch(m.toString('latin1'), /(^|[^\r])\n/, 'bare LF');
    const multi = await simpleParser(multipartWithAttachments());
    assert.deepEqual(
      multi.attachments.map((a) => a.filename),
      [HOSTILE_FILENAME, UNICODE_FILENAME],
    );
    multi.attachments.forEach((a, i) => assert.ok(a.content.equals(ATTACHMENT_CONTENTS[i])));
    assert.match(String(multi.html), /Q3 report/);
    const legacy = await simpleParser(nonUtf8Message());
    assert.equal(legacy.subject, 'Grüße aus Köln');
    assert.match(legacy.text ?? '', /Grüße aus Köln/);
    assert.match(legacy.text ?? '', /€ 5 – “quoted”/);
    const eight = await simpleParser(eightBitHeadersMessage());
    assert.equal(eight.subject, 'Bestellbestätigung – 注文 №42 ✓');
    assert.equal((await simpleParser(noMessageIdMessage({ messageId: '<x@y>' }))).messageId, undefined);
    const ids = new Set(await Promise.all(sampleMailbox(10).map(async (m) => (await simpleParser(m)).subject)));
    assert.ok(ids.size >= 8, 'varied subjects');
    const large = await simpleParser(await largeAttachmentMessage(100_000));
    assert.equal(large.attachments[0]?.size, 100_000);
  });
});

describe('fault proxy in front of Dovecot', () => {
  let proxy: FaultProxy;
  let popProxy: FaultProxy;
  before(async () => {
    proxy = await startFaultProxy({ targetPort: dovecot.imapPort, cert, key, ca, protocol: 'imap' });
    popProxy = await startFaultProxy({ targetPort: dovecot.pop3Port, cert, key, ca, protocol: 'pop3' });
  });
  after(async () => {
    await proxy?.close();
    await popProxy?.close();
  });

  it('forwards unchanged without a script', async () => {
    const r = await imapAuth(proxy.port, SHARED, await token());
    r.c.close();
    assert.match(r.lines.at(-1)!, /^A1 OK /);
  });

  it("rewrites Dovecot's refusal into Exchange's text", async () => {
    proxy.next({ replies: [{ match: /^(\S+) NO \[AUTHENTICATIONFAILED\].*$/, replace: `$1 ${EXCHANGE.imapAuthFailed}` }] });
    const r = await imapAuth(proxy.port, UNGRANTED, await token());
    r.c.close();
    assert.equal(r.lines.at(-1), 'A1 NO AUTHENTICATE failed.');

    popProxy.next({ replies: [{ match: /^-ERR \[AUTH\].*$/, replace: EXCHANGE.pop3AuthFailed }] });
    const p = await pop3Auth(popProxy.port, UNGRANTED, await token());
    p.c.close();
    assert.equal(p.lines.at(-1), EXCHANGE.pop3AuthFailed);
  });

  it('injects BYE AccessTokenExpired after N commands and closes', async () => {
    proxy.next({ commands: [{ match: /^/, nth: 3, reply: [EXCHANGE.imapTokenExpired], close: true }] });
    const r = await imapAuth(proxy.port, SHARED, await token());
    assert.match(r.lines.at(-1)!, /^A1 OK /);
    r.c.send('A2 NOOP');
    assert.match((await r.c.until(/^A2 /)).at(-1)!, /^A2 OK/);
    r.c.send('A3 SELECT INBOX');
    assert.equal(await r.c.read(), '* BYE Session invalidated - AccessTokenExpired');
    assert.equal(await r.c.read(), null, 'connection closed');
  });

  it('answers a command with a throttling NO instead of forwarding it, then behaves again', async () => {
    proxy.next({ commands: [{ match: /^\S+ SELECT /i, times: 1, reply: [`{tag} ${EXCHANGE.throttled(500)}`] }] });
    const r = await imapAuth(proxy.port, SHARED, await token());
    r.c.send('A2 SELECT INBOX');
    assert.equal(await r.c.read(), 'A2 NO Request is throttled. Suggested Backoff Time: 500 milliseconds');
    r.c.send('A3 SELECT INBOX');
    assert.match((await r.c.until(/^A3 /)).at(-1)!, /^A3 OK/);
    r.c.close();
  });

  it('refuses a connection and drops one after N bytes', async () => {
    proxy.next({ refuse: true });
    await assert.rejects(LineClient.connect(proxy.port));
    proxy.next({ dropAfterBytes: 10 });
    const c = await LineClient.connect(proxy.port);
    const first = await c.read();
    assert.equal(first, null, 'closed after 10 bytes, before a full greeting line');
  });

  it('streams a 20 MB message through an active rule byte for byte', async () => {
    const mailbox = 'large@contoso.test';
    await dovecot.grant(APP, mailbox);
    const size = 20 * 1024 * 1024;
    const opts = { messageId: '<large-1@contoso.test>', date: new Date(Date.UTC(2025, 5, 1)) };
    await dovecot.deliver(mailbox, largeAttachmentStream(size, opts));
    const expected = await largeAttachmentMessage(size, opts);
    const [stored] = await dovecot.listMessages(mailbox);
    assert.ok(stored);
    proxy.next({ replies: [{ match: /^\S+ OK .*Fetch completed/, replace: (l) => l.replace('Fetch completed', 'FETCH completed') }] });
    const client = imapflow(proxy.port, mailbox, await token());
    await client.connect();
    try {
      const lock = await client.getMailboxLock('INBOX');
      try {
        const m = await client.fetchOne('1', { source: true });
        assert.ok(m && m.source);
        assert.equal(stored.size, expected.length);
        assert.ok(m.source.equals(expected), 'the message differs');
      } finally {
        lock.release();
      }
    } finally {
      await client.logout();
    }
  });
});
