/**
 * T-SQL text as policy needs it: identifiers quoted with QUOTENAME rules, N'' literals escaped,
 * and a batch split into statements for the command rules. T-SQL needs no `;` between
 * statements, so a batch is also split where a statement keyword starts at the top level
 * (outside strings, quoted names, comments and parentheses); the split errs towards more
 * statements: a kind rule may then see a clause as a statement, never miss a statement.
 */

/** QUOTENAME: [name] with ] doubled. Names are sysname (at most 128 characters), never NUL. */
export function quoteName(name: string): string {
  if (!name || name.includes('\0')) throw new Error('an identifier must be non-empty and without NUL');
  if (name.length > 128) throw new Error('an identifier is at most 128 characters');
  return `[${name.replace(/\]/g, ']]')}]`;
}

/** N'...' with ' doubled. */
export function quoteLiteral(s: string): string {
  if (s.includes('\0')) throw new Error('a literal must not contain NUL');
  return `N'${s.replace(/'/g, "''")}'`;
}

/** Keywords that start a statement. */
const STATEMENT = new Set([
  'SELECT', 'INSERT', 'UPDATE', 'DELETE', 'MERGE', 'DROP', 'CREATE', 'ALTER', 'TRUNCATE', 'EXEC', 'EXECUTE', 'GRANT', 'REVOKE',
  'DENY', 'BACKUP', 'RESTORE', 'DBCC', 'USE', 'DECLARE', 'SET', 'BEGIN', 'COMMIT', 'ROLLBACK', 'SAVE', 'IF', 'WHILE', 'RETURN',
  'PRINT', 'RAISERROR', 'THROW', 'KILL', 'SHUTDOWN', 'RECONFIGURE', 'BULK', 'OPEN', 'FETCH', 'CLOSE', 'DEALLOCATE', 'WAITFOR',
  'GOTO', 'BREAK', 'CONTINUE', 'CHECKPOINT', 'READTEXT', 'WRITETEXT', 'UPDATETEXT', 'REVERT', 'SETUSER', 'ENABLE', 'DISABLE',
  'RECEIVE', 'SEND', 'MOVE', 'GET',
]);
/** After these a keyword continues the statement (GRANT SELECT, INSERT, UPDATE ON...; CREATE OR ALTER; UNION SELECT). */
const CONTINUES_AFTER = new Set(['GRANT', 'DENY', 'REVOKE', ',', 'OR', 'UNION', 'ALL', 'EXCEPT', 'INTERSECT']);
/** INSERT/UPDATE/DELETE followed by one of these is a clause (ON DELETE CASCADE, FOR INSERT, UPDATE(col), THEN DELETE WHEN...). */
const DML_CLAUSE_NEXT = new Set([',', ')', '(', ';', '', 'AS', 'OF', 'NOT', 'ON', 'TO', 'CASCADE', 'NO', 'SET', 'INSERT', 'UPDATE', 'DELETE', 'WHEN', 'OUTPUT', 'VALUES', 'DEFAULT', 'WITH']);
/** DROP followed by one of these is an ALTER clause (ALTER TABLE t DROP COLUMN c, ALTER ROLE r DROP MEMBER u). */
const DROP_CLAUSE_NEXT = new Set(['COLUMN', 'CONSTRAINT', 'PERIOD', 'MEMBER', 'FILE', 'FILEGROUP', 'MASKED', 'ROWGUIDCOL', 'PERSISTED', 'SENSITIVITY', 'NOT', '(']);
/** EXECUTE followed by one of these is a permission (GRANT EXECUTE ON / TO). */
const EXEC_CLAUSE_NEXT = new Set(['ON', 'TO', ',']);

interface Tok { text: string; upper: string; start: number; end: number; word: boolean }

const WORD = /[\p{L}\p{N}_@#$]/u;

/** Tokens of code (words and punctuation); strings, quoted names and comments are skipped (they count as one opaque token). */
function tokenize(sql: string): Tok[] {
  const out: Tok[] = [];
  const n = sql.length;
  let i = 0;
  while (i < n) {
    const c = sql[i]!;
    const d = sql[i + 1];
    if (/\s/.test(c)) { i++; continue; }
    if (c === '-' && d === '-') {
      const e = sql.indexOf('\n', i);
      i = e < 0 ? n : e + 1;
      continue;
    }
    if (c === '/' && d === '*') {
      // T-SQL block comments nest.
      let depth = 1;
      i += 2;
      while (i < n && depth > 0) {
        if (sql[i] === '/' && sql[i + 1] === '*') { depth++; i += 2; continue; }
        if (sql[i] === '*' && sql[i + 1] === '/') { depth--; i += 2; continue; }
        i++;
      }
      continue;
    }
    if (c === "'" || c === '"' || c === '[') {
      const close = c === '[' ? ']' : c;
      const start = i;
      i++;
      while (i < n) {
        if (sql[i] === close) {
          if (sql[i + 1] === close) { i += 2; continue; }
          break;
        }
        i++;
      }
      i = Math.min(n, i + 1);
      out.push({ text: sql.slice(start, i), upper: c === '[' || c === '"' ? 'NAME' : 'STRING', start, end: i, word: false });
      continue;
    }
    if (/[0-9]/.test(c) || (c === '.' && d !== undefined && /[0-9]/.test(d))) {
      // A number ends where its digits end: SQL Server reads 1DELETE as 1 then DELETE.
      const m = /^(0[xX][0-9A-Fa-f]*|[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?|[0-9]+\.)/.exec(sql.slice(i, i + 400));
      const len = m ? m[0].length : 1;
      out.push({ text: sql.slice(i, i + len), upper: 'NUMBER', start: i, end: i + len, word: false });
      i += len;
      continue;
    }
    if (WORD.test(c)) {
      const start = i;
      while (i < n && WORD.test(sql[i]!)) i++;
      const text = sql.slice(start, i);
      out.push({ text, upper: text.toUpperCase(), start, end: i, word: true });
      continue;
    }
    out.push({ text: c, upper: c, start: i, end: i + 1, word: false });
    i++;
  }
  return out;
}

export interface Statement {
  /** The statement's text as sent (comments kept, whitespace at the ends trimmed). */
  text: string;
  /** Its first keyword, e.g. SELECT, DROP, EXECUTE ('' when it starts with something else). */
  kind: string;
  /** The first keyword as written (EXEC or EXECUTE). */
  keyword: string;
}

/** The statements of a batch, as the command rules see them. */
export function splitBatch(sql: string): Statement[] {
  const toks = tokenize(sql);
  const out: Statement[] = [];
  let pieceStart = 0;
  let pieceKind = '';
  let pieceWord = '';
  let sawSet = false;
  let depth = 0;
  const close = (end: number) => {
    const text = sql.slice(pieceStart, end).trim();
    if (text) out.push({ text, kind: pieceKind, keyword: pieceWord });
  };
  for (let k = 0; k < toks.length; k++) {
    const t = toks[k]!;
    if (t.text === '(') { depth++; continue; }
    if (t.text === ')') { depth = Math.max(0, depth - 1); continue; }
    if (depth > 0) continue;
    if (t.text === ';') {
      close(t.start);
      pieceStart = t.end;
      pieceKind = '';
      pieceWord = '';
      sawSet = false;
      continue;
    }
    if (!t.word || !STATEMENT.has(t.upper)) continue;
    const prev = toks[k - 1]?.upper ?? '';
    const next = toks[k + 1]?.upper ?? '';
    let continues = CONTINUES_AFTER.has(prev);
    if (!continues && (t.upper === 'INSERT' || t.upper === 'UPDATE' || t.upper === 'DELETE')) continues = DML_CLAUSE_NEXT.has(next);
    if (!continues && t.upper === 'DROP') continues = DROP_CLAUSE_NEXT.has(next);
    if (!continues && (t.upper === 'EXEC' || t.upper === 'EXECUTE')) continues = EXEC_CLAUSE_NEXT.has(next);
    if (!continues && t.upper === 'SET') continues = prev === 'UPDATE' || prev === 'DELETE' || ((pieceKind === 'UPDATE' || pieceKind === 'ALTER' || pieceKind === 'MERGE') && !sawSet);
    if (t.upper === 'SET' && continues) sawSet = true;
    if (k === 0 || (continues && !pieceKind)) {
      pieceKind = kindWord(t.upper);
      pieceWord = t.upper;
      continue;
    }
    if (continues) continue;
    close(t.start);
    pieceStart = t.start;
    pieceKind = kindWord(t.upper);
    pieceWord = t.upper;
    sawSet = false;
  }
  close(sql.length);
  return out;
}

function kindWord(w: string): string {
  return w === 'EXEC' ? 'EXECUTE' : w;
}

/**
 * The kind to pass to the command rules with a statement's text: the rules also read the
 * keywords from the text itself, so passing the other spelling makes EXEC and EXECUTE one kind.
 */
export function ruleKind(s: Statement): string | undefined {
  if (s.keyword === 'EXEC') return 'EXECUTE';
  if (s.keyword === 'EXECUTE') return 'EXEC';
  return s.kind || undefined;
}

/** The kind of a batch: its first statement's. */
export function batchKind(stmts: Statement[]): string {
  return stmts[0]?.kind ?? '';
}
