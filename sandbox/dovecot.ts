/**
 * A real Dovecot 2.3 (Debian) that authenticates like Exchange Online app-only:
 * SASL XOAUTH2 with an Entra-style app token, validated locally (RS256), plus
 * the two checks Exchange makes after the signature — the protocol's role
 * (`IMAP.AccessAsApp` / `POP.AccessAsApp`) and the app's FullAccess grant on
 * the login mailbox (the sandbox's `Add-MailboxPermission`).
 *
 * Everything of an instance lives under one directory, so several instances
 * (parallel test files) can run at once.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, constants as fsConstants } from 'node:fs';
import { access, chmod, chown, mkdir, readdir, readFile, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import type { Logger } from '../shared/logger.js';
import { silentLogger } from '../shared/logger.js';
import { assertPortsFree, freePort, isPortOpen, isRunning, processCommand } from './ports.js';

const run = promisify(execFile);

const PACKAGES = ['dovecot-imapd', 'dovecot-pop3d', 'dovecot-auth-lua'];
const LUA_MODULE = '/usr/lib/dovecot/modules/auth/libauthdb_lua.so';
const DEFAULT_AUDIENCE = 'https://outlook.office365.com';
/** Exchange Online's folders besides INBOX, created on first login as there. */
const EXCHANGE_FOLDERS = ['Archive', 'Deleted Items', 'Drafts', 'Junk Email', 'Sent Items'];
/**
 * Exchange Online's IMAP capabilities (no CONDSTORE, QRESYNC, ENABLE,
 * SPECIAL-USE), so code tested here does not come to rely on Dovecot extras.
 */
const EXCHANGE_CAPABILITY = 'IMAP4rev1 SASL-IR ID IDLE NAMESPACE UIDPLUS MOVE UNSELECT CHILDREN LITERAL+';

async function onPath(bin: string): Promise<boolean> {
  for (const d of (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/usr/bin', '/sbin'])) {
    if (!d) continue;
    try {
      await access(join(d, bin), fsConstants.X_OK);
      return true;
    } catch {
      /* next */
    }
  }
  return false;
}

let installing: Promise<void> | undefined;

/**
 * Installs Dovecot (IMAP, POP3 and the Lua auth plugin) from Debian's
 * packages when missing. Needs root; safe to call from many tests at once.
 */
export async function ensureDovecotInstalled(log: Logger = silentLogger): Promise<void> {
  installing ??= (async () => {
    const have =
      (await onPath('dovecot')) &&
      (await onPath('doveadm')) &&
      (await access(LUA_MODULE).then(
        () => true,
        () => false,
      )) &&
      (await access('/usr/lib/dovecot/imap').then(
        () => true,
        () => false,
      )) &&
      (await access('/usr/lib/dovecot/pop3').then(
        () => true,
        () => false,
      ));
    if (have) return;
    if (typeof process.getuid === 'function' && process.getuid() !== 0) {
      throw new Error(`Dovecot is not installed and installing it needs root: run "apt-get install -y ${PACKAGES.join(' ')}" as root`);
    }
    log.info('installing Dovecot', { packages: PACKAGES });
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    // The lock timeout lets parallel test processes queue instead of failing on dpkg's lock.
    const lock = ['-o', 'DPkg::Lock::Timeout=300'];
    await run('apt-get', [...lock, 'update'], { env, maxBuffer: 64 << 20 });
    await run('apt-get', [...lock, 'install', '-y', '--no-install-recommends', ...PACKAGES], { env, maxBuffer: 64 << 20 });
    log.info('Dovecot installed');
  })();
  try {
    await installing;
  } catch (e) {
    installing = undefined;
    throw e;
  }
}

export interface DovecotOptions {
  /** Everything lives here: config, maildirs, run dir, logs. Made world-traversable (Dovecot's unprivileged processes need it). */
  dir: string;
  /** TLS-on-connect (imaps) port; a free one if omitted. */
  imapPort?: number;
  /** TLS-on-connect (pop3s) port; a free one if omitted. */
  pop3Port?: number;
  /**
   * Optional plain IMAP listener offering STARTTLS. Dovecot counts a loopback
   * connection as secure, so it does NOT refuse AUTHENTICATE before STARTTLS
   * here: a test that a client never sends its token in clear must watch the wire.
   */
  imapStarttlsPort?: number;
  /** Optional plain POP3 listener offering STLS (same loopback caveat as imapStarttlsPort). */
  pop3StarttlsPort?: number;
  certFile: string;
  keyFile: string;
  /** The token issuer (`iss`) accepted. */
  issuer: string;
  /** The `kid` of the issuer's signing key. */
  kid: string;
  /** The issuer's RS256 public key (SPKI PEM). */
  publicKeyPem: string;
  /** Must appear in the token's `aud`; default `https://outlook.office365.com`. */
  audience?: string;
  /** When set, a token whose `tid` differs is refused (Exchange serves one tenant's mailboxes). */
  tenantId?: string;
  /** FullAccess grants (the sandbox's Add-MailboxPermission). */
  grants: Array<{ appId: string; mailbox: string }>;
  /**
   * Apps whose service principal Exchange does not know (no New-ServicePrincipal,
   * or one made with the App registration's object id): every login is refused.
   */
  unregisteredApps?: string[];
  /** Protocols switched off per mailbox (the sandbox's `Set-CASMailbox -ImapEnabled/-PopEnabled $false`). */
  disabledProtocols?: Array<{ mailbox: string; protocol: 'imap' | 'pop3' }>;
  /** SASL mechanisms advertised; default `['xoauth2']` (imapflow prefers OAUTHBEARER whenever it is advertised). */
  mechanisms?: string[];
  /** Folders besides INBOX that exist from the first login; default Exchange's (Archive, Deleted Items, Drafts, Junk Email, Sent Items). */
  folders?: string[];
  /** `'exchange'` (default) advertises only Exchange Online's IMAP capabilities; `'dovecot'` keeps Dovecot's. */
  capabilities?: 'exchange' | 'dovecot';
  log?: Logger;
}

export interface Dovecot {
  imapPort: number;
  pop3Port: number;
  imapStarttlsPort?: number;
  pop3StarttlsPort?: number;
  /**
   * Puts a raw RFC 822 message into a mailbox folder (Maildir, default INBOX)
   * as the delivery agent would. Creates the mailbox/folder if needed. A
   * Readable is streamed to disk (for very large messages).
   */
  deliver(mailbox: string, raw: Buffer | string | Readable, folder?: string): Promise<void>;
  /** Grants `appId` FullAccess on `mailbox`; effective for the next login. */
  grant(appId: string, mailbox: string): Promise<void>;
  /** Removes a grant; effective for the next login (open sessions stay). */
  revoke(appId: string, mailbox: string): Promise<void>;
  /** Registers (New-ServicePrincipal) or unregisters an app's service principal; effective for the next login. */
  setServicePrincipal(appId: string, registered: boolean): Promise<void>;
  /** The sandbox's `Set-CASMailbox <mailbox> -ImapEnabled/-PopEnabled`; effective for the next login. */
  setProtocolEnabled(mailbox: string, protocol: 'imap' | 'pop3', enabled: boolean): Promise<void>;
  /** Forces a UIDVALIDITY change of a folder (tests of resync), keeping its messages. */
  resetUidValidity(mailbox: string, folder?: string): Promise<void>;
  /**
   * Moves a mailbox's messages from Maildir into Dovecot's sdbox format and
   * serves the mailbox from there from the next login on (new UIDs and
   * UIDVALIDITY). Benchmarks use it for very large mailboxes: Maildir re-reads
   * its whole `dovecot-uidlist` at every session (measured: 2.8 MB and ~100 ms
   * per login at 50,000 messages), sdbox opens in constant time, as Exchange's
   * store does. Later deliveries go in through `doveadm save`.
   */
  storeAsSdbox(mailbox: string): Promise<void>;
  /** Lists a folder's messages as Dovecot stores them (for tests: count, flags); Maildir mailboxes only. */
  listMessages(mailbox: string, folder?: string): Promise<Array<{ file: string; flags: string; size: number }>>;
  /** Dovecot's log (auth failures are logged with their reason, never the token). */
  logFile: string;
  stop(): Promise<void>;
}

interface Ids {
  uid: number;
  gid: number;
  user: string;
  group: string;
}

/**
 * Mail processes cannot run as root; `nobody`/`nogroup` always exists on
 * Debian, so no system user has to be created for the sandbox.
 */
async function mailIds(): Promise<Ids> {
  const passwd = await readFile('/etc/passwd', 'utf8');
  const group = await readFile('/etc/group', 'utf8');
  const u = passwd
    .split('\n')
    .map((l) => l.split(':'))
    .find((f) => f[0] === 'nobody');
  const g = group
    .split('\n')
    .map((l) => l.split(':'))
    .find((f) => f[0] === 'nogroup' || f[0] === 'nobody');
  if (!u || !g) throw new Error('no "nobody" user / "nogroup" group on this machine');
  return { uid: Number(u[2]), gid: Number(g[2]), user: u[0], group: g[0] };
}

/** Exchange addresses are case-insensitive, and Dovecot lowercases the login name (auth_username_format %Lu). */
function normMailbox(mailbox: string): string {
  const m = mailbox.trim().toLowerCase();
  if (!/^[^\s/\\:\x00-\x1f]+$/.test(m) || m.startsWith('.')) throw new TypeError(`not a usable mailbox name: ${JSON.stringify(mailbox)}`);
  return m;
}

function checkAppId(appId: string): string {
  if (!/^[A-Za-z0-9._-]+$/.test(appId)) throw new TypeError(`not a usable app id: ${JSON.stringify(appId)}`);
  return appId;
}

function checkProtocol(p: string): 'imap' | 'pop3' {
  if (p !== 'imap' && p !== 'pop3') throw new TypeError(`Dovecot serves imap and pop3, not ${JSON.stringify(p)}`);
  return p;
}

/** Maildir++ directory of a folder: INBOX is the root, `A/B` is `.A.B`. */
function folderDir(maildir: string, folder: string): string {
  if (folder.toUpperCase() === 'INBOX') return maildir;
  if (!/^[\x20-\x7e]+$/.test(folder) || folder.includes('.') || folder.split('/').some((p) => p === '' || p === '..')) {
    throw new TypeError(`sandbox folders must be printable ASCII without dots: ${JSON.stringify(folder)}`);
  }
  return join(maildir, '.' + folder.split('/').join('.'));
}

function quote(s: string): string {
  return '"' + s.replace(/\\/g, '\\\\').replace(/"/g, '\\"') + '"';
}

function luaString(s: string): string {
  return JSON.stringify(s); // JSON string escapes are valid Lua for the printable paths used here
}

/**
 * The second passdb. Dovecot's oauth2 passdb validates the token (signature,
 * iss, aud, exp) but cannot test one value of an array claim, and its
 * introspection sees no login user, so roles and grants are checked here.
 *
 * Found by experiment on 2.3.19: `%{oauth2:roles}` of a JSON array renders as
 * the elements joined by TAB (`["A","B"]` → `A\tB`), a string claim as itself,
 * a missing claim as empty. So the roles are split on TAB and compared
 * exactly — a substring test would accept `IMAP.AccessAsAppX`.
 * The grants file is read on every login, so grant()/revoke() need no reload.
 */
function luaScript(grantsFile: string, switchesFile: string, tenantId: string | undefined): string {
  return `-- generated by postroom sandbox/dovecot.ts
local ROLE = { imap = "IMAP.AccessAsApp", pop3 = "POP.AccessAsApp" }
local GRANTS = ${luaString(grantsFile)}
local SWITCHES = ${luaString(switchesFile)}
local TENANT = ${luaString((tenantId ?? '').toLowerCase())}

local function has_role(roles, want)
  for r in string.gmatch(roles, "[^\\t]+") do
    if r == want then return true end
  end
  return false
end

-- Whether a line of the file at path passes test (files are re-read at every login: the switches take effect at once).
local function any_line(path, test)
  local f = io.open(path, "r")
  if not f then return false end
  for line in f:lines() do
    if test(line) then
      f:close()
      return true
    end
  end
  f:close()
  return false
end

local function granted(appid, mailbox)
  return any_line(GRANTS, function(line)
    local a, m = string.match(line, "^(%S+)%s+(%S+)%s*$")
    return a == appid and m ~= nil and string.lower(m) == mailbox
  end)
end

-- Lines "unregistered <appid>" and "disabled <mailbox> <protocol>" (Exchange's New-ServicePrincipal and Set-CASMailbox).
local function switched(kind, a, b)
  return any_line(SWITCHES, function(line)
    local k, x, y = string.match(line, "^(%S+)%s+(%S+)%s*(%S*)%s*$")
    return k == kind and x == a and (b == nil or y == b)
  end)
end

function auth_password_verify(req, pass)
  local want = ROLE[req.service]
  local roles = req:var_expand("%{passdb:roles}")
  local appid = req:var_expand("%{passdb:appid}")
  if want == nil or not has_role(roles, want) then
    req:log_info("refused: app " .. appid .. " token lacks role " .. tostring(want) .. " (roles: " .. string.gsub(roles, "\\t", ",") .. ")")
    return dovecot.auth.PASSDB_RESULT_PASSWORD_MISMATCH, "missing role"
  end
  local tid = string.lower(req:var_expand("%{passdb:tid}"))
  if TENANT ~= "" and tid ~= TENANT then
    req:log_info("refused: app " .. appid .. " token is from tenant " .. tid)
    return dovecot.auth.PASSDB_RESULT_PASSWORD_MISMATCH, "wrong tenant"
  end
  if switched("unregistered", appid, nil) then
    req:log_info("refused: app " .. appid .. " has no service principal in Exchange")
    return dovecot.auth.PASSDB_RESULT_PASSWORD_MISMATCH, "service principal not registered"
  end
  if appid == "" or not granted(appid, string.lower(req.user)) then
    req:log_info("refused: app " .. appid .. " has no grant on " .. req.user)
    return dovecot.auth.PASSDB_RESULT_PASSWORD_MISMATCH, "no grant"
  end
  if switched("disabled", string.lower(req.user), req.service) then
    req:log_info("refused: " .. req.service .. " is disabled for " .. req.user)
    return dovecot.auth.PASSDB_RESULT_PASSWORD_MISMATCH, "protocol disabled"
  end
  return dovecot.auth.PASSDB_RESULT_OK, ""
end

function auth_passdb_lookup(req)
  return dovecot.auth.PASSDB_RESULT_USER_UNKNOWN, "lookups are not supported"
end
`;
}

function renderConfig(p: { dir: string; instance: string; ids: Ids; o: DovecotOptions; imapPort: number; pop3Port: number }): { conf: string; oauth2: string } {
  const { dir, ids, o } = p;
  const mechanisms = (o.mechanisms ?? ['xoauth2']).map((m) => m.toLowerCase());
  const folders = o.folders ?? EXCHANGE_FOLDERS;
  const oauth2 = [
    'introspection_mode = local',
    `local_validation_key_dict = fs:posix:prefix=${join(dir, 'keys')}/`,
    `issuers = ${o.issuer}`,
    // In this build client_id is what must appear in `aud`.
    `client_id = ${o.audience ?? DEFAULT_AUDIENCE}`,
    'username_attribute = appid',
    // A constant: an app token names no user, so it "matches" any login name;
    // the Lua passdb then decides whether this app may open that mailbox.
    'username_format = app-only',
    'pass_attrs = appid=%{oauth2:appid} roles=%{oauth2:roles} tid=%{oauth2:tid}',
    '',
  ].join('\n');
  const listener = (name: string, port: number | undefined, ssl: boolean) => `  inet_listener ${name} {\n    port = ${port ?? 0}\n${ssl ? '    ssl = yes\n' : ''}  }\n`;
  const conf = `# generated by postroom sandbox/dovecot.ts
instance_name = ${p.instance}
base_dir = ${join(dir, 'run')}
state_dir = ${join(dir, 'state')}
log_path = ${join(dir, 'dovecot.log')}
info_log_path = ${join(dir, 'dovecot.log')}
protocols = imap pop3
listen = 127.0.0.1
ssl = required
ssl_min_protocol = TLSv1.2
ssl_cert = <${o.certFile}
ssl_key = <${o.keyFile}
auth_mechanisms = ${mechanisms.join(' ')}
# Negative tests must be fast: no delay and no per-IP penalty after a failure.
auth_failure_delay = 0
auth_verbose = yes
auth_cache_size = 0
mail_location = maildir:~/Maildir
mail_uid = ${ids.uid}
mail_gid = ${ids.gid}
first_valid_uid = 1
first_valid_gid = 1
pop3_uidl_format = %08Xu%08Xv
${o.capabilities === 'dovecot' ? '' : `imap_capability = ${EXCHANGE_CAPABILITY}\n`}
namespace inbox {
  inbox = yes
  separator = /
${folders.map((f) => `  mailbox ${quote(f)} {\n    auto = subscribe\n  }\n`).join('')}}

service imap-login {
${listener('imap', o.imapStarttlsPort, false)}${listener('imaps', p.imapPort, true)}}
service pop3-login {
${listener('pop3', o.pop3StarttlsPort, false)}${listener('pop3s', p.pop3Port, true)}}
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}

passdb {
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = ${join(dir, 'oauth2.conf')}
  result_success = continue-ok
  result_failure = return-fail
  # 2.3.19 queues every failure for its 500 ms failure timer even with
  # auth_failure_delay = 0; nodelay (kept only after this passdb succeeded)
  # makes role and grant refusals immediate. Bad tokens still take <= 0.5 s.
  override_fields = nodelay=yes
}
passdb {
  driver = lua
  args = file=${join(dir, 'auth.lua')} blocking=no
  result_failure = return-fail
  result_internalfail = return-fail
}
# Mailboxes moved to sdbox (storeAsSdbox) are listed here with their own mail location.
userdb {
  driver = passwd-file
  args = ${join(dir, 'userdb')}
  # (a passwd-file line can't carry a mail location itself: its fields are split at ':')
  override_fields = mail=sdbox:~/sdbox
}
userdb {
  driver = static
  args = uid=${ids.uid} gid=${ids.gid} home=${join(dir, 'mail')}/%u allow_all_users=yes
}
`;
  return { conf, oauth2 };
}

/** Instances still running when the process exits are stopped (a crashed test must not leave daemons behind). */
const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of live) killGroup(c, 'SIGKILL');
});

function killGroup(c: ChildProcess, signal: NodeJS.Signals): boolean {
  if (c.pid === undefined) return false;
  try {
    process.kill(-c.pid, signal);
    return true;
  } catch {
    return false; // ESRCH: the group is gone
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The processes of process group `pgid` (Linux /proc), from field 5 of /proc/<pid>/stat. */
async function groupMembers(pgid: number): Promise<number[]> {
  const out: number[] = [];
  for (const entry of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    const f = stat.replace(/^.*\) /, '').split(' ');
    if (Number(f[2]) === pgid) out.push(Number(entry));
  }
  return out;
}

/** A sandbox Dovecot found running from an earlier run and stopped. */
export interface OrphanStopped {
  pid: number;
  /** How many processes of its group were ended (master, login, auth, mail processes). */
  processes: number;
}

/**
 * Stops a Dovecot left running by an earlier run of the sandbox in `dir`
 * (a crash or SIGKILL skips stop()): its master.pid names a live `dovecot`
 * started with `<dir>/dovecot.conf`, or processes of that master's group are
 * still alive. Anything else (a stale pid file, a reused pid) is left alone.
 */
export async function stopOrphanDovecot(dir: string, log: Logger = silentLogger): Promise<OrphanStopped | undefined> {
  const base = resolve(dir);
  const pid = Number((await readFile(join(base, 'run', 'master.pid'), 'utf8').catch(() => '')).trim());
  if (!Number.isInteger(pid) || pid <= 1) return undefined;
  const confFile = join(base, 'dovecot.conf');
  // The config is rewritten at each start: until then it names the instance that ran last.
  const instance = /^instance_name = (\S+)$/m.exec(await readFile(confFile, 'utf8').catch(() => ''))?.[1];
  const ours = async (p: number) => {
    const cmd = await processCommand(p);
    if (!cmd) return false;
    // The master names our config; its children (dovecot-<instance>/imap, …/auth) are in its group.
    return p === pid ? /(^|\/)dovecot\b/.test(cmd) && cmd.includes(confFile) : instance !== undefined && cmd.startsWith(`dovecot-${instance}/`);
  };
  const found: number[] = [];
  for (const p of await groupMembers(pid)) if (await ours(p)) found.push(p);
  if (!found.length) return undefined;
  const count = found.length;
  let left = found;
  // Gone or a zombie: a process that exits has an empty command line before its sockets close.
  const members = async () => {
    const still: number[] = [];
    for (const p of found) if (await isRunning(p)) still.push(p);
    return still;
  };
  log.warn(`found a sandbox Dovecot left running by an earlier run (pid ${pid}, ${count} process(es), config ${confFile}): stopping it`);
  for (const sig of ['SIGTERM', 'SIGKILL'] as const) {
    for (const p of left) {
      try {
        process.kill(p, sig);
      } catch {
        /* already gone */
      }
    }
    for (let i = 0; i < 100 && (left = await members()).length; i++) await sleep(30);
    if (!left.length) break;
  }
  if (left.length) throw new Error(`could not stop the orphaned sandbox Dovecot (pids ${left.join(', ')}); stop it by hand: kill -9 ${left.join(' ')}`);
  await rm(join(base, 'run', 'master.pid'), { force: true });
  return { pid, processes: count };
}

/**
 * Starts a Dovecot instance under `o.dir` and resolves once its listeners
 * accept connections.
 *
 * @example
 * ```ts
 * const dc = await startDovecot({ dir, certFile, keyFile, issuer, kid, publicKeyPem,
 *   grants: [{ appId, mailbox: 'shared-inbox@contoso.test' }] });
 * await dc.deliver('shared-inbox@contoso.test', plainMessage());
 * // ... imaps on dc.imapPort, pop3s on dc.pop3Port
 * await dc.stop();
 * ```
 */
export async function startDovecot(o: DovecotOptions): Promise<Dovecot> {
  const log = o.log ?? silentLogger;
  if (!o.issuer || !o.kid || !o.publicKeyPem.includes('PUBLIC KEY')) throw new TypeError('issuer, kid and an SPKI publicKeyPem are required');
  if (!/^[A-Za-z0-9._-]+$/.test(o.kid)) throw new TypeError(`kid must be a file-name-safe string: ${JSON.stringify(o.kid)}`);
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new Error('the sandbox Dovecot runs as root (its mail processes switch to nobody); run the tests as root');
  }
  await ensureDovecotInstalled(log);

  const dir = resolve(o.dir);
  // A Dovecot of an earlier run on this dir would answer on our ports and be silently taken for ours.
  await stopOrphanDovecot(dir, log);
  const fixed = [
    { port: o.imapPort, what: 'sandbox IMAP' },
    { port: o.pop3Port, what: 'sandbox POP3' },
    { port: o.imapStarttlsPort, what: 'sandbox IMAP STARTTLS' },
    { port: o.pop3StarttlsPort, what: 'sandbox POP3 STLS' },
  ].filter((p): p is { port: number; what: string } => p.port !== undefined);
  await assertPortsFree(fixed);
  const ids = await mailIds();
  const grantsFile = join(dir, 'grants');
  const keysDir = join(dir, 'keys');
  const mailRoot = join(dir, 'mail');
  const logFile = join(dir, 'dovecot.log');

  await mkdir(dir, { recursive: true });
  // Login, auth and mail processes run unprivileged and must reach run/, keys/, mail/.
  await chmod(dir, 0o755);
  const tmp = resolve(tmpdir());
  for (let d = dirname(dir); d !== dirname(d); d = dirname(d)) {
    const st = await stat(d);
    if ((st.mode & 0o001) !== 0) continue;
    // mkdtemp makes 0700 dirs; adding search (not read) permission inside the temp dir is harmless.
    if (d.startsWith(tmp + '/')) await chmod(d, (st.mode & 0o7777) | 0o001);
    else throw new Error(`${d} is not traversable by other users; Dovecot's unprivileged processes cannot reach ${dir}`);
  }
  for (const d of ['run', 'state']) await mkdir(join(dir, d), { recursive: true });
  await rm(join(dir, 'keys'), { recursive: true, force: true });
  await mkdir(join(keysDir, 'default', 'RS256'), { recursive: true, mode: 0o755 });
  await writeFile(join(keysDir, 'default', 'RS256', o.kid), o.publicKeyPem, { mode: 0o644 });
  await mkdir(mailRoot, { recursive: true });
  await chown(mailRoot, ids.uid, ids.gid);
  await chmod(mailRoot, 0o750);

  // Dovecot looks the key up under keys/<azp>/ when a token carries `azp`
  // (v2.0 tokens do: the client id), under keys/default/ otherwise.
  const linkAzp = async (appId: string) => {
    await symlink('default', join(keysDir, appId)).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'EEXIST') throw e;
    });
  };

  const grants = new Map<string, { appId: string; mailbox: string }>();
  // Atomic: a login never reads half a file.
  const replaceFile = async (file: string, body: string) => {
    const tmp = `${file}.${randomBytes(4).toString('hex')}`;
    await writeFile(tmp, body, { mode: 0o644 });
    await rename(tmp, file);
  };
  const writeGrants = () => replaceFile(grantsFile, [...grants.values()].map((g) => `${g.appId} ${g.mailbox}\n`).join(''));
  for (const g of o.grants) {
    const appId = checkAppId(g.appId);
    const mailbox = normMailbox(g.mailbox);
    grants.set(`${appId} ${mailbox}`, { appId, mailbox });
    await linkAzp(appId);
  }
  await writeGrants();
  // Service principals and per-mailbox protocol switches, read by the Lua passdb on every login.
  const switchesFile = join(dir, 'switches');
  const unregistered = new Set((o.unregisteredApps ?? []).map(checkAppId));
  const disabled = new Set((o.disabledProtocols ?? []).map((d) => `${normMailbox(d.mailbox)} ${checkProtocol(d.protocol)}`));
  const writeSwitches = () =>
    replaceFile(switchesFile, [...[...unregistered].map((a) => `unregistered ${a}`), ...[...disabled].map((d) => `disabled ${d}`)].map((l) => `${l}\n`).join(''));
  await writeSwitches();
  const userdbFile = join(dir, 'userdb');
  const sdboxUsers = new Set<string>();
  // passwd-file: user:password:uid:gid:gecos:home:shell:extra fields
  const writeUserdb = () => replaceFile(userdbFile, [...sdboxUsers].map((u) => `${u}::${ids.uid}:${ids.gid}::${join(mailRoot, u)}::\n`).join(''));
  await writeUserdb();
  await writeFile(join(dir, 'auth.lua'), luaScript(grantsFile, switchesFile, o.tenantId), { mode: 0o644 });

  const instance = `postroom-${randomBytes(4).toString('hex')}`;
  const confFile = join(dir, 'dovecot.conf');
  let child: ChildProcess | undefined;
  let imapPort = 0;
  let pop3Port = 0;

  for (let attempt = 0; ; attempt++) {
    imapPort = o.imapPort ?? (await freePort());
    do pop3Port = o.pop3Port ?? (await freePort());
    while (pop3Port === imapPort && o.pop3Port === undefined);
    const { conf, oauth2 } = renderConfig({ dir, instance, ids, o, imapPort, pop3Port });
    await writeFile(join(dir, 'oauth2.conf'), oauth2, { mode: 0o644 });
    await writeFile(confFile, conf, { mode: 0o644 });

    const started = Date.now();
    // Its own process group: on stop, logged-in imap/pop3 processes must go too
    // (Dovecot leaves them running ~30 s after the master exits).
    const c = spawn('dovecot', ['-F', '-c', confFile], { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
    let stderr = '';
    c.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    let exited: number | null | undefined;
    c.once('exit', (code, signal) => {
      exited = code ?? (signal ? -1 : null);
      live.delete(c);
    });
    c.once('error', (e) => {
      stderr += String(e);
      exited = -1;
    });
    live.add(c);
    // A test that forgets stop() must not hang the runner; the exit hook above still stops it.
    c.unref();
    (c.stderr as unknown as { unref?: () => void }).unref?.();

    const ports = [imapPort, pop3Port, o.imapStarttlsPort, o.pop3StarttlsPort].filter((x): x is number => x !== undefined);
    let ready = false;
    while (exited === undefined && Date.now() - started < 15_000) {
      const open = await Promise.all(ports.map((pt) => isPortOpen(pt)));
      if (open.every(Boolean) && exited === undefined) {
        ready = true;
        break;
      }
      await sleep(25);
    }
    if (ready) {
      child = c;
      log.info('Dovecot ready', { imapPort, pop3Port, ms: Date.now() - started });
      break;
    }
    killGroup(c, 'SIGKILL');
    live.delete(c);
    const tail = await readFile(logFile, 'utf8').then(
      (t) => t.split('\n').slice(-10).join('\n'),
      () => '',
    );
    const why = `${stderr.trim()}\n${tail}`.trim();
    // A port picked as free may be taken before Dovecot binds it: pick others.
    if (/Address already in use/i.test(why) && attempt < 3 && (o.imapPort === undefined || o.pop3Port === undefined)) {
      log.warn('Dovecot port taken, retrying', { imapPort, pop3Port });
      continue;
    }
    throw new Error(`Dovecot did not start (exit ${String(exited)}): ${why}`);
  }

  const maildirOf = (mailbox: string) => join(mailRoot, normMailbox(mailbox), 'Maildir');

  const ensureFolder = async (mailbox: string, folder: string): Promise<string> => {
    const home = join(mailRoot, normMailbox(mailbox));
    const root = join(home, 'Maildir');
    const fdir = folderDir(root, folder);
    for (const d of [home, root, fdir, join(fdir, 'cur'), join(fdir, 'new'), join(fdir, 'tmp')]) {
      await mkdir(d, { recursive: true, mode: 0o700 });
      await chown(d, ids.uid, ids.gid);
    }
    if (fdir !== root) {
      const marker = join(fdir, 'maildirfolder');
      await writeFile(marker, '', { flag: 'a' });
      await chown(marker, ids.uid, ids.gid);
    }
    return fdir;
  };

  const doveadmSave = (user: string, raw: Buffer | string | Readable, folder: string) =>
    new Promise<void>((resolve, reject) => {
      const c = spawn('doveadm', ['-c', confFile, 'save', '-u', user, '-m', folder], { stdio: ['pipe', 'ignore', 'pipe'] });
      let err = '';
      c.stderr.setEncoding('utf8').on('data', (d: string) => {
        err = (err + d).slice(-2_000);
      });
      c.once('error', reject);
      c.once('close', (code) => (code === 0 ? resolve() : reject(new Error(`doveadm save into ${user}/${folder} failed (exit ${code}): ${err.trim()}`))));
      c.stdin.on('error', () => undefined); // an early exit is reported by 'close'
      if (raw instanceof Readable) raw.pipe(c.stdin);
      else c.stdin.end(raw);
    });

  let seq = 0;
  const host = hostname().replace(/[/:]/g, '_');

  const dovecot: Dovecot = {
    imapPort,
    pop3Port,
    ...(o.imapStarttlsPort !== undefined ? { imapStarttlsPort: o.imapStarttlsPort } : {}),
    ...(o.pop3StarttlsPort !== undefined ? { pop3StarttlsPort: o.pop3StarttlsPort } : {}),
    logFile,

    async deliver(mailbox, raw, folder = 'INBOX') {
      const user = normMailbox(mailbox);
      if (sdboxUsers.has(user)) return doveadmSave(user, raw, folder);
      const fdir = await ensureFolder(mailbox, folder);
      const now = process.hrtime.bigint();
      const sec = Math.floor(Date.now() / 1000);
      // The Maildir delivery protocol: write in tmp/, then rename into new/.
      const base = `${sec}.M${(now / 1000n) % 1000000n}P${process.pid}Q${++seq}R${randomBytes(4).toString('hex')}.${host}`;
      const tmp = join(fdir, 'tmp', base);
      if (raw instanceof Readable) {
        await pipeline(raw, createWriteStream(tmp, { mode: 0o600 }));
      } else {
        await writeFile(tmp, raw, { mode: 0o600 });
      }
      await chown(tmp, ids.uid, ids.gid);
      const { size } = await stat(tmp);
      await rename(tmp, join(fdir, 'new', `${base},S=${size}`));
    },

    async grant(appId, mailbox) {
      const a = checkAppId(appId);
      const m = normMailbox(mailbox);
      grants.set(`${a} ${m}`, { appId: a, mailbox: m });
      await linkAzp(a);
      await writeGrants();
    },

    async revoke(appId, mailbox) {
      grants.delete(`${checkAppId(appId)} ${normMailbox(mailbox)}`);
      await writeGrants();
    },

    async setServicePrincipal(appId, registered) {
      const a = checkAppId(appId);
      if (registered) unregistered.delete(a);
      else unregistered.add(a);
      await linkAzp(a);
      await writeSwitches();
    },

    async setProtocolEnabled(mailbox, protocol, enabled) {
      const key = `${normMailbox(mailbox)} ${checkProtocol(protocol)}`;
      if (enabled) disabled.delete(key);
      else disabled.add(key);
      await writeSwitches();
    },

    async resetUidValidity(mailbox, folder = 'INBOX') {
      const user = normMailbox(mailbox);
      await ensureFolder(user, folder);
      const current = await run('doveadm', ['-c', confFile, 'mailbox', 'status', '-u', user, 'uidvalidity', folder]);
      const m = /uidvalidity=(\d+)/.exec(current.stdout);
      if (!m) throw new Error(`could not read the UIDVALIDITY of ${folder}: ${current.stdout}`);
      // Must differ from the old value; Dovecot's own choice (the clock) may not within a second.
      let next = (Number(m[1]) + 1) >>> 0;
      if (next === 0) next = 1;
      await run('doveadm', ['-c', confFile, 'mailbox', 'update', '-u', user, '--uid-validity', String(next), folder]);
    },

    async storeAsSdbox(mailbox) {
      const user = normMailbox(mailbox);
      if (sdboxUsers.has(user)) return;
      await ensureFolder(user, 'INBOX');
      const home = join(mailRoot, user);
      await run('doveadm', ['-c', confFile, '-o', `mail_location=sdbox:${join(home, 'sdbox')}`, 'import', '-u', user, `maildir:${join(home, 'Maildir')}`, '', 'all'], {
        maxBuffer: 1 << 20,
      });
      await rm(join(home, 'Maildir'), { recursive: true, force: true });
      sdboxUsers.add(user);
      await writeUserdb();
      // Dovecot stats a passwd-file at most once per second (ioloop time): a lookup later in the
      // second of the write could still see the old file.
      await new Promise((r) => setTimeout(r, 1_010 - (Date.now() % 1_000)));
    },

    async listMessages(mailbox, folder = 'INBOX') {
      if (sdboxUsers.has(normMailbox(mailbox))) throw new TypeError(`listMessages reads Maildir; ${mailbox} is stored as sdbox`);
      const fdir = folderDir(maildirOf(mailbox), folder);
      const out: Array<{ file: string; flags: string; size: number }> = [];
      for (const sub of ['new', 'cur']) {
        const names = await readdir(join(fdir, sub)).catch((e: NodeJS.ErrnoException) => {
          if (e.code === 'ENOENT') return [] as string[];
          throw e;
        });
        for (const name of names) {
          const st = await stat(join(fdir, sub, name)).catch(() => undefined);
          if (!st?.isFile()) continue; // moved by Dovecot meanwhile
          const i = name.indexOf(':2,');
          out.push({ file: `${sub}/${name}`, flags: i >= 0 ? name.slice(i + 3) : '', size: st.size });
        }
      }
      return out.sort((a, b) => a.file.slice(4).localeCompare(b.file.slice(4)));
    },

    async stop() {
      const c = child;
      if (!c) return;
      if (c.exitCode !== null || c.signalCode !== null) {
        killGroup(c, 'SIGKILL');
        live.delete(c);
        return;
      }
      const gone = new Promise<void>((r) => c.once('exit', () => r()));
      killGroup(c, 'SIGTERM');
      const t = setTimeout(() => killGroup(c, 'SIGKILL'), 10_000);
      await gone;
      clearTimeout(t);
      // Mail processes of open sessions outlive the master; end them with it.
      for (let i = 0; i < 100 && killGroup(c, 'SIGTERM'); i++) await sleep(20);
      killGroup(c, 'SIGKILL');
      live.delete(c);
      log.info('Dovecot stopped', { imapPort, pop3Port });
    },
  };
  return dovecot;
}
