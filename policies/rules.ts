import type { CommandRuleConfig } from './config.js';

/**
 * Command rules: what a session may type. A rule matches when every condition it names matches
 * (pattern AND kinds AND methods AND path). Among matching rules the strongest action wins
 * (kill > deny > alert); between equals, the first in config order.
 *
 * HTTP paths: the protocol module hands over the normalized path (decoded, dot segments and `;`
 * parameters gone, see protocols/http/routing.ts rulePath). A path glob matches case-insensitively
 * unless the rule says `caseSensitive: true`, ignores a trailing slash, and `/admin/*` also matches
 * `/admin` itself.
 */

/** What a rule check says about one command, statement or request. */
export interface RuleDecision {
  action: 'allow' | 'deny' | 'kill' | 'alert';
  /** What to show the person (deny/kill). */
  message: string;
  rule?: CommandRuleConfig;
}

export class RuleCompileError extends Error {
  constructor(readonly index: number, readonly field: string, detail: string) {
    super(`rules[${index}].${field}: ${detail}`);
    this.name = 'RuleCompileError';
  }
}

export interface CompiledRules {
  check(text: string, opts?: { kind?: string; method?: string; path?: string }): RuleDecision;
  /** How many rules apply to the role the set was compiled for. */
  readonly size: number;
}

/** `*` matches any run of characters; everything else is literal. */
export function globToRegExp(glob: string, flags = ''): RegExp {
  const body = glob.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\/]/g, '\\$&')).join('.*');
  return new RegExp(`^${body}$`, flags);
}

/** An HTTP path glob: `/x/*` also matches `/x`; a trailing slash on the glob is ignored. */
export function pathGlobToRegExp(glob: string, caseSensitive = false): RegExp {
  const flags = caseSensitive ? '' : 'i';
  const trimmed = glob.length > 1 ? glob.replace(/\/+$/, '') : glob;
  if (trimmed.endsWith('/*')) {
    const parent = globToRegExp(trimmed.slice(0, -2), flags).source.slice(1, -1);
    return new RegExp(`^${parent}(?:/.*)?$`, flags);
  }
  return globToRegExp(trimmed, flags);
}

/** A trailing slash never changes what a path rule sees. */
function trimPath(p: string): string {
  return p.length > 1 && p.endsWith('/') ? p.replace(/\/+$/, '') || '/' : p;
}

export function globMatch(glob: string, value: string): boolean {
  if (glob === '*') return true;
  if (!glob.includes('*')) return glob === value;
  return globToRegExp(glob).test(value);
}

const PRIORITY: Record<CommandRuleConfig['action'], number> = { kill: 3, deny: 2, alert: 1 };

interface Compiled {
  rule: CommandRuleConfig;
  order: number;
  pattern: RegExp | null;
  kinds: string[][] | null;
  methods: Set<string> | null;
  path: RegExp | null;
  label: string;
}

function words(kind: string): string[] {
  return kind.trim().toUpperCase().split(/\s+/).filter(Boolean);
}

export function compileRules(rules: CommandRuleConfig[], role: string): CompiledRules {
  const compiled: Compiled[] = [];
  rules.forEach((rule, i) => {
    if (rule.roles && rule.roles.length && !rule.roles.some((g) => globMatch(g, role))) return;
    compiled.push(compileOne(rule, i));
  });
  // Rules for other roles are still compiled once so that a bad regex is reported whatever the role.
  rules.forEach((rule, i) => {
    if (rule.roles && rule.roles.length && !rule.roles.some((g) => globMatch(g, role))) compileOne(rule, i);
  });
  return {
    size: compiled.length,
    check(text, opts = {}) {
      let kindsOfText: string[][] | null = null;
      const textKinds = () => {
        if (!kindsOfText) {
          kindsOfText = statementKeywords(text);
          if (opts.kind) kindsOfText.push(words(opts.kind));
        }
        return kindsOfText;
      };
      let best: Compiled | null = null;
      for (const c of compiled) {
        if (best && PRIORITY[c.rule.action] <= PRIORITY[best.rule.action]) continue;
        if (c.pattern && !c.pattern.test(text)) continue;
        if (c.methods && !(opts.method && c.methods.has(opts.method.toUpperCase()))) continue;
        if (c.path && !(opts.path !== undefined && c.path.test(trimPath(opts.path)))) continue;
        if (c.kinds) {
          const have = textKinds();
          const hit = c.kinds.some((want) => have.some((h) => want.every((w, k) => h[k] === w)));
          if (!hit) continue;
        }
        best = c;
      }
      if (!best) return { action: 'allow', message: '' };
      return {
        action: best.rule.action,
        message: best.rule.message ?? `Blocked by Tollgate policy: ${best.label}`,
        rule: best.rule,
      };
    },
  };
}

function compileOne(rule: CommandRuleConfig, i: number): Compiled {
  let pattern: RegExp | null = null;
  if (rule.pattern !== undefined) {
    if (rule.pattern === '') throw new RuleCompileError(i, 'pattern', 'an empty pattern would match everything');
    try {
      pattern = new RegExp(rule.pattern, 'i');
    } catch (e) {
      throw new RuleCompileError(i, 'pattern', `not a valid regular expression (${(e as Error).message})`);
    }
  }
  let kinds: string[][] | null = null;
  if (rule.kinds) {
    kinds = rule.kinds.map(words);
    const bad = kinds.findIndex((k) => k.length === 0);
    if (bad >= 0) throw new RuleCompileError(i, `kinds[${bad}]`, 'a statement kind such as DROP or "ALTER SYSTEM"');
  }
  const methods = rule.methods ? new Set(rule.methods.map((m) => m.trim().toUpperCase())) : null;
  const path = rule.path !== undefined ? pathGlobToRegExp(rule.path, rule.caseSensitive === true) : null;
  if (!pattern && !kinds && !methods && !path) {
    throw new RuleCompileError(i, 'pattern', 'a rule needs a pattern, kinds, methods or path');
  }
  const label = rule.pattern
    ?? (rule.kinds ? rule.kinds.join(', ') : `${rule.methods ? rule.methods.join('|') + ' ' : ''}${rule.path ?? '*'}`);
  return { rule, order: i, pattern, kinds, methods, path, label };
}

/* ------------------------------------------------------------------------------------------ */
/* Statement kinds                                                                            */
/* ------------------------------------------------------------------------------------------ */

/**
 * SQL dialects disagree on comments and quoting (PostgreSQL: dollar quotes, nested block comments,
 * no backslash escapes; MySQL: backslash escapes, `#` and `-- ` comments, executable comments
 * `/*! ... *\/`). A text is read once per dialect and the kinds found are united, so quoting
 * tricks that hide a statement from one reading are still seen by the other.
 */
type Dialect = 'pg' | 'mysql';

/** The code of each statement (strings and comments blanked), split on `;`. */
function splitCode(sql: string, dialect: Dialect): string[] {
  const out: string[] = [];
  let cur = '';
  let i = 0;
  const n = sql.length;
  const special = /[-#/*'"`$;]/g;
  while (i < n) {
    // Copy plain code up to the next character that may start a comment, quote or separator.
    special.lastIndex = i;
    const next = special.exec(sql);
    const j = next ? next.index : n;
    if (j > i) { cur += sql.slice(i, j); i = j; }
    if (i >= n) break;
    const c = sql[i]!;
    const d = sql[i + 1];
    if (c === '-' && d === '-' && (dialect === 'pg' || i + 2 >= n || /\s/.test(sql[i + 2]!))) {
      const end = sql.indexOf('\n', i);
      i = end < 0 ? n : end + 1;
      cur += ' ';
      continue;
    }
    if (c === '#' && dialect === 'mysql') {
      const end = sql.indexOf('\n', i);
      i = end < 0 ? n : end + 1;
      cur += ' ';
      continue;
    }
    if (c === '/' && d === '*') {
      if (dialect === 'mysql' && (sql[i + 2] === '!' || sql[i + 2] === '+')) {
        // Executable comment: its content runs. Skip the marker and version digits.
        i += 3;
        while (i < n && /\d/.test(sql[i]!)) i++;
        cur += ' ';
        continue;
      }
      let depth = 1;
      i += 2;
      while (i < n && depth > 0) {
        if (sql[i] === '*' && sql[i + 1] === '/') { depth--; i += 2; continue; }
        if (dialect === 'pg' && sql[i] === '/' && sql[i + 1] === '*') { depth++; i += 2; continue; }
        i++;
      }
      cur += ' ';
      continue;
    }
    if (c === '*' && d === '/' && dialect === 'mysql') { i += 2; cur += ' '; continue; }
    if (c === "'" || c === '"' || c === '`') {
      i++;
      while (i < n) {
        if (dialect === 'mysql' && sql[i] === '\\' && c !== '`') { i += 2; continue; }
        if (sql[i] === c) {
          if (sql[i + 1] === c) { i += 2; continue; }
          break;
        }
        i++;
      }
      i++;
      cur += ' _ ';
      continue;
    }
    if (c === '$' && dialect === 'pg') {
      const m = /^\$([A-Za-z_][A-Za-z0-9_]*)?\$/.exec(sql.slice(i, i + 66));
      if (m && !(i > 0 && /[A-Za-z0-9_]/.test(sql[i - 1]!))) {
        const tag = m[0];
        const end = sql.indexOf(tag, i + tag.length);
        i = end < 0 ? n : end + tag.length;
        cur += ' _ ';
        continue;
      }
    }
    if (c === ';') {
      out.push(cur);
      cur = '';
      i++;
      continue;
    }
    cur += c;
    i++;
  }
  out.push(cur);
  return out;
}

const KEYWORD_WORDS = 4;
const LEAD = /[\s(]*([A-Za-z_]+(?:\s+[A-Za-z_]+){0,3})/y;

/** The leading keywords of code at offset `from` (whitespace and opening parentheses skipped). */
function keywordsOf(code: string, from = 0): string[] | null {
  LEAD.lastIndex = from;
  const m = LEAD.exec(code);
  if (!m) return null;
  const w = m[1]!.toUpperCase().split(/\s+/).slice(0, KEYWORD_WORDS);
  if (w[0] === 'COPY' && /\bPROGRAM\b/i.test(code.slice(from))) return ['COPY', 'PROGRAM', ...w.slice(1)];
  return w;
}

/**
 * Statements that run other statements: the inner ones are kinds too, so a DELETE rule also sees
 * `WITH x AS (DELETE ...) SELECT`, `EXPLAIN ANALYZE DELETE ...` and `PREPARE p AS DELETE ...`.
 * (Text inside strings and dollar quotes - DO blocks, EXECUTE 'sql' - stays out of reach of kinds;
 * pattern rules see the raw text.)
 */
function innerKeywords(code: string, first: string): string[][] {
  const out: string[][] = [];
  const at = (from: number) => { const k = keywordsOf(code, from); if (k) out.push(k); };
  if (first === 'WITH') {
    for (const m of code.matchAll(/[()]\s*(?=[A-Za-z_])/g)) at(m.index + m[0].length);
  } else if (first === 'EXPLAIN') {
    const m = /^[\s(]*EXPLAIN(\s*\([^)]*\))?(\s+(ANALYZE|ANALYSE|VERBOSE)\b)*/i.exec(code);
    if (m) at(m[0].length);
  } else if (first === 'PREPARE') {
    const m = /\bAS\b/i.exec(code);
    if (m) at(m.index + 2);
  }
  return out;
}

/** Leading keywords of every statement in the text, as every dialect reading sees them. */
export function statementKeywords(sql: string): string[][] {
  const seen = new Set<string>();
  const out: string[][] = [];
  const add = (k: string[]) => {
    const key = k.join(' ');
    if (seen.has(key)) return;
    seen.add(key);
    out.push(k);
  };
  for (const dialect of ['pg', 'mysql'] as const) {
    for (const code of splitCode(sql, dialect)) {
      const k = keywordsOf(code);
      if (!k) continue;
      add(k);
      for (const inner of innerKeywords(code, k[0]!)) add(inner);
    }
  }
  return out;
}

/**
 * The kind of the first statement: its first keyword upper-cased, or "ALTER SYSTEM",
 * "COPY PROGRAM" for those. Comments and leading whitespace are skipped. null when there is none.
 */
export function statementKind(sql: string): string | null {
  for (const code of splitCode(sql, 'pg')) {
    const k = keywordsOf(code);
    if (!k) continue;
    if (k[0] === 'COPY' && k[1] === 'PROGRAM') return 'COPY PROGRAM';
    if (k[0] === 'ALTER' && k[1] === 'SYSTEM') return 'ALTER SYSTEM';
    return k[0]!;
  }
  return null;
}
