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
    case COM.STATISTICS:
    case COM.PROCESS_KILL:
    case COM.REFRESH:
    case COM.STMT_RESET:
    case COM.SET_OPTION:
    case COM.RESET_CONNECTION:
    case COM.DEBUG:
    case COM.PROCESS_INFO:
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

/**
 * Follows one command's response. feed() every server packet payload in order; it says when the
 * response is complete. Counts result rows (or affected rows) and keeps the first error.
 */
export class ResponseTracker {
  rows = 0;
  affected = 0;
  error: string | null = null;
  /** For COM_STMT_PREPARE: the statement id and parameter count the server assigned. */
  stmtId: number | null = null;
  params = 0;
  sawResultSet = false;
  private state: 'first' | 'cols' | 'colsEof' | 'rows' | 'prepParams' | 'prepParamsEof' | 'prepCols' | 'prepColsEof' | 'done' | 'infile';
  private remaining = 0;
  private prepCols = 0;

  constructor(private shape: ResponseShape, private deprecateEof: boolean) {
    this.state = shape === 'fetch' ? 'rows' : 'first';
    if (shape === 'none') this.state = 'done';
  }

  get done(): boolean { return this.state === 'done'; }

  /** After the client finished sending a LOCAL INFILE file, the server answers with OK/ERR. */
  infileSent(): void {
    if (this.state === 'infile') this.state = 'first';
  }

  private fail(p: Buffer): TrackResult {
    try {
      const e = parseErr(p);
      this.error ??= `${e.code} (${e.state}): ${e.message}`;
    } catch {
      this.error ??= 'malformed error packet';
    }
    this.state = 'done';
    return { done: true };
  }

  private endOfSet(p: Buffer): TrackResult {
    const status = this.deprecateEof ? parseOk(p).status : parseEof(p).status;
    if (status & STATUS.MORE_RESULTS_EXISTS && this.shape === 'resultset') {
      this.state = 'first';
      return { done: false };
    }
    this.state = 'done';
    return { done: true };
  }

  feed(p: Buffer): TrackResult {
    switch (this.state) {
      case 'done':
        throw new ProtocolError('server sent a packet after the response ended');
      case 'infile':
        throw new ProtocolError('server sent a packet while the client was sending a file');
      case 'first': {
        if (p.length === 0) throw new ProtocolError('empty response packet');
        if (isErr(p)) return this.fail(p);
        if (this.shape === 'single' ) { this.state = 'done'; return { done: true }; }
        if (this.shape === 'fieldlist') {
          if (isEofLike(p, this.deprecateEof)) { this.state = 'done'; return { done: true }; }
          return { done: false }; // a column definition
        }
        if (this.shape === 'prepare') {
          if (p[0] !== 0x00) throw new ProtocolError('unexpected answer to COM_STMT_PREPARE');
          const c = new Cursor(p);
          c.u8();
          this.stmtId = c.u32('statement id');
          this.prepCols = c.u16('column count');
          this.params = c.u16('parameter count');
          return this.afterPrepHeader();
        }
        if (p[0] === 0x00) {
          const ok = parseOk(p);
          this.affected += ok.affectedRows;
          if (ok.status & STATUS.MORE_RESULTS_EXISTS) return { done: false };
          this.state = 'done';
          return { done: true };
        }
        if (p[0] === 0xfb) {
          this.state = 'infile';
          return { done: false, localInfile: true };
        }
        const c = new Cursor(p);
        const cols = c.lenenc('column count');
        if (cols === 0) throw new ProtocolError('result set without columns');
        this.sawResultSet = true;
        this.remaining = cols;
        this.state = 'cols';
        return { done: false };
      }
      case 'cols':
        if (isErr(p)) return this.fail(p);
        if (--this.remaining === 0) this.state = this.deprecateEof ? 'rows' : 'colsEof';
        return { done: false };
      case 'colsEof': {
        if (!isEofLike(p, false)) throw new ProtocolError('expected EOF after column definitions');
        const { status } = parseEof(p);
        if (status & STATUS.CURSOR_EXISTS) { this.state = 'done'; return { done: true }; }
        this.state = 'rows';
        return { done: false };
      }
      case 'rows':
        if (isErr(p)) return this.fail(p);
        if (isEofLike(p, this.deprecateEof)) return this.endOfSet(p);
        this.rows++;
        return { done: false };
      case 'prepParams':
        if (--this.remaining === 0) {
          if (!this.deprecateEof) { this.state = 'prepParamsEof'; return { done: false }; }
          return this.prepColumns();
        }
        return { done: false };
      case 'prepParamsEof':
        if (!isEofLike(p, false)) throw new ProtocolError('expected EOF after parameter definitions');
        return this.prepColumns();
      case 'prepCols':
        if (--this.remaining === 0) {
          if (!this.deprecateEof) { this.state = 'prepColsEof'; return { done: false }; }
          this.state = 'done';
          return { done: true };
        }
        return { done: false };
      case 'prepColsEof':
        if (!isEofLike(p, false)) throw new ProtocolError('expected EOF after column definitions');
        this.state = 'done';
        return { done: true };
    }
  }

  private afterPrepHeader(): TrackResult {
    if (this.params > 0) {
      this.remaining = this.params;
      this.state = 'prepParams';
      return { done: false };
    }
    return this.prepColumns();
  }

  private prepColumns(): TrackResult {
    if (this.prepCols > 0) {
      this.remaining = this.prepCols;
      this.state = 'prepCols';
      return { done: false };
    }
    this.state = 'done';
    return { done: true };
  }
}
