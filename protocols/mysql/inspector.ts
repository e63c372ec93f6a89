/**
 * What policy and audit need from the MySQL data path, as pure functions:
 *   - SQL text -> statements with comments removed (executable comments kept), their kinds
 *   - a response tracker that follows one command's response packets to its end (rows, errors)
 */
import { Cursor, isEofLike, isErr, parseEof, parseErr, parseOk, ProtocolError, STATUS, COM } from './packets.js';

export interface SqlStatement {
  /** Comments removed (MySQL's executable comments unwrapped), whitespace collapsed. */
  text: string;
  /** First keyword(s) upper-cased, e.g. SELECT, DROP, "LOAD DATA". */
  kind: string;
}

const SPECIAL = /['"`#\-\/*;]/g;
const TWO_WORD = new Set(['LOAD', 'ALTER', 'CREATE', 'DROP', 'GRANT', 'REVOKE', 'RENAME', 'SET', 'SHOW', 'LOCK', 'UNLOCK', 'XA', 'FLUSH', 'INSTALL', 'UNINSTALL']);

/**
 * Split SQL into statements the way the server would read them: quotes ('', "", ``) with
 * backslash escapes, comments (-- , #, / * * /) dropped, executable comments (/ *! ... * /,
 * / *M! ... * /) unwrapped so their contents count, ';' outside quotes ends a statement.
 */
export function splitSql(sql: string): SqlStatement[] {
  const out: SqlStatement[] = [];
  let cur = '';
  let execDepth = 0; // inside an executable comment
  const n = sql.length;
  let i = 0;
  const flush = () => {
    const text = cur.replace(/\s+/g, ' ').trim();
    if (text) out.push({ text, kind: kindOf(text) });
    cur = '';
  };
  while (i < n) {
    const ch = sql[i]!;
    const nx = sql[i + 1];
    if (ch === "'" || ch === '"' || ch === '`') {
      let j = i + 1;
      while (j < n) {
        const c = sql[j]!;
        if (c === '\\' && ch !== '`') { j += 2; continue; }
        if (c === ch) {
          if (sql[j + 1] === ch) { j += 2; continue; }
          break;
        }
        j++;
      }
      cur += sql.slice(i, Math.min(j + 1, n));
      i = j + 1;
      continue;
    }
    if (ch === '#' || (ch === '-' && nx === '-' && (i + 2 >= n || /\s/.test(sql[i + 2]!)))) {
      const end = sql.indexOf('\n', i);
      i = end < 0 ? n : end + 1;
      cur += ' ';
      continue;
    }
    if (ch === '/' && nx === '*') {
      const m = /^\/\*(M?!)(\d{5,6})?/.exec(sql.slice(i, i + 12));
      if (m && m[1]) {
        execDepth++;
        i += m[0].length;
        cur += ' ';
        continue;
      }
      const end = sql.indexOf('*/', i + 2);
      i = end < 0 ? n : end + 2;
      cur += ' ';
      continue;
    }
    if (ch === '*' && nx === '/' && execDepth > 0) {
      execDepth--;
      i += 2;
      cur += ' ';
      continue;
    }
    if (ch === ';') {
      flush();
      i++;
      continue;
    }
    // copy plain text up to the next character that may start something
    SPECIAL.lastIndex = i + 1;
    const m = SPECIAL.exec(sql);
    const end = m ? m.index : n;
    cur += sql.slice(i, end);
    i = end;
  }
  flush();
  return out;
}

export function kindOf(text: string): string {
  const words = text.replace(/^[\s(]+/, '').split(/[\s(]+/, 3).map((w) => w.toUpperCase());
  const first = (words[0] ?? '').replace(/[^A-Z_]/g, '');
  if (!first) return '';
  if (TWO_WORD.has(first) && words[1] && /^[A-Z_]+$/.test(words[1])) return `${first} ${words[1]}`;
  return first;
}

/** LOAD DATA/XML ... LOCAL INFILE asks the client to send a file of its own. */
export function isLoadLocal(stmt: SqlStatement): boolean {
  return /^LOAD\s+(DATA|XML)\s+((LOW_PRIORITY|CONCURRENT)\s+)?LOCAL\b/i.test(stmt.text);
}

export type ResponseShape = 'resultset' | 'prepare' | 'fetch' | 'single' | 'fieldlist' | 'none';

/** How the server answers each command we relay; undefined = the gateway refuses the command. */
export function responseShape(command: number): ResponseShape | undefined {
  switch (command) {
    case COM.QUERY:
    case COM.STMT_EXECUTE:
    case COM.STMT_BULK_EXECUTE: // OK or ERR (result sets only with BULK_UNIT_RESULTS, not offered)
    case COM.PROCESS_INFO: // a result set, like SHOW PROCESSLIST
      return 'resultset';
    case COM.STMT_PREPARE:
      return 'prepare';
    case COM.STMT_FETCH:
      return 'fetch';
    case COM.FIELD_LIST:
      return 'fieldlist';
    case COM.STMT_CLOSE:
    case COM.STMT_SEND_LONG_DATA:
      return 'none';
    case COM.INIT_DB:
    case COM.PING:
    case COM.STATISTICS: // a bare string packet
    case COM.PROCESS_KILL:
    case COM.REFRESH:
    case COM.STMT_RESET:
    case COM.SET_OPTION: // EOF or ERR
    case COM.RESET_CONNECTION:
    case COM.DEBUG:
      return 'single';
    default:
      return undefined;
  }
}

export interface TrackResult {
  done: boolean;
  /** The server asked the client for a LOCAL INFILE file. */
  localInfile?: boolean;
}

export interface TrackerOptions {
  /** CLIENT_DEPRECATE_EOF: no EOF after column definitions; a 0xFE-headed OK ends a result set. */
  deprecateEof: boolean;
  /** MARIADB_CLIENT_CACHE_METADATA: a column count is followed by a "metadata follows" byte. */
  cacheMetadata?: boolean;
  /** A COM_STMT_EXECUTE that asked for a cursor: the server may answer with the metadata only. */
  cursor?: boolean;
}

type TrackerState = 'first' | 'cols' | 'colsEof' | 'rows' | 'prepParams' | 'prepParamsEof' | 'prepCols' | 'prepColsEof' | 'done' | 'infile';

/**
 * Follows one command's response. feed() every server packet payload in order; it says when the
 * response is complete. Counts result rows (or affected rows) and keeps the first error. What it
 * follows, per shape:
 *   - result sets (COM_QUERY, COM_STMT_EXECUTE): OK | ERR | LOCAL INFILE request | column count
 *     [metadata-follows byte] column definitions [EOF] rows (text or binary) EOF/OK-0xFE | ERR,
 *     chained while the status says SERVER_MORE_RESULTS_EXISTS (multi-statements, CALL with its
 *     result sets and final OK or SIGNALed ERR); with a cursor, the metadata alone;
 *   - COM_STMT_PREPARE: OK(id, columns, params) then parameter and column definitions [EOFs];
 *   - COM_STMT_FETCH: rows then EOF/OK-0xFE (LAST_ROW_SENT or CURSOR_EXISTS) or ERR.
 * Status flags are only believed where they mean something: SERVER_STATUS_CURSOR_EXISTS is also
 * set while a stored procedure has a cursor open, so it ends a response only after a cursor was
 * asked for and without MORE_RESULTS_EXISTS.
 */
export class ResponseTracker {
  rows = 0;
  affected = 0;
  /** The last insert id of the last OK (64-bit unsigned). */
  insertId = 0n;
  warnings = 0;
  error: string | null = null;
  /** For COM_STMT_PREPARE: the statement id and parameter count the server assigned. */
  stmtId: number | null = null;
  params = 0;
  sawResultSet = false;
  /** Packets fed so far (the one that could not be followed is packet number `packets`). */
  packets = 0;
  private st: TrackerState;
  private remaining = 0;
  private prepCols = 0;
  private readonly deprecateEof: boolean;
  private readonly cacheMetadata: boolean;
  private readonly cursor: boolean;

  constructor(private shape: ResponseShape, opts: TrackerOptions) {
    this.deprecateEof = opts.deprecateEof;
    this.cacheMetadata = !!opts.cacheMetadata;
    this.cursor = !!opts.cursor;
    this.st = shape === 'fetch' ? 'rows' : 'first';
    if (shape === 'fetch') this.sawResultSet = true; // rows of the result set a cursor holds
    if (shape === 'none') this.st = 'done';
  }

  get done(): boolean { return this.st === 'done'; }
  /** Where in the response the tracker is (for logs). */
  get state(): string { return this.st; }

  /** After the client finished sending a LOCAL INFILE file, the server answers with OK/ERR. */
  infileSent(): void {
    if (this.st === 'infile') this.st = 'first';
  }

  private fail(p: Buffer): TrackResult {
    try {
      const e = parseErr(p);
      this.error ??= `${e.code} (${e.state}): ${e.message}`;
    } catch {
      this.error ??= 'malformed error packet';
    }
    this.st = 'done';
    return { done: true };
  }

  private finishOrChain(status: number, warnings: number): TrackResult {
    this.warnings += warnings;
    if (status & STATUS.MORE_RESULTS_EXISTS && this.shape === 'resultset') {
      this.st = 'first';
      return { done: false };
    }
    this.st = 'done';
    return { done: true };
  }

  private endOfSet(p: Buffer): TrackResult {
    if (this.deprecateEof) {
      const ok = parseOk(p);
      return this.finishOrChain(ok.status, ok.warnings);
    }
    const eof = parseEof(p);
    return this.finishOrChain(eof.status, eof.warnings);
  }

  feed(p: Buffer): TrackResult {
    this.packets++;
    if (p.length === 0) throw new ProtocolError('empty response packet', 0);
    switch (this.st) {
      case 'done':
        throw new ProtocolError('server sent a packet after the response ended', 0);
      case 'infile':
        throw new ProtocolError('server sent a packet while the client was sending a file', 0);
      case 'first': {
        if (isErr(p)) return this.fail(p);
        if (this.shape === 'single') { this.st = 'done'; return { done: true }; }
        if (this.shape === 'fieldlist') {
          if (isEofLike(p, this.deprecateEof)) { this.st = 'done'; return { done: true }; }
          return { done: false }; // a column definition
        }
        if (this.shape === 'prepare') {
          if (p[0] !== 0x00) throw new ProtocolError('unexpected answer to COM_STMT_PREPARE', 0);
          const c = new Cursor(p);
          c.u8();
          this.stmtId = c.u32('statement id');
          this.prepCols = c.u16('column count');
          this.params = c.u16('parameter count');
          return this.afterPrepHeader();
        }
        if (p[0] === 0x00) {
          const ok = parseOk(p);
          this.affected += Number(ok.affectedRows);
          this.insertId = ok.insertId;
          return this.finishOrChain(ok.status, ok.warnings);
        }
        if (p[0] === 0xfb) {
          this.st = 'infile';
          return { done: false, localInfile: true };
        }
        const c = new Cursor(p);
        const cols = c.lenenc('column count');
        if (cols === 0) throw new ProtocolError('result set without columns', 0);
        let metadata = true;
        if (this.cacheMetadata) {
          const follows = c.u8('metadata follows');
          if (follows > 1) throw new ProtocolError(`invalid metadata-follows flag ${follows}`, c.off - 1);
          metadata = follows === 1;
        }
        this.sawResultSet = true;
        if (!metadata) {
          // the client has the column definitions of this statement already
          this.st = this.deprecateEof ? 'rows' : 'colsEof';
          return { done: false };
        }
        this.remaining = cols;
        this.st = 'cols';
        return { done: false };
      }
      case 'cols':
        if (isErr(p)) return this.fail(p);
        if (--this.remaining === 0) this.st = this.deprecateEof ? 'rows' : 'colsEof';
        return { done: false };
      case 'colsEof': {
        // the server may fail after sending the metadata (e.g. while materialising a cursor)
        if (isErr(p)) return this.fail(p);
        if (!isEofLike(p, false)) throw new ProtocolError(`expected EOF after column definitions, got 0x${p[0]!.toString(16)}`, 0);
        const { status } = parseEof(p);
        if (this.cursor && status & STATUS.CURSOR_EXISTS && !(status & STATUS.MORE_RESULTS_EXISTS)) {
          // a cursor was opened: the rows come with COM_STMT_FETCH
          this.st = 'done';
          return { done: true };
        }
        this.st = 'rows';
        return { done: false };
      }
      case 'rows':
        if (isErr(p)) return this.fail(p);
        if (isEofLike(p, this.deprecateEof)) return this.endOfSet(p);
        this.rows++;
        return { done: false };
      case 'prepParams':
        if (--this.remaining === 0) {
          if (!this.deprecateEof) { this.st = 'prepParamsEof'; return { done: false }; }
          return this.prepColumns();
        }
        return { done: false };
      case 'prepParamsEof':
        if (!isEofLike(p, false)) throw new ProtocolError('expected EOF after parameter definitions', 0);
        return this.prepColumns();
      case 'prepCols':
        if (--this.remaining === 0) {
          if (!this.deprecateEof) { this.st = 'prepColsEof'; return { done: false }; }
          this.st = 'done';
          return { done: true };
        }
        return { done: false };
      case 'prepColsEof':
        if (!isEofLike(p, false)) throw new ProtocolError('expected EOF after column definitions', 0);
        this.st = 'done';
        return { done: true };
    }
  }

  private afterPrepHeader(): TrackResult {
    if (this.params > 0) {
      this.remaining = this.params;
      this.st = 'prepParams';
      return { done: false };
    }
    return this.prepColumns();
  }

  private prepColumns(): TrackResult {
    if (this.prepCols > 0) {
      this.remaining = this.prepCols;
      this.st = 'prepCols';
      return { done: false };
    }
    this.st = 'done';
    return { done: true };
  }
}
