/** POP3 (our streaming client) behind the `MailSource` seam, and the client itself. */
export { Pop3Client } from './client.js';
export type { Pop3ConnectOptions, Pop3CommandOptions } from './connection.js';
export { Pop3Capabilities, parseCapa } from './commands/capa.js';
export { xoauth2Blob } from './commands/auth-xoauth2.js';
export type { Pop3Stat } from './commands/stat.js';
export type { Pop3UidlEntry } from './commands/uidl.js';
export type { Pop3ListEntry } from './commands/list.js';
export { Pop3ReplyParser, parseStatusLine, type ParserEvent, type Pop3Reply, type Pop3StatusLine, type ReplyKind } from './parser.js';
export { errorFromReply, responseCodeOf } from './errors.js';
export { createSource, createPop3Source, type Pop3SourceOptions } from './source.js';
