import type { Readable } from 'node:stream';
import { partialDownload } from './partial-download.js';
import type { ImapSession } from './session.js';

/**
 * Partial FETCH window and what a streamed message is handed on in. imapflow holds
 * each window whole (the assembled literal), and every sink stage takes a whole chunk
 * past its 16 KiB highWaterMark (mailparser copies it, its base64 decoder turns it into
 * a string). Windows that live long enough to be promoted pile up as external memory
 * until V8's ~64 MB external limit forces a full GC. So windows start at 512 KiB, grow
 * only on a slow link, and are handed on at once as 64 KiB copies (bench
 * figure 3: one 100 MiB attachment ~40 MiB over idle, as POP3's socket-sized chunks).
 */
const STREAM_CHUNK = 512 * 1024;
const STREAM_PIECE = 64 * 1024;

/** Windows grow up to this while the round trip, not the transfer, is what the download waits for. */
const MAX_WINDOW = 2 * 1024 * 1024;
/** Bytes requested and not yet handed on, at most: the memory bound of a large message. */
const MAX_IN_FLIGHT = 4 * 1024 * 1024;

/**
 * Streams one (large) message in partial fetches queued back to back (one
 * round trip per window, not per 512 KiB), handed on in 64 KiB slices. A
 * download that fails mid-stream (the connection drops, the server says BYE)
 * fails with the IMAP cause, so the poll reconnects; a reader that gives up
 * destroys the stream, which stops the fetches.
 */
export function downloadMessage(session: ImapSession, uid: number, size: number): Readable {
  try {
    return partialDownload(session.client, {
      uid,
      size,
      window: STREAM_CHUNK,
      maxWindow: MAX_WINDOW,
      maxInFlight: MAX_IN_FLIGHT,
      piece: STREAM_PIECE,
      subject: session.subject,
      mapError: (e) => session.fail(e),
    });
  } catch (e) {
    throw session.fail(e);
  }
}
