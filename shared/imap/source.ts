import { Readable, Transform } from 'node:stream';
import type { ImapFlow } from 'imapflow';
import { PROTOCOL_ROLES, type MailboxConfig } from '../config/index.js';
import { requireRole } from '../auth/jwt.js';
import { PostroomError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { MailSession, MailSource, SourceMessage } from '../source.js';
import type { StateStore } from '../state.js';
import { mapImapError } from './errors.js';
import { applyLeanSession } from './lean-session.js';
import { partialDownload } from './partial-download.js';

export interface ImapSourceOptions {
  mailbox: MailboxConfig;
  /** Token provider with a renew flag (nodemailer's manner). */
  getToken(options: { renew: boolean }): Promise<string>;
  state: StateStore;
  logger: Logger;
  ca?: string;
  /** UIDs per batch. */
  batchSize?: number;
  /** At most this many messages per poll; the rest wait for the next. */
  maxMessages?: number;
  connectTimeoutMs?: number;
  /** Messages up to this size are fetched together with the batch; larger ones stream in chunks. */
  prefetchLimitBytes?: number;
  /** Counts every IMAP command sent (benchmarks: idle-poll cost). */
  onCommand?: (command: string) => void;
}

/** What the checkpoint row holds (Table entity, ETag-guarded). */
export interface ImapCheckpoint extends Record<string, string | number | boolean | Uint8Array | null> {
  uidValidity: string;
  lastUid: number;
  updatedAt: string;
}

export const CHECKPOINT_KEY = 'imap-checkpoint';
const PREFETCH_BATCH_BYTES = 8 * 1024 * 1024;
/**
 * Partial FETCH window and what a streamed message is handed on in. imapflow holds
 * each window whole (the assembled literal, queued in each stage of its stream
 * chain), and every sink stage takes a whole chunk past its 16 KiB highWaterMark
 * (mailparser copies it, its base64 decoder turns it into a string). With 1 MiB
 * windows those Buffers live long enough to be promoted and pile up as external
 * memory until V8's ~64 MB external limit forces a full GC: ~40 MiB more peak RSS
 * than POP3, which hands on socket-sized chunks. 512 KiB windows cut into 64 KiB
 * zero-copy slices keep both short-lived (bench figure 3) at the same throughput.
 */
const STREAM_CHUNK = 512 * 1024;
const STREAM_PIECE = 64 * 1024;

/**
 * Incremental IMAP source: UIDs above the checkpoint `{ uidValidity, lastUid }`.
 *
 * UIDVALIDITY policy (docs/uidvalidity.md): when the folder's UIDVALIDITY
 * differs from the checkpoint's, old UIDs mean nothing, so the folder is
 * re-read from the start (subject to `since`) under the new UIDVALIDITY.
 * Every message of that pass carries `resync` with the previous value, and a
 * warning is logged, so consumers can de-duplicate by Message-ID/sha256: a
 * resync may repeat content, never lose it, and never repeats it silently.
 */
export function createImapSource(o: ImapSourceOptions): MailSource {
  const { mailbox, logger } = o;
  const subject = `mailbox ${mailbox.address} (${mailbox.folder}) via ${mailbox.host}:${mailbox.port}`;
  const batchSize = o.batchSize ?? 50;
  const maxMessages = o.maxMessages ?? 5000;
  const prefetchLimit = o.prefetchLimitBytes ?? 1024 * 1024;

  async function connect(renew: boolean): Promise<ImapFlow> {
    const token = await o.getToken({ renew });
    requireRole(token, PROTOCOL_ROLES.imap, subject);
    const { ImapFlow } = await import('imapflow');
    const client = new ImapFlow({
      host: mailbox.host,
      port: mailbox.port,
      secure: mailbox.tls === 'implicit',
      doSTARTTLS: mailbox.tls === 'starttls' ? true : undefined,
      tls: { minVersion: 'TLSv1.2', rejectUnauthorized: true, ...(o.ca ? { ca: o.ca } : {}) },
      auth: { user: mailbox.address, accessToken: token },
      logger: false,
      disableAutoIdle: true,
      connectionTimeout: o.connectTimeoutMs ?? 15000,
      greetingTimeout: o.connectTimeoutMs ?? 15000,
      socketTimeout: 5 * 60_000,
      clientInfo: { name: 'Postroom' },
    } as ConstructorParameters<typeof ImapFlow>[0]);
    // Skips the start-up round trips a poll does not need (2nd ID, NAMESPACE, LIST, LSUB).
    applyLeanSession(client, { folders: [mailbox.folder] });
    client.on('error', (e: Error) => logger.debug('imap connection error', { mailbox: mailbox.address, error: e }));
    if (o.onCommand) {
      // imapflow has no command hook; wrap its exec, which every command goes through.
      const c = client as unknown as { exec: (cmd: string, ...rest: unknown[]) => Promise<unknown> };
      const exec = c.exec.bind(client);
      c.exec = (cmd: string, ...rest: unknown[]) => {
        o.onCommand!(cmd);
        return exec(cmd, ...rest);
      };
    }
    try {
      await client.connect();
      return client;
    } catch (e) {
      client.close();
      throw mapImapError(e, subject);
    }
  }

  return {
    protocol: 'imap',
    async open(options = {}): Promise<MailSession> {
      options.signal?.throwIfAborted();
      let client: ImapFlow;
      try {
        client = await connect(false);
      } catch (e) {
        // The cached token may have been revoked or expired early: one retry with a fresh one.
        if (!(e instanceof PostroomError) || e.code !== 'AuthenticationFailed') throw e;
        logger.info('IMAP authentication refused; retrying once with a fresh token', { mailbox: mailbox.address });
        client = await connect(true);
      }
      const readOnly = mailbox.postAction.kind === 'none';
      let box;
      try {
        box = await client.mailboxOpen(mailbox.folder, { readOnly });
      } catch (e) {
        client.close();
        throw mapImapError(e, subject);
      }
      const uidValidity = String(box.uidValidity);
      const uidNext = Number(box.uidNext ?? 0);
      const rec = await o.state.get<ImapCheckpoint>(mailbox.id, CHECKPOINT_KEY);
      let etag: string | null = rec?.etag ?? null;
      let lastUid = 0;
      let resync: MailSession['resync'];
      if (rec && rec.value.uidValidity === uidValidity) {
        lastUid = Number(rec.value.lastUid) || 0;
      } else if (rec) {
        resync = { reason: 'UIDVALIDITY changed', previousValidity: rec.value.uidValidity };
        logger.warn('UIDVALIDITY changed: re-reading the folder; messages carry "resync"', {
          mailbox: mailbox.address,
          folder: mailbox.folder,
          previous: rec.value.uidValidity,
          current: uidValidity,
        });
      }

      const fail = (e: unknown) => mapImapError(e, subject);

      function inPieces(content: Readable): Readable {
        const out = new Transform({
          transform(chunk: Buffer, _enc, cb) {
            for (let i = 0; i < chunk.length; i += STREAM_PIECE) this.push(chunk.subarray(i, i + STREAM_PIECE));
            cb();
          },
        });
        // A download fails mid-stream when the connection drops or the server says BYE: the
        // consumer must see the IMAP cause (reconnectable), not a generic stream error.
        content.on('error', (e) => out.destroy(fail(e)));
        // A consumer that gives up must stop imapflow's partial FETCH loop.
        out.on('close', () => content.destroy());
        return content.pipe(out);
      }

      let moveTargetReady = false;

      const session: MailSession = {
        folder: mailbox.folder,
        validity: uidValidity,
        resync,
        async *batches(bopts = {}) {
          // UIDNEXT from SELECT says whether anything arrived: an idle poll costs no SEARCH.
          if (uidNext > 0 && uidNext <= lastUid + 1) return;
          let uids: number[];
          try {
            const criteria: Record<string, unknown> = { uid: `${lastUid + 1}:*` };
            if (mailbox.since) criteria.since = mailbox.since;
            const found = await client.search(criteria, { uid: true });
            // "n:*" always matches the highest UID, even below n (RFC 3501 6.4.8).
            uids = (found || []).filter((u) => u > lastUid).sort((a, b) => a - b).slice(0, maxMessages);
          } catch (e) {
            throw fail(e);
          }
          for (let i = 0; i < uids.length; i += batchSize) {
            bopts.signal?.throwIfAborted();
            const slice = uids.slice(i, i + batchSize);
            const meta: { uid: number; size: number; internalDate?: Date }[] = [];
            try {
              for (const m of await client.fetchAll(slice.join(','), { uid: true, size: true, internalDate: true }, { uid: true })) {
                meta.push({ uid: m.uid, size: m.size ?? 0, internalDate: m.internalDate instanceof Date ? m.internalDate : undefined });
              }
            } catch (e) {
              throw fail(e);
            }
            meta.sort((a, b) => a.uid - b.uid);
            // A size filter is the admin's choice: oversized messages are neither fetched nor
            // post-actioned (they stay in the mailbox), and each poll that passes them says so.
            const limit = mailbox.maxMessageBytes;
            const wanted = limit ? meta.filter((m) => m.size <= limit) : meta;
            for (const m of meta) if (limit && m.size > limit) logger.warn('message over maxMessageBytes not fetched', { mailbox: mailbox.address, uid: m.uid, size: m.size, limit });
            if (wanted.length) yield* prefetchGroups(wanted);
          }

          async function* prefetchGroups(meta: { uid: number; size: number; internalDate?: Date }[]): AsyncGenerator<SourceMessage[]> {
            // Small messages come in one FETCH per ~8 MB group (one round trip for many);
            // large ones stream in 512 KiB partial fetches so memory stays bounded.
            let group: typeof meta = [];
            let bytes = 0;
            const flush = async (): Promise<SourceMessage[]> => {
              const small = group.filter((m) => m.size <= prefetchLimit);
              const sources = new Map<number, Buffer>();
              if (small.length) {
                try {
                  for (const m of await client.fetchAll(small.map((s) => s.uid).join(','), { uid: true, source: true }, { uid: true })) {
                    if (m.source) sources.set(m.uid, m.source);
                  }
                } catch (e) {
                  throw fail(e);
                }
              }
              const out = group.map((m) => message(m, sources));
              group = [];
              bytes = 0;
              return out;
            };
            for (const m of meta) {
              if (group.length && bytes + Math.min(m.size, prefetchLimit) > PREFETCH_BATCH_BYTES) yield await flush();
              group.push(m);
              bytes += Math.min(m.size, prefetchLimit);
            }
            if (group.length) yield await flush();
          }

          function message(m: { uid: number; size: number; internalDate?: Date }, sources: Map<number, Buffer>): SourceMessage {
            return {
              id: String(m.uid),
              size: m.size,
              receivedAt: m.internalDate,
              async open() {
                const buf = sources.get(m.uid);
                if (buf) {
                  sources.delete(m.uid);
                  return Readable.from([buf]);
                }
                try {
                  // Windows queued back to back and sized from the link (one round trip per window, not per 512 KiB).
                  return inPieces(partialDownload(client, { uid: m.uid, size: m.size, window: STREAM_CHUNK, maxWindow: 2 * 1024 * 1024, maxInFlight: 4 * 1024 * 1024, piece: STREAM_PIECE, subject }));
                } catch (e) {
                  throw fail(e);
                }
              },
            };
          }
        },
        async acknowledge(messages) {
          if (!messages.length) return;
          const ids = messages.map((m) => Number(m.id));
          const newLast = Math.max(lastUid, ...ids);
          etag = await o.state.put<ImapCheckpoint>(
            mailbox.id,
            CHECKPOINT_KEY,
            { uidValidity, lastUid: newLast, updatedAt: new Date().toISOString() },
            etag,
          );
          lastUid = newLast;
          const range = ids.join(',');
          const action = mailbox.postAction;
          let ok = true;
          try {
            if (action.kind === 'seen') ok = await client.messageFlagsAdd(range, ['\\Seen'], { uid: true });
            else if (action.kind === 'delete') ok = await client.messageDelete(range, { uid: true });
            else if (action.kind === 'move') {
              if (!moveTargetReady) {
                // imapflow reports a failed MOVE as `false`, hiding TRYCREATE: create the folder first.
                await client.mailboxCreate(action.folder).catch(() => undefined);
                moveTargetReady = true;
              }
              ok = Boolean(await client.messageMove(range, action.folder, { uid: true }));
            }
          } catch (e) {
            // Delivered and checkpointed already: nothing is lost; the mailbox just keeps the message.
            throw fail(e);
          }
          if (!ok) throw new PostroomError('CommandFailed', `post-action ${action.kind} failed for UIDs ${range}`, { subject });
        },
        async close() {
          await client.logout().catch(() => client.close());
        },
        abort() {
          try {
            client.close();
          } catch {
            /* already closed */
          }
        },
      };
      return session;
    },
  };
}
