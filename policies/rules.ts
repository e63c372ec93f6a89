import type { CommandRuleConfig } from './config.js';
import { readShell, type ShellReading, type Uncertainty } from './shell.js';

/**
 * Command rules: what a session may type. A rule matches when every condition it names matches
 * (pattern AND commands AND kinds AND methods AND path). Among matching rules the strongest action
 * wins (kill > deny > alert); between equals, the first in config order.
 *
 * Shell text (kind 'shell' or 'exec', see ./shell.ts): `pattern` matches the raw text OR the
 * normalized text of any simple command (its words after quote removal joined by one space, and
 * each command the wrappers run with its arguments); `commands` matches a command name (basename)
 * the shell runs. SQL text: `kinds` and `pattern` also see the statement text of
 * `PREPARE … FROM '…'` and `EXECUTE IMMEDIATE '…'`.
 *
 * Uncertain text (what the gateway cannot read: $x, $(…), eval of a variable, a DO block, PREPARE
 * from a variable…): when a rule of the role could apply to it, the decision carries `uncertain`;
 * with strict rules (`strictRules: true` on a policy) it is treated like a match of the strictest
 * such rule, with a message that says why. `commands` rules only care about uncertainty that can
 * change which command runs (scope 'command'), pattern rules about any.
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
  /** What in the text the gateway could not read, when a rule of the role could apply to it ("$(…)", "eval of $x"). */
  uncertain?: string[];
  /** The decision comes from strict rules (an uncertain text treated like a match of the strictest rule). */
  strict?: boolean;
}

/** What a protocol tells session.check about a text besides the text itself. */
export interface RuleCheckOptions {
  /** Statement kind (SQL), or 'shell' (a line typed in a terminal) / 'exec' (an SSH exec command). */
  kind?: string;
  channel?: string;
  method?: string;
  path?: string;
  /** SSH: the shell reading of the text, when the protocol made it (e.g. across continuation lines). */
  shell?: ShellReading;
  /** What the protocol itself could not follow (editing keys, a PREPARE from a variable). */
  uncertain?: Uncertainty[];
}

export class RuleCompileError extends Error {
  constructor(readonly index: number, readonly field: string, detail: string) {
    super(`rules[${index}].${field}: ${detail}`);
    this.name = 'RuleCompileError';
  }
}

export interface CompiledRules {
  check(text: string, opts?: RuleCheckOptions): RuleDecision;
  /** How many rules apply to the role the set was compiled for. */
  readonly size: number;
  /** The rules that apply to the role, in config order. */
  readonly list: readonly CommandRuleConfig[];
  readonly strict: boolean;
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
  commands: Set<string> | null;
  kinds: string[][] | null;
  methods: Set<string> | null;
  path: RegExp | null;
  label: string;
}

function words(kind: string): string[] {
  return kind.trim().toUpperCase().split(/\s+/).filter(Boolean);
}

const isShell = (opts: RuleCheckOptions) => opts.shell !== undefined || opts.kind === 'shell' || opts.kind === 'exec';
const isHttp = (opts: RuleCheckOptions) => opts.method !== undefined || opts.path !== undefined;

/** Whether a rule could match a text the gateway cannot fully read, given what it cannot read. */
function couldApply(c: Compiled, shell: boolean, uncertain: Uncertainty[]): boolean {
  if (c.methods || c.path) return false;
  if (c.pattern) return true;
  if (shell) return !!c.commands && uncertain.some((u) => u.scope === 'command');
  return !!c.kinds;
}

/** "$(…), ${x} and eval of $y": what was not readable, for a message. */
function listOf(u: string[]): string {
  const w = u.slice(0, 3);
  const more = u.length > 3 ? ` and ${u.length - 3} more` : '';
  if (w.length === 1) return w[0]! + more;
  return `${w.slice(0, -1).join(', ')}${more ? ', ' : ' and '}${w[w.length - 1]}${more}`;
}

export function compileRules(rules: CommandRuleConfig[], role: string, opts: { strict?: boolean } = {}): CompiledRules {
  const strict = opts.strict === true;
  const compiled: Compiled[] = [];
  rules.forEach((rule, i) => {
    if (rule.roles && rule.roles.length && !rule.roles.some((g) => globMatch(g, role))) return;
    compiled.push(compileOne(rule, i));
  });
  // Rules for other roles are still compiled once so that a bad regex is reported whatever the role.
  rules.forEach((rule, i) => {
    if (rule.roles && rule.roles.length && !rule.roles.some((g) => globMatch(g, role))) compileOne(rule, i);
  });
  const needsShell = compiled.some((c) => c.pattern || c.commands);
  return {
    size: compiled.length,
    list: compiled.map((c) => c.rule),
    strict,
    check(text, opts = {}) {
      const shell = isShell(opts);
      const reading: ShellReading | null = shell && needsShell ? opts.shell ?? readShell(text, { interactive: opts.kind === 'shell' }) : null;
      const uncertain: Uncertainty[] = [...(reading?.uncertain ?? []), ...(opts.uncertain ?? [])];
      // SQL: the text of PREPARE … FROM '…' / EXECUTE IMMEDIATE '…' is checked like a query.
      const sql = !shell && !isHttp(opts) && compiled.length ? sqlReading(text) : null;
      if (sql) uncertain.push(...sql.uncertain);
      const texts = [text, ...(reading ? reading.commands.flatMap((c) => c.texts) : []), ...(sql?.texts ?? [])];
      let kindsOfText: string[][] | null = null;
      const textKinds = () => {
        if (!kindsOfText) {
          kindsOfText = statementKeywords(text);
          for (const inner of sql?.texts ?? []) kindsOfText.push(...statementKeywords(inner));
          if (opts.kind) kindsOfText.push(words(opts.kind));
        }
        return kindsOfText;
      };
      let best: Compiled | null = null;
      for (const c of compiled) {
        if (best && PRIORITY[c.rule.action] <= PRIORITY[best.rule.action]) continue;
        if (c.pattern && !texts.some((t) => c.pattern!.test(t))) continue;
        if (c.commands && !(reading && reading.commands.some((cmd) => cmd.commands.some((n) => c.commands!.has(n))))) continue;
        if (c.methods && !(opts.method && c.methods.has(opts.method.toUpperCase()))) continue;
        if (c.path && !(opts.path !== undefined && c.path.test(trimPath(opts.path)))) continue;
        if (c.kinds) {
          const have = textKinds();
          const hit = c.kinds.some((want) => have.some((h) => want.every((w, k) => h[k] === w)));
          if (!hit) continue;
        }
        best = c;
      }
      // What could not be read matters only where a rule of this role could apply to it.
      const relevant = uncertain.length ? compiled.filter((c) => couldApply(c, shell, uncertain)) : [];
      const what = relevant.length ? [...new Set(uncertain.map((u) => u.what))] : [];
      if (strict && relevant.length) {
        const strictest = relevant.reduce((a, b) => (PRIORITY[b.rule.action] > PRIORITY[a.rule.action] ? b : a));
        if (!best || PRIORITY[strictest.rule.action] > PRIORITY[best.rule.action]) {
          return {
            action: strictest.rule.action,
            message: `Tollgate: this ${shell ? 'line' : 'statement'} uses ${listOf(what)} which the gateway cannot check; strict rules are on for this role`,
            rule: strictest.rule,
            uncertain: what,
            strict: true,
          };
        }
      }
      if (!best) return what.length ? { action: 'allow', message: '', uncertain: what } : { action: 'allow', message: '' };
      return {
        action: best.rule.action,
        message: best.rule.message ?? `Blocked by Tollgate policy: ${best.label}`,
        rule: best.rule,
        ...(what.length ? { uncertain: what } : {}),
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
  let commands: Set<string> | null = null;
  if (rule.commands) {
    if (!rule.commands.length) throw new RuleCompileError(i, 'commands', 'at least one command name');
    const bad = rule.commands.findIndex((c) => !/^[^\s/]+$/.test(c));
    if (bad >= 0) throw new RuleCompileError(i, `commands[${bad}]`, 'a command name such as shutdown (matched against the basename of the command the shell runs; no spaces or slashes)');
    commands = new Set(rule.commands);
  }
  let kinds: string[][] | null = null;
  if (rule.kinds) {
    kinds = rule.kinds.map(words);
    const bad = kinds.findIndex((k) => k.length === 0);
    if (bad >= 0) throw new RuleCompileError(i, `kinds[${bad}]`, 'a statement kind such as DROP or "ALTER SYSTEM"');
  }
  const methods = rule.methods ? new Set(rule.methods.map((m) => m.trim().toUpperCase())) : null;
  const path = rule.path !== undefined ? pathGlobToRegExp(rule.path, rule.caseSensitive === true) : null;
  if (!pattern && !commands && !kinds && !methods && !path) {
    throw new RuleCompileError(i, 'pattern', 'a rule needs a pattern, commands, kinds, methods or path');
  }
  const label = rule.pattern
    ?? (rule.commands ? rule.commands.join(', ')
      : rule.kinds ? rule.kinds.join(', ') : `${rule.methods ? rule.methods.join('|') + ' ' : ''}${rule.path ?? '*'}`);
  return { rule, order: i, pattern, commands, kinds, methods, path, label };
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

/** The code of each statement (strings and comments blanked, or strings kept with `keepStrings`), split on `;`. */
function splitCode(sql: string, dialect: Dialect, keepStrings = false): string[] {
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
      const from = i;
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
      cur += keepStrings ? sql.slice(from, i) : ' _ ';
      continue;
    }
    if (c === '$' && dialect === 'pg') {
      const m = /^\$([A-Za-z_][A-Za-z0-9_]*)?\$/.exec(sql.slice(i, i + 66));
      if (m && !(i > 0 && /[A-Za-z0-9_]/.test(sql[i - 1]!))) {
        const tag = m[0];
        const end = sql.indexOf(tag, i + tag.length);
        const from = i;
        i = end < 0 ? n : end + tag.length;
        cur += keepStrings ? sql.slice(from, i) : ' _ ';
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

/* ------------------------------------------------------------------------------------------ */
/* Statements that run the text of a string                                                   */
/* ------------------------------------------------------------------------------------------ */

const RUNS_TEXT = /^[\s(]*(?:PREPARE\s+(?:`(?:[^`]|``)+`|[A-Za-z0-9_$]+)\s+FROM|EXECUTE\s+IMMEDIATE)\s+/i;
const PG_DO = /^[\s(]*DO\s+(?:LANGUAGE\s+\S+\s+)?_/i;

/**
 * MySQL string literals one after another ('a' 'b' is 'ab'), optionally after a character set
 * introducer (_utf8mb4'…', N'…'), decoded with backslash escapes (`escapes`) or without them
 * (NO_BACKSLASH_ESCAPES). null when the text is anything else (a variable, CONCAT(…), 0x…).
 */
function mysqlLiterals(s: string, escapes: boolean): string | null {
  let i = 0;
  let out = '';
  let any = false;
  const n = s.length;
  for (;;) {
    while (i < n && /\s/.test(s[i]!)) i++;
    if (i >= n) return any ? out : null;
    const intro = /^(?:_[A-Za-z0-9]+|[Nn])\s*(?=['"])/.exec(s.slice(i, i + 40));
    if (intro) i += intro[0].length;
    const q = s[i];
    if (q !== "'" && q !== '"') return null;
    i++;
    let closed = false;
    while (i < n) {
      const c = s[i]!;
      if (escapes && c === '\\' && i + 1 < n) {
        const e = s[i + 1]!;
        const map: Record<string, string> = { n: '\n', t: '\t', r: '\r', b: '\b', '0': '\0', Z: '\x1a', '%': '\\%', _: '\\_' };
        out += map[e] ?? e;
        i += 2;
        continue;
      }
      if (c === q) {
        if (s[i + 1] === q) { out += q; i += 2; continue; }
        i++;
        closed = true;
        break;
      }
      out += c;
      i++;
    }
    if (!closed) return null;
    any = true;
  }
}

/**
 * What a SQL text runs beyond its own statements: the texts of PREPARE … FROM '…' and EXECUTE
 * IMMEDIATE '…' (MySQL/MariaDB; both decodings of backslashes), and what the gateway cannot read:
 * those statements with a variable or an expression, PostgreSQL DO blocks.
 */
export function sqlReading(sql: string, depth = 0): { texts: string[]; uncertain: Uncertainty[] } {
  const texts: string[] = [];
  const uncertain: Uncertainty[] = [];
  if (!/\b(PREPARE|EXECUTE|DO)\b/i.test(sql)) return { texts, uncertain };
  for (const code of splitCode(sql, 'pg')) {
    if (PG_DO.test(code)) uncertain.push({ what: 'a DO block', scope: 'command' });
  }
  for (const stmt of splitCode(sql, 'mysql', true)) {
    const m = RUNS_TEXT.exec(stmt);
    if (!m) continue;
    const rest = stmt.slice(m[0].length).replace(/\s+/g, ' ').trim();
    const head = m[0].trim().replace(/\s+/g, ' ').replace(/^\(+/, '');
    const decoded = [...new Set([mysqlLiterals(rest, true), mysqlLiterals(rest, false)].filter((x): x is string => x !== null))];
    if (!decoded.length) {
      uncertain.push({ what: `${head} ${rest.length > 30 ? `${rest.slice(0, 29)}…` : rest}`, scope: 'command' });
      continue;
    }
    for (const d of decoded) {
      texts.push(d);
      if (depth < 4) {
        const inner = sqlReading(d, depth + 1);
        texts.push(...inner.texts);
        uncertain.push(...inner.uncertain);
      }
    }
  }
  return { texts, uncertain };
}
