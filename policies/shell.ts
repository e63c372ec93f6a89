/**
 * A POSIX/bash reading of a command line, as the shell will see it, so command rules match the
 * words the shell runs instead of the characters typed.
 *
 * Done here: quote removal ('…', "…", $'…' with its escapes decoded, $"…"), backslash removal,
 * line continuation, comments, brace expansion ({a,b}, {1..3}), control operators (; & && || | |&
 * newline, case's ;; ;& ;;&), subshells ( … ), groups { …; }, if/while/until/for/case/select,
 * [[ … ]], (( … )), function definitions, redirections and here-documents. Command substitutions
 * ($(…), `…`), process substitutions and the strings handed to `eval`, `sh -c`, `su -c`, `env -S`,
 * `watch`, `trap`, `find -exec` and here-strings / literal here-documents fed to a shell are read
 * recursively, so what they run is seen too. Wrapper commands (sudo, env, timeout, nohup, …; see
 * WRAPPERS) expose the command they run: `sudo /sbin/shutdown` runs `sudo` and `shutdown`.
 *
 * What only running the shell can tell - parameter expansion ($x, ${x}), command substitution
 * output, arithmetic, globs, history recall (!!, ^a^b), eval/sh -c of a non-literal, source,
 * aliases, a shell reading a script file or a pipe - makes the reading *uncertain*, with a scope:
 * `command` when it can change which command runs, `argument` when only the arguments of a known
 * command are unknown.
 *
 * Pure and bounded: never throws (an internal failure is reported as an uncertainty), reads at most
 * MAX_SHELL_TEXT characters, nests at most MAX_DEPTH levels, expands at most MAX_BRACE_WORDS
 * words per word.
 */

export type UncertainScope = 'command' | 'argument';

export interface Uncertainty {
  /** What the gateway cannot read, as shown to people: "$(…)", "${x}", "eval of $cmd", "history recall (!!)". */
  what: string;
  scope: UncertainScope;
}

export interface ShellCommand {
  /** The words after quote removal and brace expansion (assignments and redirections left out). */
  words: string[];
  /** The commands this simple command runs, as basenames: the command word, then what wrappers run (`sudo env X=1 /sbin/shutdown` → sudo, env, shutdown). */
  commands: string[];
  /** Normalized texts for pattern rules: the whole command (words joined by one space), then each command of `commands` with its arguments. */
  texts: string[];
}

export interface ShellReading {
  commands: ShellCommand[];
  uncertain: Uncertainty[];
  /** The shell needs more input before it runs anything (open quote, trailing `|` or `\`, unclosed `(`, `if`, here-document…). */
  incomplete: boolean;
  /** The input ended inside the body of this here-document: lines up to its delimiter are data. */
  heredoc: { delim: string; strip: boolean } | null;
}

export interface ShellReadOptions {
  /** An interactive shell (a terminal): history expansion (!…, ^…^) applies. Default false (`ssh host 'command'`). */
  interactive?: boolean;
}

export const MAX_SHELL_TEXT = 64 * 1024;
const MAX_DEPTH = 32;
const MAX_BRACE_WORDS = 256;
const MAX_WORDS = 20_000;
const MAX_UNCERTAIN = 32;
/** Parts copied by brace expansion in one reading, at most. */
const MAX_BRACE_WORK = 100_000;
const INTERNAL = 'a line the gateway could not read';

/** Shells: `-c STRING` is read recursively; without it they run a script file or read their input. */
const SHELLS = new Set(['sh', 'bash', 'dash', 'zsh', 'ksh', 'ksh93', 'mksh', 'pdksh', 'ash', 'rbash', 'yash', 'posh', 'fish', 'tcsh', 'csh']);

interface WrapperSpec {
  /** Short options that take a value (attached or as the next word). */
  values?: string;
  /** Long options (without `--`) that take the next word as a value when given without `=`. */
  long?: string[];
  /** Words before the command (timeout's DURATION, chroot's NEWROOT, taskset's mask). */
  positional?: number;
  /** NAME=VALUE words may come before the command (env, sudo). */
  assignments?: boolean;
  /** A short option whose value is a shell command line (su -c, flock -c, script -c). */
  shell?: string;
  shellLong?: string[];
  /** A short option whose value is split into more words (env -S). */
  split?: string;
  splitLong?: string[];
  /** Short options after which no command follows (taskset -p, ionice -p, sudo -e). */
  none?: string;
  /** Options are read again after the positional words (su USER -c, flock FILE -c). */
  reopt?: boolean;
  /** No argv command follows the options: only the shell option runs something (su, script). */
  noArgv?: boolean;
  /** The remaining words are joined by spaces and run by `sh -c` (watch, sg), unless one of these options is given. */
  join?: boolean;
  joinUnless?: string;
  /** The remaining words are arguments appended from input: they and the command word may be unknown (xargs). */
  input?: string;
  /** Without a command it starts a shell that reads its input (su). */
  startsShell?: boolean;
}

/**
 * Commands that run another command given as their arguments. The list the README documents;
 * any other program that runs commands (python -c, awk's system(), vim's :!, git aliases, make…)
 * is not followed: the command rules see only its own name.
 */
export const WRAPPERS: Record<string, WrapperSpec> = {
  command: {},
  builtin: {},
  exec: { values: 'a' },
  nohup: {},
  time: {},
  setsid: {},
  eatmydata: {},
  unbuffer: {},
  busybox: {},
  nice: { values: 'n', long: ['adjustment'] },
  ionice: { values: 'cn', none: 'pPu', long: ['class', 'classdata'] },
  timeout: { values: 'ks', long: ['kill-after', 'signal'], positional: 1 },
  stdbuf: { values: 'ioe', long: ['input', 'output', 'error'] },
  env: { values: 'uCS', long: ['unset', 'chdir', 'split-string'], split: 'S', splitLong: ['split-string'], assignments: true },
  sudo: {
    values: 'ugpCrtUDRT', none: 'eK', assignments: true,
    long: ['user', 'group', 'prompt', 'close-from', 'role', 'type', 'other-user', 'chdir', 'chroot', 'command-timeout', 'host'],
  },
  doas: { values: 'uC' },
  pkexec: { long: ['user'] },
  chroot: { long: ['userspec', 'groups'], positional: 1 },
  chrt: { values: 'TPD', none: 'p', positional: 1 },
  taskset: { none: 'p', positional: 1 },
  fakeroot: { values: 'lsi', long: ['lib', 'faked'] },
  strace: { values: 'abeEIoOpPsSuUX', long: ['output', 'expr', 'signal', 'trace', 'attach', 'string-limit', 'user', 'env', 'columns'] },
  ltrace: { values: 'aADeFlnopsuwx', long: ['output', 'library', 'align', 'indent'] },
  'systemd-run': { values: 'pEHM', long: ['unit', 'property', 'description', 'slice', 'uid', 'gid', 'working-directory', 'setenv', 'machine', 'host', 'nice'] },
  xargs: {
    values: 'adEILnPs', input: 'Ii',
    long: ['arg-file', 'delimiter', 'max-args', 'max-procs', 'max-chars', 'max-lines', 'replace', 'eof', 'process-slot-var'],
  },
  flock: { values: 'wE', long: ['timeout', 'conflict-exit-code'], shell: 'c', shellLong: ['command'], positional: 1, reopt: true },
  su: { values: 'gGsw', long: ['group', 'supp-group', 'shell', 'whitelist-environment'], shell: 'c', shellLong: ['command', 'session-command'], positional: 1, reopt: true, noArgv: true, startsShell: true },
  runuser: { values: 'gGsuw', long: ['group', 'supp-group', 'shell', 'user', 'whitelist-environment'], shell: 'c', shellLong: ['command', 'session-command'], positional: 1, reopt: true },
  script: { values: 'EIBOTmo', long: ['echo', 'log-in', 'log-out', 'log-io', 'log-timing', 'logging-format', 'output-limit'], shell: 'c', shellLong: ['command'], noArgv: true },
  watch: { values: 'nq', long: ['interval', 'equexit'], join: true, joinUnless: 'x' },
  sg: { positional: 1, reopt: true, shell: 'c', join: true },
};

/** Variables whose value the shell runs or expands later (prompts, PROMPT_COMMAND, startup files). */
const RUN_LATER = new Set(['PROMPT_COMMAND', 'PS0', 'PS1', 'PS2', 'PS3', 'PS4', 'BASH_ENV', 'ENV']);
const DECLARES = new Set(['export', 'declare', 'typeset', 'local', 'readonly']);

type Part = { t: string; lit: boolean } | { u: string; benign: boolean };
interface Word { parts: Part[] }
/** An expanded word: its text (unknown parts shown as typed), the first unknown part, a glob. */
interface EWord { text: string; unknown: string | null; benign: boolean; glob: boolean }
interface Heredoc { delim: string; quoted: boolean; strip: boolean; body: string | null; expands: boolean }
interface Redir { op: string; target: Word | null; heredoc?: Heredoc; text: string }
interface Cmd { words: Word[]; redirs: Redir[]; piped: boolean }

interface State {
  commands: ShellCommand[];
  uncertain: Uncertainty[];
  seen: Set<string>;
  words: number;
  stop: boolean;
  braceWork: number;
  heredoc: { delim: string; strip: boolean } | null;
}

/** Append unquoted text to a word, joining it to an unquoted part before it. */
function addLit(parts: Part[], t: string): void {
  const last = parts[parts.length - 1];
  if (last && 't' in last && last.lit) last.t += t;
  else parts.push({ t, lit: true });
}
const isLit = (p: Part | undefined, c: string): boolean => !!p && 't' in p && p.lit && p.t === c;
const newCmd = (piped: boolean): Cmd => ({ words: [], redirs: [], piped });
const cmdEmpty = (c: Cmd): boolean => c.words.length === 0 && c.redirs.length === 0;
const partText = (p: Part): string => ('t' in p ? p.t : p.u);
const wordText = (w: Word): string => w.parts.map(partText).join('');
const isPlain = (w: Word): boolean => w.parts.length > 0 && w.parts.every((p) => 't' in p && p.lit);
const firstUnknown = (w: Word): { u: string; benign: boolean } | null => {
  for (const p of w.parts) if ('u' in p) return p;
  return null;
};
const short = (s: string, n = 40): string => (s.length > n ? `${s.slice(0, n - 1)}…` : s);
const basename = (s: string): string => {
  const b = s.replace(/\/+$/, '');
  const i = b.lastIndexOf('/');
  return i < 0 ? b : b.slice(i + 1) || s;
};
/** Single-quote a word for the shell (used to hand lexed words to a nested reading). */
const shq = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

const ASSIGN = /^[A-Za-z_][A-Za-z0-9_]*(\[[^\]]*\])?\+?=/;

/** The NAME of a NAME=… assignment word (the name and `=` unquoted), else null. */
function assignmentName(w: Word): string | null {
  let lead = '';
  for (const p of w.parts) {
    if (!('t' in p) || !p.lit) break;
    lead += p.t;
    if (p.t === '=') break;
  }
  const m = ASSIGN.exec(lead);
  return m ? lead.slice(0, lead.indexOf('=')).replace(/\[.*$/, '').replace(/\+$/, '') : null;
}

function addUncertain(st: State, what: string, scope: UncertainScope): void {
  const key = `${scope}\u0000${what}`;
  if (st.seen.has(key) || st.uncertain.length >= MAX_UNCERTAIN) return;
  st.seen.add(key);
  st.uncertain.push({ what, scope });
}

/** Read a command line the way bash would before running it. */
export function readShell(text: string, opts: ShellReadOptions = {}): ShellReading {
  const st: State = { commands: [], uncertain: [], seen: new Set(), words: 0, stop: false, braceWork: 0, heredoc: null };
  let src = text;
  if (src.length > MAX_SHELL_TEXT) {
    src = src.slice(0, MAX_SHELL_TEXT);
    addUncertain(st, 'a command line longer than the gateway reads', 'command');
  }
  const r = new Reader(src, st, 0, opts.interactive === true);
  try {
    r.run();
  } catch {
    addUncertain(st, INTERNAL, 'command');
  }
  return { commands: st.commands, uncertain: st.uncertain, incomplete: r.incomplete, heredoc: r.incomplete ? st.heredoc : null };
}

/** True when a reading says the gateway failed internally (never expected; tests assert it). */
export function isInternalFailure(r: ShellReading): boolean {
  return r.uncertain.some((u) => u.what === INTERNAL);
}

/** Characters with no meaning inside a word (outside quotes) or inside double quotes. */
const PLAIN_RUN = /[^ \t\n;&|()<>\\'"$`!?*+@]+/y;
const DQ_RUN = /[^"\\$`!]+/y;

const OPERATORS = [';;&', ';;', ';&', ';', '&&', '&>>', '&>', '&', '||', '|&', '|', '<<<', '<<-', '<<', '<&', '<>', '<', '>>', '>&', '>|', '>'];
const META = new Set([' ', '\t', '\n', ';', '&', '|', '(', ')', '<', '>']);

class Reader {
  i = 0;
  incomplete = false;
  private readonly n: number;
  /** Here-documents whose bodies start after the next newline. */
  private heredocs: Heredoc[] = [];
  /** Simple commands finished on this line, waiting for their here-document bodies. */
  private waiting: Cmd[] = [];
  private level = 0;

  constructor(private readonly src: string, private readonly st: State, private readonly depth: number, private readonly interactive: boolean) {
    this.n = src.length;
  }

  run(): void {
    this.list(null);
    this.flushWaiting();
    if (this.heredocs.length) {
      this.incomplete = true;
      if (this.depth === 0) this.st.heredoc = { delim: this.heredocs[0]!.delim, strip: this.heredocs[0]!.strip };
    }
  }

  private uncertain(what: string, scope: UncertainScope): void { addUncertain(this.st, what, scope); }

  /** Read a string the shell will run (eval, sh -c, su -c…) as its own command line. */
  private nested(text: string): void {
    const depth = this.depth + this.level + 1;
    if (depth > MAX_DEPTH) { this.uncertain('nesting deeper than the gateway follows', 'command'); return; }
    new Reader(text, this.st, depth, false).run();
  }

  /** A nested list inside this text: $( … ), ( … ). */
  private deeper(fn: () => void): void {
    if (!this.enter()) return;
    try { fn(); } finally { this.level--; }
  }

  private at(s: string): boolean { return this.src.startsWith(s, this.i); }

  /** Blanks and line continuations. */
  private blanks(): void {
    while (this.i < this.n) {
      const c = this.src[this.i]!;
      if (c === ' ' || c === '\t') { this.i++; continue; }
      if (c === '\\' && this.src[this.i + 1] === '\n') {
        this.i += 2;
        if (this.i >= this.n) this.incomplete = true;
        continue;
      }
      if (c === '\\' && this.i + 1 >= this.n) { this.incomplete = true; this.i++; continue; }
      break;
    }
  }

  private operator(): string {
    for (const op of OPERATORS) {
      if (this.at(op)) { this.i += op.length; return op; }
    }
    this.i++;
    return this.src[this.i - 1]!;
  }

  /** History expansion: `!` followed by something other than a blank, `=`, `(` or the end. */
  private history(inDq: boolean): boolean {
    if (!this.interactive || this.src[this.i] !== '!') return false;
    const nx = this.src[this.i + 1];
    if (nx === undefined || nx === ' ' || nx === '\t' || nx === '\n' || nx === '=' || nx === '(') return false;
    if (inDq && nx === '"') return false;
    this.uncertain(`history recall (${short(this.src.slice(this.i, this.i + 2 + (/[\w-]/.test(nx) ? 8 : 0)).replace(/[\s"'].*$/, ''), 12)})`, 'command');
    return true;
  }

  private list(close: ')' | null): void {
    let cmd = newCmd(false);
    let more = false;
    let nest = 0;
    const cases: boolean[] = [];
    let lineStart = true;
    for (;;) {
      if (this.st.stop) { this.i = this.n; }
      this.blanks();
      if (lineStart && this.interactive && this.depth === 0 && this.level === 0 && this.src[this.i] === '^') this.uncertain('history substitution (^…^…)', 'command');
      lineStart = false;
      if (this.i >= this.n) {
        this.finish(cmd);
        if (close || more || nest > 0 || cases.length) this.incomplete = true;
        return;
      }
      const c = this.src[this.i]!;
      if (c === '#') {
        const end = this.src.indexOf('\n', this.i);
        this.i = end < 0 ? this.n : end;
        continue;
      }
      if (c === '\n') {
        this.i++;
        this.finish(cmd);
        cmd = newCmd(false);
        this.readHeredocs();
        lineStart = true;
        continue;
      }
      if (cmdEmpty(cmd) && cases.length && cases[cases.length - 1]) {
        if (this.casePattern(cases)) continue;
        this.finish(cmd);
        this.incomplete = true;
        return;
      }
      if (c === ')') {
        this.i++;
        this.finish(cmd);
        if (close === ')') return;
        cmd = newCmd(false);
        continue;
      }
      if (c === '(') {
        if (cmdEmpty(cmd)) {
          if (this.src[this.i + 1] === '(' && arithEnd(this.src, this.i + 2) >= 0) { this.i += 2; this.arith(); more = false; continue; }
          this.i++;
          this.deeper(() => this.list(')'));
          more = false;
          continue;
        }
        const fn = /^\(\s*\)/.exec(this.src.slice(this.i, this.i + 64));
        if (fn && cmd.words.length === 1 && !cmd.redirs.length) {
          // name () compound: a function definition; the body is read as commands where it stands.
          this.i += fn[0].length;
          cmd = newCmd(false);
          more = true;
          continue;
        }
        this.i++;
        this.deeper(() => this.list(')'));
        continue;
      }
      if (c === ';' || c === '&' || c === '|') {
        const op = this.operator();
        if (op === '&>' || op === '&>>') { this.redirect(cmd, op); continue; }
        this.finish(cmd);
        cmd = newCmd(op === '|' || op === '|&');
        more = op === '|' || op === '|&' || op === '&&' || op === '||';
        if ((op === ';;' || op === ';&' || op === ';;&') && cases.length) cases[cases.length - 1] = true;
        continue;
      }
      if ((c === '<' || c === '>') && this.src[this.i + 1] !== '(') {
        this.redirect(cmd, this.operator());
        continue;
      }
      const start = this.i;
      const w = this.word();
      if (this.i === start) { this.i++; continue; }
      more = false;
      if (cmdEmpty(cmd) && isPlain(w)) {
        const k = wordText(w);
        switch (k) {
          case '{': case 'if': nest++; continue;
          case 'while': case 'until': nest++; continue;
          case 'then': case 'else': case 'elif': case 'do': case '!': case 'coproc':
            more = k !== 'coproc';
            continue;
          case 'fi': case 'done': case '}': nest = Math.max(0, nest - 1); continue;
          case 'esac': cases.pop(); continue;
          case 'case':
            this.blanks();
            this.word();
            this.skipSpace();
            this.word(); // in
            cases.push(true);
            continue;
          case 'for': case 'select':
            nest++;
            this.forHead();
            continue;
          case 'function': {
            this.blanks();
            this.word();
            this.blanks();
            const fn = /^\(\s*\)/.exec(this.src.slice(this.i, this.i + 64));
            if (fn) this.i += fn[0].length;
            more = true;
            continue;
          }
          case '[[':
            this.conditional();
            continue;
        }
      }
      // An IO number (2>file) or {fd}>file: part of the redirection that follows.
      const nx = this.src[this.i];
      if ((nx === '<' || nx === '>') && isPlain(w) && /^(\d+|\{[A-Za-z_][A-Za-z0-9_]*\})$/.test(wordText(w))) continue;
      cmd.words.push(w);
    }
  }

  /** Blanks, line continuations and newlines. */
  private skipSpace(): void {
    for (;;) {
      this.blanks();
      if (this.src[this.i] === '\n') { this.i++; continue; }
      if (this.src[this.i] === '#') {
        const end = this.src.indexOf('\n', this.i);
        this.i = end < 0 ? this.n : end;
        continue;
      }
      return;
    }
  }

  /** `pattern | pattern )` of a case, or `esac`. False when the input ends first. */
  private casePattern(cases: boolean[]): boolean {
    if (this.src[this.i] === '(') this.i++;
    this.blanks();
    const first = this.word();
    if (isPlain(first) && wordText(first) === 'esac') { cases.pop(); return true; }
    for (;;) {
      this.blanks();
      if (this.i >= this.n) return false;
      const c = this.src[this.i]!;
      if (c === '|') { this.i++; this.blanks(); this.word(); continue; }
      if (c === ')') { this.i++; break; }
      if (c === '\n') { this.i++; continue; }
      const before = this.i;
      this.word();
      if (this.i === before) this.i++;
    }
    cases[cases.length - 1] = false;
    return true;
  }

  /** After `for`/`select`: NAME [in WORDS] or ((…;…;…)). The words are values, not commands. */
  private forHead(): void {
    this.blanks();
    if (this.at('((')) { this.i += 2; this.arith(); return; }
    this.word();
    this.skipSpace();
    const save = this.i;
    const w = this.word();
    if (!(isPlain(w) && wordText(w) === 'in')) { this.i = save; return; }
    for (;;) {
      this.blanks();
      const c = this.src[this.i];
      if (c === undefined || c === ';' || c === '\n' || c === '&' || c === '|' || c === ')' || c === '(' || c === '<' || c === '>') return;
      const before = this.i;
      this.word();
      if (this.i === before) return;
    }
  }

  /** [[ … ]]: operands and operators are not commands (substitutions inside still are read). */
  private conditional(): void {
    for (;;) {
      this.skipSpace();
      if (this.i >= this.n) { this.incomplete = true; return; }
      if (this.at(']]') && (this.i + 2 >= this.n || META.has(this.src[this.i + 2]!))) { this.i += 2; return; }
      const c = this.src[this.i]!;
      if ('()<>&|!;'.includes(c)) { this.i++; continue; }
      const before = this.i;
      this.word();
      if (this.i === before) this.i++;
    }
  }

  /** The inside of $(( … )) or (( … )) up to the closing `))`; substitutions inside are read. */
  private arith(): void {
    if (!this.enter()) return;
    try { this.arithBody(); } finally { this.level--; }
  }

  private arithBody(): void {
    let depth = 0;
    const sink: Part[] = [];
    while (this.i < this.n) {
      const c = this.src[this.i]!;
      if (c === '(') { depth++; this.i++; continue; }
      if (c === ')') {
        if (depth === 0 && this.src[this.i + 1] === ')') { this.i += 2; return; }
        depth = Math.max(0, depth - 1);
        this.i++;
        continue;
      }
      if (c === '$') { this.dollar(sink, true); continue; }
      if (c === '`') { this.backtick(sink, true); continue; }
      if (c === '"') { this.dquote(sink); continue; }
      if (c === "'") {
        const end = this.src.indexOf("'", this.i + 1);
        this.i = end < 0 ? this.n : end + 1;
        continue;
      }
      if (c === '\\') { this.i += 2; continue; }
      this.i++;
    }
    this.incomplete = true;
  }

  private redirect(cmd: Cmd, op: string): void {
    this.blanks();
    if (op === '<<' || op === '<<-') {
      const w = this.word();
      const h: Heredoc = { delim: wordText(w), quoted: !isPlain(w), strip: op === '<<-', body: null, expands: false };
      if (w.parts.length) this.heredocs.push(h);
      cmd.redirs.push({ op, target: null, heredoc: h, text: `${op}${h.delim}` });
      return;
    }
    const w = this.word();
    cmd.redirs.push({ op, target: w, text: `${op} ${wordText(w)}` });
  }

  /** Bodies of the here-documents opened on the line that just ended. */
  private readHeredocs(): void {
    while (this.heredocs.length) {
      const h = this.heredocs[0]!;
      let body = '';
      let done = false;
      while (this.i < this.n) {
        const nl = this.src.indexOf('\n', this.i);
        const end = nl < 0 ? this.n : nl;
        let line = this.src.slice(this.i, end);
        this.i = nl < 0 ? this.n : nl + 1;
        if (h.strip) line = line.replace(/^\t+/, '');
        if (line === h.delim) { done = true; break; }
        body += `${line}\n`;
      }
      if (!done) {
        this.incomplete = true;
        if (this.depth === 0) this.st.heredoc = { delim: h.delim, strip: h.strip };
        return;
      }
      this.heredocs.shift();
      h.body = body;
      if (!h.quoted) {
        // Unquoted: the body is expanded like a double-quoted string, so substitutions in it run.
        const sub = new Reader(body, this.st, this.depth + 1, false);
        h.expands = sub.dquoteContent();
      }
    }
    this.flushWaiting();
  }

  /** A whole text read as the inside of double quotes; true when it has expansions. */
  private dquoteContent(): boolean {
    const parts: Part[] = [];
    while (this.i < this.n) {
      const c = this.src[this.i]!;
      if (c === '\\') { this.i += 2; continue; }
      if (c === '$') { this.dollar(parts, true); continue; }
      if (c === '`') { this.backtick(parts, true); continue; }
      this.i++;
    }
    return parts.some((p) => 'u' in p);
  }

  /** One word, its parts quoted or not; expansions as unknown parts. */
  private word(): Word {
    const parts: Part[] = [];
    if ((this.src[this.i] === '<' || this.src[this.i] === '>') && this.src[this.i + 1] === '(') {
      this.i += 2;
      this.deeper(() => this.list(')'));
      parts.push({ u: '<(…)', benign: true });
    }
    while (this.i < this.n) {
      const c = this.src[this.i]!;
      if (META.has(c)) {
        // NAME=( … ): an array assignment, one word.
        const last = parts[parts.length - 1];
        if (c === '(' && last && 't' in last && last.lit && last.t.endsWith('=') && assignmentName({ parts })) {
          this.i++;
          this.arrayValue();
          parts.push({ u: '(…)', benign: true });
          continue;
        }
        break;
      }
      if (c === '\\') {
        const nx = this.src[this.i + 1];
        if (nx === undefined) { this.incomplete = true; this.i++; break; }
        if (nx === '\n') {
          this.i += 2;
          if (this.i >= this.n) this.incomplete = true;
          continue;
        }
        parts.push({ t: nx, lit: false });
        this.i += 2;
        continue;
      }
      if (c === "'") {
        const end = this.src.indexOf("'", this.i + 1);
        if (end < 0) { parts.push({ t: this.src.slice(this.i + 1), lit: false }); this.i = this.n; this.incomplete = true; break; }
        parts.push({ t: this.src.slice(this.i + 1, end), lit: false });
        this.i = end + 1;
        continue;
      }
      if (c === '"') { this.dquote(parts); continue; }
      if (c === '$') { this.dollar(parts, false); continue; }
      if (c === '`') { this.backtick(parts, false); continue; }
      if (this.history(false)) { addLit(parts, c); this.i++; continue; }
      if ('?*+@!'.includes(c) && this.src[this.i + 1] === '(') {
        // An extended glob ?( ) *( ) +( ) @( ) !( ): one part of the word.
        const from = this.i;
        this.i += 2;
        let depth = 1;
        while (this.i < this.n && depth > 0) {
          const d = this.src[this.i]!;
          if (d === '\\') { this.i += 2; continue; }
          if (d === '(') depth++;
          else if (d === ')') depth--;
          this.i++;
        }
        if (depth > 0) this.incomplete = true;
        parts.push({ t: this.src.slice(from, this.i), lit: true }, { t: '*', lit: true });
        continue;
      }
      PLAIN_RUN.lastIndex = this.i;
      const run = PLAIN_RUN.exec(this.src);
      if (run) { addLit(parts, run[0]); this.i += run[0].length; continue; }
      addLit(parts, c);
      this.i++;
    }
    return { parts };
  }

  /** The elements of NAME=( … ) up to the closing parenthesis. */
  private arrayValue(): void {
    for (;;) {
      this.skipSpace();
      if (this.i >= this.n) { this.incomplete = true; return; }
      if (this.src[this.i] === ')') { this.i++; return; }
      const before = this.i;
      this.word();
      if (this.i === before) this.i++;
    }
  }

  /** "…": backslash escapes only $ ` " \ and newline; expansions inside. */
  private dquote(parts: Part[]): void {
    this.i++;
    let buf = '';
    while (this.i < this.n) {
      const c = this.src[this.i]!;
      if (c === '"') { this.i++; if (buf) parts.push({ t: buf, lit: false }); return; }
      if (c === '\\') {
        const nx = this.src[this.i + 1];
        if (nx === undefined) { buf += c; this.i++; break; }
        if (nx === '\n') { this.i += 2; continue; }
        if ('$`"\\'.includes(nx)) { buf += nx; this.i += 2; continue; }
        buf += c;
        this.i++;
        continue;
      }
      if (c === '$' || c === '`') {
        if (buf) { parts.push({ t: buf, lit: false }); buf = ''; }
        if (c === '$') this.dollar(parts, true); else this.backtick(parts, true);
        continue;
      }
      if (this.history(true)) { buf += c; this.i++; continue; }
      DQ_RUN.lastIndex = this.i;
      const run = DQ_RUN.exec(this.src);
      if (run) { buf += run[0]; this.i += run[0].length; continue; }
      buf += c;
      this.i++;
    }
    if (buf) parts.push({ t: buf, lit: false });
    this.incomplete = true;
  }

  /** `$…` at this.i: $'…', $"…", $((…)), $(…), ${…}, $name, $1, $@… or a lone `$`. */
  private dollar(parts: Part[], inDq: boolean): void {
    const nx = this.src[this.i + 1];
    if (nx === "'" && !inDq) {
      this.i += 2;
      parts.push({ t: this.ansiC(), lit: false });
      return;
    }
    if (nx === '"' && !inDq) {
      this.i++;
      this.dquote(parts);
      return;
    }
    if (nx === '(') {
      if (this.src[this.i + 2] === '(' && arithEnd(this.src, this.i + 3) >= 0) {
        this.i += 3;
        this.arith();
        parts.push({ u: '$((…))', benign: false });
        return;
      }
      this.i += 2;
      this.deeper(() => this.list(')'));
      parts.push({ u: '$(…)', benign: false });
      return;
    }
    if (nx === '[') {
      const end = this.src.indexOf(']', this.i + 2);
      this.i = end < 0 ? this.n : end + 1;
      if (end < 0) this.incomplete = true;
      parts.push({ u: '$[…]', benign: false });
      return;
    }
    if (nx === '{') {
      if (!this.enter()) return;
      try { this.braceParam(parts, inDq); } finally { this.level--; }
      return;
    }
    if (nx !== undefined && /[A-Za-z_]/.test(nx)) {
      const m = /^[A-Za-z_][A-Za-z0-9_]*/.exec(this.src.slice(this.i + 1, this.i + 257))!;
      this.i += 1 + m[0].length;
      parts.push({ u: short(`$${m[0]}`), benign: false });
      return;
    }
    if (nx !== undefined && /[0-9@*#?$!\-]/.test(nx)) {
      this.i += 2;
      parts.push({ u: `$${nx}`, benign: false });
      return;
    }
    parts.push({ t: '$', lit: !inDq });
    this.i++;
  }

  /** One more level of nesting inside this text; false (and the rest of the text abandoned) past MAX_DEPTH. */
  private enter(): boolean {
    if (this.level + this.depth >= MAX_DEPTH) {
      this.uncertain('nesting deeper than the gateway follows', 'command');
      this.i = this.n;
      return false;
    }
    this.level++;
    return true;
  }

  /** ${…}: to the matching brace; substitutions inside are read. */
  private braceParam(parts: Part[], inDq: boolean): void {
    {
      const from = this.i;
      this.i += 2;
      let depth = 1;
      const sink: Part[] = [];
      while (this.i < this.n && depth > 0) {
        const c = this.src[this.i]!;
        if (c === '\\') { this.i += 2; continue; }
        if (c === "'" && !inDq) {
          const end = this.src.indexOf("'", this.i + 1);
          this.i = end < 0 ? this.n : end + 1;
          continue;
        }
        if (c === '"') { this.dquote(sink); continue; }
        if (c === '$') { this.dollar(sink, true); continue; }
        if (c === '`') { this.backtick(sink, true); continue; }
        if (c === '{') depth++;
        else if (c === '}') depth--;
        this.i++;
      }
      if (depth > 0) this.incomplete = true;
      parts.push({ u: short(this.src.slice(from, this.i)), benign: false });
    }
  }

  /** `…`: the content with \$ \` \\ (and \" in double quotes) unescaped, read as a command line. */
  private backtick(parts: Part[], inDq: boolean): void {
    this.i++;
    let body = '';
    let closed = false;
    while (this.i < this.n) {
      const c = this.src[this.i]!;
      if (c === '`') { this.i++; closed = true; break; }
      if (c === '\\') {
        const nx = this.src[this.i + 1];
        if (nx !== undefined && ('$`\\'.includes(nx) || (inDq && nx === '"'))) { body += nx; this.i += 2; continue; }
      }
      body += c;
      this.i++;
    }
    if (!closed) this.incomplete = true;
    this.nested(body);
    parts.push({ u: '`…`', benign: false });
  }

  /** $'…' after the opening quote: ANSI-C escapes decoded. */
  private ansiC(): string {
    let out = '';
    while (this.i < this.n) {
      const c = this.src[this.i]!;
      if (c === "'") { this.i++; return out; }
      if (c !== '\\') { out += c; this.i++; continue; }
      const e = this.src[this.i + 1];
      if (e === undefined) { this.i++; break; }
      this.i += 2;
      const simple: Record<string, string> = { a: '\x07', b: '\b', e: '\x1b', E: '\x1b', f: '\f', n: '\n', r: '\r', t: '\t', v: '\v', '\\': '\\', "'": "'", '"': '"', '?': '?' };
      if (e in simple) { out += simple[e]; continue; }
      if (/[0-7]/.test(e)) {
        let digits = e;
        while (digits.length < 3 && /[0-7]/.test(this.src[this.i] ?? '')) digits += this.src[this.i++];
        out += String.fromCharCode(parseInt(digits, 8) & 0xff);
        continue;
      }
      const hex = (max: number): string => {
        let h = '';
        while (h.length < max && /[0-9a-fA-F]/.test(this.src[this.i] ?? '')) h += this.src[this.i++];
        return h;
      };
      if (e === 'x') {
        const h = hex(2);
        out += h ? String.fromCharCode(parseInt(h, 16)) : '\\x';
        continue;
      }
      if (e === 'u' || e === 'U') {
        const h = hex(e === 'u' ? 4 : 8);
        const cp = h ? parseInt(h, 16) : -1;
        out += cp >= 0 && cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff) ? String.fromCodePoint(cp) : `\\${e}${h}`;
        continue;
      }
      if (e === 'c') {
        const ch = this.src[this.i];
        if (ch !== undefined) { out += String.fromCharCode(ch.charCodeAt(0) & 0x1f); this.i++; }
        continue;
      }
      out += `\\${e}`;
    }
    this.incomplete = true;
    return out;
  }

  /* ---- simple commands ---- */

  private finish(cmd: Cmd): void {
    if (cmdEmpty(cmd)) return;
    if (this.heredocs.length || this.waiting.length) { this.waiting.push(cmd); return; }
    this.simple(cmd);
  }

  private flushWaiting(): void {
    const w = this.waiting;
    this.waiting = [];
    for (const c of w) this.simple(c);
  }

  private simple(cmd: Cmd): void {
    if (this.st.stop) return;
    const assigns: Word[] = [];
    let k = 0;
    for (; k < cmd.words.length; k++) {
      const name = assignmentName(cmd.words[k]!);
      if (name === null) break;
      assigns.push(cmd.words[k]!);
      this.assignment(name, cmd.words[k]!);
    }
    const words: EWord[] = [];
    for (const w of cmd.words.slice(k)) words.push(...this.expand(w));
    this.st.words += words.length;
    if (this.st.words > MAX_WORDS || this.st.commands.length >= MAX_WORDS) {
      this.uncertain('more commands than the gateway follows', 'command');
      this.st.stop = true;
      return;
    }
    for (const r of cmd.redirs) {
      const u = r.target && firstUnknown(r.target);
      if (u && !u.benign) this.uncertain(u.u, 'argument');
    }
    const chain: string[] = [];
    const texts = [[...assigns.map(wordText), ...words.map((w) => w.text), ...cmd.redirs.map((r) => r.text)].join(' ')];
    this.unwrap(words, 0, cmd, chain, texts);
    this.st.commands.push({ words: words.map((w) => w.text), commands: chain, texts });
  }

  /** NAME=value before a command or as an argument of export/declare: some values run later. */
  private assignment(name: string, w: Word): void {
    if (!RUN_LATER.has(name)) return;
    this.uncertain(`setting ${name}`, 'command');
    const text = wordText(w);
    const value = text.slice(text.indexOf('=') + 1);
    if (name === 'PROMPT_COMMAND' && !firstUnknown(w)) this.nested(value);
  }

  /** Brace expansion of one word (quoted braces and commas stay literal). */
  private expand(w: Word): EWord[] {
    if (!w.parts.some((p) => 't' in p && p.lit && p.t.includes('{'))) return [ewordOf(w.parts)];
    const chars: Part[] = [];
    for (const p of w.parts) {
      if ('t' in p && p.lit) for (const ch of p.t) chars.push({ t: ch, lit: true });
      else chars.push(p);
    }
    const out: Part[][] = [];
    let tooBig = false;
    const rec = (parts: Part[]): void => {
      if (tooBig) return;
      this.st.braceWork += parts.length;
      if (this.st.braceWork > MAX_BRACE_WORK) { tooBig = true; return; }
      if (out.length >= MAX_BRACE_WORDS) { tooBig = true; return; }
      const b = findBrace(parts, this.st);
      if (!b) { out.push(parts); return; }
      if (b.alts.length > MAX_BRACE_WORDS) { tooBig = true; return; }
      const pre = parts.slice(0, b.open);
      const post = parts.slice(b.close + 1);
      for (const alt of b.alts) rec([...pre, ...alt, ...post]);
    };
    rec(chars);
    if (tooBig || this.st.braceWork > MAX_BRACE_WORK) {
      return [{ text: wordText(w), unknown: 'a brace expansion too large to follow', benign: false, glob: false }];
    }
    return out.map(ewordOf);
  }

  /**
   * The commands a simple command runs, from its command word through wrappers; unknown words in
   * command position are `command` uncertainties, unknown arguments of the final command `argument` ones.
   */
  private unwrap(words: EWord[], i: number, cmd: Cmd, chain: string[], texts: string[]): void {
    for (;;) {
      const w = words[i];
      if (!w) return;
      if (w.unknown) { this.uncertain(w.unknown, 'command'); return; }
      if (w.glob) { this.uncertain(`a glob (${short(w.text)})`, 'command'); return; }
      const name = basename(w.text);
      chain.push(name);
      const text = [name, ...words.slice(i + 1).map((x) => x.text)].join(' ');
      if (!texts.includes(text)) texts.push(text);
      const next = this.special(name, words, i, cmd, chain, texts);
      if (next === 'done') return;
      if (next === 'args') { this.args(words.slice(i + 1)); return; }
      i = next;
    }
  }

  private args(words: EWord[]): void {
    for (const a of words) {
      if (a.unknown && !a.benign) this.uncertain(a.unknown, 'argument');
      else if (a.glob) this.uncertain(`a glob (${short(a.text)})`, 'argument');
    }
  }

  /** What a command word means: 'args' (an ordinary command), 'done' (handled), or the index of the command it runs. */
  private special(name: string, words: EWord[], i: number, cmd: Cmd, chain: string[], texts: string[]): number | 'args' | 'done' {
    const rest = words.slice(i + 1);
    if (SHELLS.has(name)) { this.shell(name, rest, cmd); return 'done'; }
    switch (name) {
      case 'eval': {
        const u = rest.find((x) => x.unknown);
        if (u) { this.uncertain(`eval of ${u.unknown}`, 'command'); return 'done'; }
        this.nested(rest.map((x) => x.text).join(' '));
        return 'done';
      }
      case 'source': case '.':
        this.uncertain(`${name} (a file the gateway cannot read)`, 'command');
        return 'done';
      case 'alias':
        this.uncertain('alias (the gateway does not follow aliases)', 'command');
        for (const a of rest) {
          const eq = a.text.indexOf('=');
          if (eq > 0 && !a.unknown) this.nested(a.text.slice(eq + 1));
        }
        return 'done';
      case 'fc':
        this.uncertain('fc (runs commands from the history)', 'command');
        return 'done';
      case 'enable':
        this.uncertain('enable (changes which builtins run)', 'command');
        return 'done';
      case 'hash':
        if (rest.some((x) => x.text === '-p' || x.unknown)) this.uncertain('hash -p (changes which file a name runs)', 'command');
        return 'args';
      case 'trap': {
        let j = 0;
        if (rest[j]?.text === '--') j++;
        const action = rest[j];
        if (!action || action.text.startsWith('-') || rest.length - j < 2) return 'args';
        if (action.unknown) { this.uncertain(`trap of ${action.unknown}`, 'command'); return 'done'; }
        this.nested(action.text);
        return 'done';
      }
      case 'find': {
        for (let j = 0; j < rest.length; j++) {
          if (!/^-(exec|execdir|ok|okdir)$/.test(rest[j]!.text)) continue;
          let end = j + 1;
          while (end < rest.length && rest[end]!.text !== ';' && rest[end]!.text !== '+') end++;
          this.unwrap(rest.slice(j + 1, end), 0, newCmd(false), chain, texts);
          j = end;
        }
        return 'done';
      }
    }
    if (DECLARES.has(name)) {
      for (const a of rest) {
        const m = ASSIGN.exec(a.text);
        if (m) {
          const v = m[0].replace(/(\[[^\]]*\])?\+?=$/, '');
          if (RUN_LATER.has(v)) {
            this.uncertain(`setting ${v}`, 'command');
            if (v === 'PROMPT_COMMAND' && !a.unknown) this.nested(a.text.slice(a.text.indexOf('=') + 1));
          }
        }
      }
      return 'args';
    }
    const spec = WRAPPERS[name];
    if (!spec) return 'args';
    return this.wrapper(name, spec, words, i, cmd);
  }

  /** Options of a wrapper, then the index of the command it runs. */
  private wrapper(name: string, spec: WrapperSpec, words: EWord[], i: number, cmd: Cmd): number | 'done' {
    let j = i + 1;
    let none = false;
    let joinOff = false;
    let ranShell = false;
    let fromInput = false;
    let split: string | null = null;
    let userFlag = false;
    const options = (): boolean => {
      while (j < words.length) {
        const w = words[j]!;
        if (w.unknown) { this.uncertain(w.unknown, 'command'); return false; }
        const t = w.text;
        if (t === '--') { j++; return true; }
        if (t.startsWith('--') && t.length > 2) {
          const eq = t.indexOf('=');
          const opt = eq < 0 ? t.slice(2) : t.slice(2, eq);
          let value: string | null = eq < 0 ? null : t.slice(eq + 1);
          j++;
          const takes = spec.long?.includes(opt) || spec.shellLong?.includes(opt) || spec.splitLong?.includes(opt);
          if (value === null && takes) {
            const v = words[j];
            if (v?.unknown) { this.uncertain(v.unknown, 'command'); return false; }
            value = v?.text ?? null;
            j++;
          }
          if (opt === 'replace' && spec.input) fromInput = true;
          if (value !== null && spec.shellLong?.includes(opt)) { this.nested(value); ranShell = true; }
          if (value !== null && spec.splitLong?.includes(opt)) split = value;
          continue;
        }
        if (t.length > 1 && t[0] === '-') {
          j++;
          for (let k = 1; k < t.length; k++) {
            const o = t[k]!;
            if (spec.none?.includes(o)) none = true;
            if (spec.joinUnless?.includes(o)) joinOff = true;
            if (spec.input?.includes(o)) fromInput = true;
            if (o === 'u') userFlag = true;
            if (spec.values?.includes(o) || spec.shell === o || spec.split === o) {
              let value = t.slice(k + 1);
              if (!value) {
                const v = words[j];
                if (v?.unknown) { this.uncertain(v.unknown, 'command'); return false; }
                value = v?.text ?? '';
                j++;
              }
              if (spec.shell === o) { this.nested(value); ranShell = true; }
              if (spec.split === o) split = value;
              break;
            }
          }
          continue;
        }
        if (t === '-') { j++; continue; }
        return true;
      }
      return true;
    };
    if (!options()) return 'done';
    if (spec.assignments) {
      while (j < words.length && ASSIGN.test(words[j]!.text) && !words[j]!.unknown) j++;
    }
    if (split !== null) {
      this.nested([split, ...words.slice(j).map((w) => (w.unknown ? w.text : shq(w.text)))].join(' '));
      return 'done';
    }
    if (none) { this.args(words.slice(j)); return 'done'; }
    // runuser -u USER -- COMMAND: an argv command; otherwise su's USER comes first.
    const positional = name === 'runuser' && userFlag ? 0 : spec.positional ?? 0;
    for (let p = 0; p < positional && j < words.length; p++) {
      const w = words[j]!;
      if (spec.reopt && w.text.startsWith('-')) break;
      if (w.unknown) { this.uncertain(w.unknown, 'command'); return 'done'; }
      j++;
    }
    if (spec.reopt && !options()) return 'done';
    if (fromInput) this.uncertain(`${name} with commands from its input`, 'command');
    const rest = words.slice(j);
    if (ranShell || spec.noArgv || (name === 'runuser' && !userFlag)) {
      if (!ranShell && spec.startsShell) this.shellInput(name, cmd);
      this.args(rest);
      return 'done';
    }
    if (spec.join && !joinOff) {
      const u = rest.find((x) => x.unknown);
      if (u) { this.uncertain(`${name} of ${u.unknown}`, 'command'); return 'done'; }
      if (rest.length) this.nested(rest.map((x) => x.text).join(' '));
      return 'done';
    }
    if (spec.input) this.uncertain(`${name} (arguments from its input)`, 'argument');
    return j < words.length ? j : 'done';
  }

  /** sh/bash/…: -c STRING read recursively; a script file or the shell's input otherwise. */
  private shell(name: string, rest: EWord[], cmd: Cmd): void {
    let j = 0;
    let c = false;
    let s = false;
    while (j < rest.length) {
      const w = rest[j]!;
      if (w.unknown && c) break; // the -c string
      if (w.unknown) { this.uncertain(`${name} with ${w.unknown}`, 'command'); return; }
      const t = w.text;
      if (t === '--' || t === '-') { j++; break; }
      if (t.startsWith('--')) { j += t === '--rcfile' || t === '--init-file' ? 2 : 1; continue; }
      if ((t[0] === '-' || t[0] === '+') && t.length > 1) {
        let values = 0;
        for (const ch of t.slice(1)) {
          if (ch === 'c') c = true;
          else if (ch === 's') s = true;
          else if (ch === 'o' || ch === 'O') values++;
        }
        j += 1 + values;
        continue;
      }
      break;
    }
    if (c) {
      const script = rest[j];
      if (!script) { this.uncertain(`${name} -c with its command from elsewhere`, 'command'); return; }
      if (script.unknown) { this.uncertain(`${name} -c of ${script.unknown}`, 'command'); return; }
      this.nested(script.text);
      this.args(rest.slice(j + 1));
      return;
    }
    if (!s && j < rest.length) {
      this.uncertain(`${name} running a script file the gateway cannot read (${short(rest[j]!.text)})`, 'command');
      return;
    }
    this.shellInput(name, cmd);
  }

  /** A shell reading commands from its standard input. */
  private shellInput(name: string, cmd: Cmd): void {
    for (const r of cmd.redirs) {
      if (r.op === '<<<') {
        const u = r.target && firstUnknown(r.target);
        if (!r.target || u) { this.uncertain(`${name} reading ${u?.u ?? 'a here-string'}`, 'command'); return; }
        this.nested(wordText(r.target));
        return;
      }
      if (r.heredoc) {
        if (r.heredoc.body === null) return; // not typed yet: the reading is incomplete
        if (r.heredoc.expands) { this.uncertain(`${name} reading a here-document with expansions`, 'command'); return; }
        this.nested(r.heredoc.body);
        return;
      }
      if (r.op === '<' || r.op === '<>' || r.op === '<&') { this.uncertain(`${name} reading commands from a file`, 'command'); return; }
    }
    if (cmd.piped) { this.uncertain(`${name} reading commands from a pipe`, 'command'); return; }
    // In a terminal, the new shell's lines come through the gateway's line editor like any other.
    if (!this.interactive) this.uncertain(`${name} reading commands from the connection`, 'command');
  }
}

/**
 * Where `((` … `))` ends (the index after it), or -1 when it is not arithmetic: a `)` that closes
 * nothing first means nested subshells, `((cmd) )`, as bash reads them.
 */
function arithEnd(src: string, from: number): number {
  let depth = 0;
  for (let i = from; i < src.length; i++) {
    const c = src[i]!;
    if (c === '\\') { i++; continue; }
    if (c === "'") {
      const end = src.indexOf("'", i + 1);
      if (end < 0) return -1;
      i = end;
      continue;
    }
    if (c === '(') { depth++; continue; }
    if (c === ')') {
      if (depth > 0) { depth--; continue; }
      return src[i + 1] === ')' ? i + 2 : -1;
    }
  }
  return -1;
}

function ewordOf(parts: Part[]): EWord {
  let text = '';
  let unknown: string | null = null;
  let benign = true;
  let glob = false;
  for (let k = 0; k < parts.length; k++) {
    const p = parts[k]!;
    if ('u' in p) {
      text += p.u;
      if (unknown === null) unknown = p.u;
      if (!p.benign) { benign = false; unknown = p.u; }
      continue;
    }
    text += p.t;
    if (!p.lit) continue;
    if (p.t.includes('*') || p.t.includes('?')) glob = true;
    const open = p.t.indexOf('[');
    if (open >= 0 && (p.t.includes(']', open + 1) || parts.slice(k + 1).some((q) => 't' in q && q.lit && q.t.includes(']')))) glob = true;
  }
  return { text, unknown, benign: unknown === null || benign, glob };
}

const SEQ_NUM = /^(-?\d+)\.\.(-?\d+)(?:\.\.(-?\d+))?$/;
const SEQ_CHR = /^([A-Za-z])\.\.([A-Za-z])(?:\.\.(-?\d+))?$/;

/** The first brace expression of a word: where it opens and closes and its alternatives. */
function findBrace(parts: Part[], st: State): { open: number; close: number; alts: Part[][] } | null {
  for (let a = 0; a < parts.length; a++) {
    if (!isLit(parts[a], '{')) continue;
    let depth = 0;
    const commas: number[] = [];
    let close = -1;
    for (let b = a + 1; b < parts.length; b++) {
      if (++st.braceWork > MAX_BRACE_WORK) return null;
      if (isLit(parts[b], '{')) depth++;
      else if (isLit(parts[b], '}')) {
        if (depth === 0) { close = b; break; }
        depth--;
      } else if (depth === 0 && isLit(parts[b], ',')) commas.push(b);
    }
    if (close < 0) continue;
    if (commas.length) {
      const alts: Part[][] = [];
      let from = a + 1;
      for (const c of [...commas, close]) { alts.push(parts.slice(from, c)); from = c + 1; }
      return { open: a, close, alts };
    }
    const inner = parts.slice(a + 1, close);
    if (!inner.every((p) => 't' in p && p.lit)) continue;
    const s = inner.map(partText).join('');
    const seq = sequence(s);
    if (seq) return { open: a, close, alts: seq.map((t) => [{ t, lit: false }]) };
  }
  return null;
}

/** {1..5}, {05..10..5}, {a..e}: the words, or null when it is not a sequence (or too long to expand). */
function sequence(s: string): string[] | null {
  let m = SEQ_NUM.exec(s);
  if (m) {
    const from = Number(m[1]);
    const to = Number(m[2]);
    const step = Math.abs(Number(m[3] ?? 1)) || 1;
    const count = Math.floor(Math.abs(to - from) / step) + 1;
    if (!Number.isSafeInteger(from) || !Number.isSafeInteger(to)) return null;
    if (count > MAX_BRACE_WORDS) return new Array<string>(MAX_BRACE_WORDS + 1).fill('');
    const pad = /^-?0\d/.test(m[1]!) || /^-?0\d/.test(m[2]!) ? Math.max(m[1]!.length, m[2]!.length) : 0;
    const out: string[] = [];
    for (let k = 0, v = from; k < count; k++, v += from <= to ? step : -step) {
      const abs = String(Math.abs(v));
      out.push(pad ? `${v < 0 ? '-' : ''}${abs.padStart(pad - (v < 0 ? 1 : 0), '0')}` : String(v));
    }
    return out;
  }
  m = SEQ_CHR.exec(s);
  if (m) {
    const from = m[1]!.charCodeAt(0);
    const to = m[2]!.charCodeAt(0);
    const step = Math.abs(Number(m[3] ?? 1)) || 1;
    const out: string[] = [];
    for (let v = from; from <= to ? v <= to : v >= to; v += from <= to ? step : -step) out.push(String.fromCharCode(v));
    return out;
  }
  return null;
}
