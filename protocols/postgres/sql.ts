/**
 * Just enough SQL lexing for policy and audit: split a simple-query string into statements and
 * name each statement's kind from its first keywords. Pure functions; quoting-aware (strings,
 * E'' escapes, quoted identifiers, dollar quotes, line and nested block comments).
 */
import { statementKind } from '../../policies/rules.js';

interface Token { t: 'word' | 'open' | 'close' | 'other'; v: string }

/** Walk the SQL; calls onToken for each top-level token and onSemicolon at statement boundaries. */
function scan(sql: string, onToken: (tok: Token, start: number) => void, onSemicolon: (at: number) => void): void {
  const n = sql.length;
  let i = 0;
  while (i < n) {
    const c = sql[i]!;
    const next = sql[i + 1];
    if (c === '-' && next === '-') {
      const e = sql.indexOf('\n', i);
      i = e < 0 ? n : e + 1;
    } else if (c === '/' && next === '*') {
      let depth = 1;
      i += 2;
      while (i < n && depth > 0) {
        if (sql[i] === '/' && sql[i + 1] === '*') { depth++; i += 2; }
        else if (sql[i] === '*' && sql[i + 1] === '/') { depth--; i += 2; }
        else i++;
      }
    } else if (c === "'" || ((c === 'E' || c === 'e') && next === "'" && !/[\w$]/.test(sql[i - 1] ?? ' '))) {
      const escapes = c !== "'";
      const start = i;
      i += escapes ? 2 : 1;
      while (i < n) {
        if (escapes && sql[i] === '\\') { i += 2; continue; }
        if (sql[i] === "'") {
          if (sql[i + 1] === "'") { i += 2; continue; }
          i++;
          break;
        }
        i++;
      }
      onToken({ t: 'other', v: "'" }, start);
    } else if (c === '"') {
      const start = i;
      i++;
      while (i < n) {
        if (sql[i] === '"') {
          if (sql[i + 1] === '"') { i += 2; continue; }
          i++;
          break;
        }
        i++;
      }
      onToken({ t: 'other', v: sql.slice(start, i) }, start);
    } else if (c === '$' && !/[\w$]/.test(sql[i - 1] ?? ' ')) {
      const m = /^\$([A-Za-z_\u0080-\uffff][\w\u0080-\uffff]*)?\$/.exec(sql.slice(i, i + 70));
      if (m) {
        const tag = m[0];
        const end = sql.indexOf(tag, i + tag.length);
        const start = i;
        i = end < 0 ? n : end + tag.length;
        onToken({ t: 'other', v: '$' }, start);
      } else {
        i++;
      }
    } else if (c === ';') {
      onSemicolon(i);
      i++;
    } else if (c === '(') {
      onToken({ t: 'open', v: c }, i);
      i++;
    } else if (c === ')') {
      onToken({ t: 'close', v: c }, i);
      i++;
    } else if (/[A-Za-z_\u0080-\uffff]/.test(c)) {
      const start = i;
      while (i < n && /[\w$\u0080-\uffff]/.test(sql[i]!)) i++;
      onToken({ t: 'word', v: sql.slice(start, i) }, start);
    } else if (/\s/.test(c)) {
      i++;
    } else {
      onToken({ t: 'other', v: c }, i);
      i++;
    }
  }
}

/** Split a simple-query string into its statements (comment-only pieces are dropped). */
export function splitStatements(sql: string): string[] {
  const out: string[] = [];
  let hasToken = false;
  let first = -1;
  scan(sql, (_tok, at) => {
    if (!hasToken) first = at;
    hasToken = true;
  }, (at) => {
    if (hasToken) out.push(sql.slice(first, at).trim());
    hasToken = false;
  });
  if (hasToken) out.push(sql.slice(first).trim());
  return out;
}

function words(sql: string, limit = 400): { v: string; depth: number }[] {
  const out: { v: string; depth: number }[] = [];
  let depth = 0;
  let stopped = false;
  scan(sql, (tok) => {
    if (stopped || out.length >= limit) return;
    if (tok.t === 'open') depth++;
    else if (tok.t === 'close') depth = Math.max(0, depth - 1);
    else if (tok.t === 'word') out.push({ v: tok.v.toUpperCase(), depth });
    else out.push({ v: tok.v, depth });
  }, () => { stopped = true; });
  return out;
}

const MAIN = new Set(['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'MERGE', 'VALUES', 'TABLE']);

/**
 * The statement's kind for rules and the query log: policies' statementKind (first keyword,
 * "ALTER SYSTEM", "COPY PROGRAM"), except that a WITH query reports its main statement
 * (WITH x AS (...) DELETE ... is DELETE), so kind rules see through CTEs.
 */
export function kindOf(sql: string): string | null {
  const k = statementKind(sql);
  if (k !== 'WITH') return k;
  const top = words(sql).filter((x) => x.depth === 0);
  for (let i = 1; i < top.length; i++) {
    const v = top[i]!.v;
    if (MAIN.has(v) && top[i + 1]?.v !== 'AS') return v;
  }
  return 'WITH';
}
