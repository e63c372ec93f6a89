/**
 * Split a psql script (a regression .sql file) into the SQL statements psql would send, for the
 * extended-protocol run. psql-only parts are left out, each with its reason: meta-commands
 * (`\set`, `\d`…), statements sent with `\g`/`\gset`/`\gexec`/`\;` and statements that use psql
 * variables. `COPY … FROM stdin` keeps its inline data (sent as CopyData).
 * Lexing follows psql's rules where they matter for splitting: quotes, E'' escapes, quoted
 * identifiers, dollar quotes, `--` and nested block comments, and semicolons only at
 * parenthesis depth 0 (CREATE RULE … DO (a; b)).
 */

export interface ScriptStatement {
  /** 1-based line where the statement starts. */
  line: number;
  text: string;
  /** Inline data of COPY … FROM stdin (lines up to `\.`), with newlines. */
  copyData?: string;
}

export interface ScriptSplit {
  statements: ScriptStatement[];
  /** What was left out, with the line and why. */
  skipped: { line: number; why: string }[];
}

const SEND_META = /^\\(g|gx|gset|gexec|gdesc|watch|crosstabview|;)(?![A-Za-z])/;

export function splitPsqlScript(sql: string): ScriptSplit {
  const statements: ScriptStatement[] = [];
  const skipped: { line: number; why: string }[] = [];
  const vars = new Set<string>();
  let anyGset = false;
  let buf = '';
  let bufLine = 0;
  let depth = 0;
  let line = 1;
  let i = 0;
  const n = sql.length;
  let usesVar = false;
  let ifDepth = 0;

  const lineEnd = (from: number) => { const e = sql.indexOf('\n', from); return e < 0 ? n : e; };
  const add = (s: string) => {
    if (!buf.trim() && !s.trim()) { buf += s; return; }
    if (!buf.trim()) bufLine = line;
    buf += s;
  };
  const reset = () => { buf = ''; depth = 0; usesVar = false; };
  const finish = () => {
    const text = buf.trim();
    const start = bufLine;
    const hadVar = usesVar;
    reset();
    if (!text || /^;*$/.test(text) || !stripComments(text)) return;
    if (ifDepth > 0) { skipped.push({ line: start, why: 'inside a psql \\if block' }); return; }
    if (hadVar) { skipped.push({ line: start, why: 'uses a psql variable' }); return; }
    const st: ScriptStatement = { line: start, text: text.replace(/;$/, '') };
    if (/^\s*copy\b[\s\S]*\bfrom\s+stdin\b/i.test(stripComments(text))) {
      // The data follows on the next lines up to a line "\.".
      const nl = sql.indexOf('\n', i);
      let at = nl < 0 ? n : nl + 1;
      if (nl >= 0) line++;
      let data = '';
      for (;;) {
        if (at >= n) break;
        const e = lineEnd(at);
        const l = sql.slice(at, e);
        at = e + 1;
        line++;
        if (l === '\\.') break;
        data += l + '\n';
      }
      i = Math.min(at, n);
      st.copyData = data;
    }
    statements.push(st);
  };

  while (i < n) {
    const c = sql[i]!;
    const next = sql[i + 1];
    if (c === '\n') { add(c); line++; i++; continue; }
    if (c === '-' && next === '-') {
      // psql drops `--` comments before a statement's first token (they are whitespace to it).
      const e = lineEnd(i);
      if (buf.trim()) add(sql.slice(i, e));
      i = e;
      continue;
    }
    if (c === '/' && next === '*') {
      let d = 1;
      let j = i + 2;
      while (j < n && d > 0) {
        if (sql[j] === '/' && sql[j + 1] === '*') { d++; j += 2; } else if (sql[j] === '*' && sql[j + 1] === '/') { d--; j += 2; } else j++;
      }
      const s = sql.slice(i, j);
      add(s);
      line += count(s, '\n');
      i = j;
      continue;
    }
    if (c === "'" || ((c === 'E' || c === 'e') && next === "'" && !/[\w$]/.test(sql[i - 1] ?? ' '))) {
      const escapes = c !== "'";
      let j = i + (escapes ? 2 : 1);
      while (j < n) {
        if (escapes && sql[j] === '\\') { j += 2; continue; }
        if (sql[j] === "'") { if (sql[j + 1] === "'") { j += 2; continue; } j++; break; }
        j++;
      }
      const s = sql.slice(i, j);
      add(s);
      line += count(s, '\n');
      i = j;
      continue;
    }
    if (c === '"') {
      let j = i + 1;
      while (j < n) { if (sql[j] === '"') { if (sql[j + 1] === '"') { j += 2; continue; } j++; break; } j++; }
      const s = sql.slice(i, j);
      add(s);
      line += count(s, '\n');
      i = j;
      continue;
    }
    if (c === '$' && !/[\w$]/.test(sql[i - 1] ?? ' ')) {
      const m = /^\$([A-Za-z_\u0080-\uffff][\w\u0080-\uffff]*)?\$/.exec(sql.slice(i, i + 70));
      if (m) {
        const end = sql.indexOf(m[0], i + m[0].length);
        const j = end < 0 ? n : end + m[0].length;
        const s = sql.slice(i, j);
        add(s);
        line += count(s, '\n');
        i = j;
        continue;
      }
    }
    if (c === ':' && next !== ':' && sql[i - 1] !== ':') {
      // :'name' and :"name" are psql's quoting forms; a bare :name only when psql has such a variable.
      const m = /^:(?:'([A-Za-z_]\w*)'|"([A-Za-z_]\w*)"|([A-Za-z_]\w*))/.exec(sql.slice(i, i + 80));
      if (m && (m[3] === undefined || vars.has(m[3]) || anyGset)) usesVar = true;
    }
    if (c === '\\') {
      const e = lineEnd(i);
      const meta = sql.slice(i, e);
      const setVar = /^\\(?:set|getenv)\s+([A-Za-z_]\w*)/.exec(meta);
      if (setVar) vars.add(setVar[1]!);
      if (/^\\gset/.test(meta)) anyGset = true;
      if (/^\\if\b/.test(meta)) ifDepth++;
      if (/^\\endif\b/.test(meta)) ifDepth = Math.max(0, ifDepth - 1);
      if (buf.trim()) {
        if (SEND_META.test(meta)) {
          skipped.push({ line: bufLine, why: `sent by psql ${meta.split(/\s/)[0]}` });
          reset();
        } else {
          // A meta-command inside a statement (e.g. \r, \p, \echo): psql keeps the buffer.
          skipped.push({ line, why: `psql meta-command ${meta.split(/\s/)[0]}` });
        }
      } else {
        skipped.push({ line, why: `psql meta-command ${meta.split(/\s/)[0]}` });
        buf = '';
      }
      i = e;
      continue;
    }
    if (c === '(') depth++;
    if (c === ')') depth = Math.max(0, depth - 1);
    if (c === ';' && depth === 0) {
      add(c);
      i++;
      finish();
      continue;
    }
    add(c);
    i++;
  }
  if (buf.trim() && stripComments(buf.trim())) skipped.push({ line: bufLine, why: 'unterminated statement at the end (psql does not send it)' });
  return { statements, skipped };
}

function count(s: string, ch: string): number {
  let k = 0;
  for (const c of s) if (c === ch) k++;
  return k;
}

/** The text without comments (for "is there anything left" and the COPY check). */
function stripComments(s: string): string {
  return s.replace(/--[^\n]*/g, '').replace(/\/\*[\s\S]*?\*\//g, '').trim();
}
