/**
 * The shell reading behind command rules (policies/shell.ts): quote and backslash removal, $'…',
 * control operators, subshells and groups, comments, continuation, wrappers, recursive reading of
 * eval / sh -c / substitutions, and what makes a line uncertain. Plus fast-check properties:
 * reading never throws, and any quoting of a word reads back as the same word.
 */
import t from 'tap';
import fc from 'fast-check';
import { readShell, isInternalFailure, MAX_SHELL_TEXT, type ShellReading } from '../../policies/shell.js';

const cmds = (s: string, interactive = false) => readShell(s, { interactive }).commands.flatMap((c) => c.commands);
const words = (s: string) => readShell(s).commands.map((c) => c.words);
const unc = (s: string, interactive = false) => readShell(s, { interactive }).uncertain;
const what = (r: ShellReading) => r.uncertain.map((u) => `${u.scope}:${u.what}`);

t.test('quote removal, backslashes and $\'…\' give the word the shell runs', async (t) => {
  t.same(words('sh"utdown" -h now'), [['shutdown', '-h', 'now']]);
  t.same(words('s\\hutdown -h now'), [['shutdown', '-h', 'now']]);
  t.same(words("'shut'down"), [['shutdown']]);
  t.same(words("$'\\x73hutdown' -h"), [['shutdown', '-h']]);
  t.same(words("$'\\163\\150utdown'"), [['shutdown']], 'octal escapes');
  t.same(words("$'\\u0073hutdown' $'a\\tb' $'\\cA' $'it\\'s'"), [['shutdown', 'a\tb', '\x01', "it's"]]);
  t.same(words('$"shutdown"'), [['shutdown']], 'locale strings are double quotes');
  t.same(words('"a\\$b\\"c\\d"'), [['a$b"c\\d']], 'in double quotes only \\ $ ` " and newline are escaped');
  t.same(words('echo a\\ b "c d"'), [['echo', 'a b', 'c d']]);
  t.same(words("sh''utdown"), [['shutdown']]);
});

t.test('operators, subshells, groups and nesting split into simple commands', async (t) => {
  t.same(cmds('a; b && c || d | e & f |& g'), ['a', 'b', 'c', 'd', 'e', 'f', 'g']);
  t.same(cmds('a\nb\n\nc'), ['a', 'b', 'c'], 'newlines separate commands');
  t.same(cmds('(a; (b; (c)) ) && { d; { e; }; }'), ['a', 'b', 'c', 'd', 'e'], 'nested subshells and groups');
  t.same(cmds('((shutdown) )'), ['shutdown'], '(( without a matching )) is two subshells, as bash reads it');
  t.same(cmds('(( x = 1 + 2 )) && reboot'), ['reboot'], 'arithmetic is not a command');
  t.same(cmds('if a; then b; elif c; then d; else e; fi; while f; do g; done; until h; do i; done'), ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i']);
  t.same(cmds('for x in shutdown reboot; do echo $x; done'), ['echo'], 'for lists are values');
  t.same(cmds('case $1 in start) a;; stop|halt) b;& (*) c;; esac; d'), ['a', 'b', 'c', 'd']);
  t.same(cmds('[[ -f x && $y < z ]] && shutdown'), ['shutdown']);
  t.same(cmds('f() { shutdown; }; function g { reboot; }'), ['shutdown', 'reboot'], 'function bodies are read');
  t.same(cmds('! a | time -p b'), ['a', 'time', 'b']);
  t.same(words('2>/dev/null a >out <in 3>&1 &>log {fd}>x b'), [['a', 'b']], 'redirections and IO numbers are not words');
  t.same(cmds('x=1 y=$(date) a'), ['date', 'a'], 'assignments before the command');
});

t.test('comments and line continuation', async (t) => {
  t.same(cmds('echo a # ; shutdown'), ['echo']);
  t.same(words('echo a#b'), [['echo', 'a#b']], '# inside a word is literal');
  t.same(cmds('# shutdown\nreboot'), ['reboot']);
  t.same(words('shut\\\ndown -h'), [['shutdown', '-h']], 'backslash-newline joins the lines');
  t.same(words('"shut\\\ndown"'), [['shutdown']], 'also inside double quotes');
  t.equal(readShell('echo a \\').incomplete, true, 'a trailing backslash waits for the next line');
  t.equal(readShell('echo "a').incomplete, true);
  t.equal(readShell("echo 'a").incomplete, true);
  t.equal(readShell('echo a |').incomplete, true);
  t.equal(readShell('if true; then').incomplete, true);
  t.equal(readShell('(echo').incomplete, true);
  t.equal(readShell('echo $(date').incomplete, true);
  t.equal(readShell('echo a; echo b').incomplete, false);
  const h = readShell('cat <<EOF\nbody\n');
  t.equal(h.incomplete, true);
  t.same(h.heredoc, { delim: 'EOF', strip: false }, 'the input ended inside a here-document');
});

t.test('brace expansion', async (t) => {
  t.same(words('sh{u,}tdown now'), [['shutdown', 'shtdown', 'now']]);
  t.same(words('{shutdown,-h,now}'), [['shutdown', '-h', 'now']]);
  t.same(words('echo {1..3} {a..c} {01..03} {3..1} {1..7..3}'), [['echo', '1', '2', '3', 'a', 'b', 'c', '01', '02', '03', '3', '2', '1', '1', '4', '7']]);
  t.same(words('echo "{a,b}" \\{a,b} {a} {} x{y'), [['echo', '{a,b}', '{a,b}', '{a}', '{}', 'x{y']], 'quoted or incomplete braces stay');
  t.same(words('echo {a,{b,c}}d'), [['echo', 'ad', 'bd', 'cd']], 'nested');
  t.match(what(readShell('echo {1..100000}')), ['argument:a brace expansion too large to follow']);
  t.match(what(readShell('{1..100000}')), ['command:a brace expansion too large to follow']);
});

t.test('wrappers expose the command they run', async (t) => {
  t.same(cmds('/sbin/shutdown -h now'), ['shutdown'], 'basename');
  t.same(cmds('command shutdown'), ['command', 'shutdown']);
  t.same(cmds('exec -a x shutdown'), ['exec', 'shutdown']);
  t.same(cmds('env -i -u Y X=1 shutdown'), ['env', 'shutdown']);
  t.same(cmds('sudo -u root -E -- /sbin/shutdown -h now'), ['sudo', 'shutdown']);
  t.same(cmds('sudo --user=root VAR=1 shutdown'), ['sudo', 'shutdown']);
  t.same(cmds('nohup nice -n 5 ionice -c 3 timeout -s KILL 5 stdbuf -oL setsid shutdown'), ['nohup', 'nice', 'ionice', 'timeout', 'stdbuf', 'setsid', 'shutdown']);
  t.same(cmds('nice -10 chroot /mnt doas -u x busybox shutdown'), ['nice', 'chroot', 'doas', 'busybox', 'shutdown']);
  t.same(cmds('xargs -n1 -P2 shutdown'), ['xargs', 'shutdown']);
  t.same(cmds('strace -f -o /tmp/t shutdown'), ['strace', 'shutdown']);
  t.same(cmds('flock /tmp/l shutdown'), ['flock', 'shutdown']);
  t.same(cmds("flock /tmp/l -c 'shutdown'"), ['shutdown', 'flock']);
  t.same(cmds("su - root -c 'shutdown -h now'"), ['shutdown', 'su']);
  t.same(cmds('runuser -u bob -- shutdown'), ['runuser', 'shutdown']);
  t.same(cmds('watch -n 1 shutdown -h now'), ['shutdown', 'watch'], 'watch runs its words through sh -c');
  t.same(cmds('watch -x shutdown'), ['watch', 'shutdown']);
  t.same(cmds("env -S 'shutdown -h' now"), ['shutdown', 'env'], 'env -S splits its string');
  t.same(cmds('find / -name x -exec rm -f {} \\; -execdir shutdown +'), ['find', 'rm', 'shutdown']);
  t.same(cmds('taskset -p 1 shutdown'), ['taskset'], 'taskset -p takes a pid, runs nothing');
  t.same(readShell('sudo shutdown -h now').commands[0]!.texts, ['sudo shutdown -h now', 'shutdown -h now'], 'normalized texts per command');
});

t.test('strings the shell runs are read recursively', async (t) => {
  t.same(cmds('eval "shut""down -h now"'), ['shutdown', 'eval']);
  t.same(cmds('eval eval shutdown'), ['shutdown', 'eval', 'eval']);
  t.same(cmds("bash -c 'sh -c \"shutdown\"'"), ['shutdown', 'sh', 'bash']);
  t.same(cmds("bash -lc 'reboot'; sh -ec 'halt'; dash -o posix -c poweroff"), ['reboot', 'bash', 'halt', 'sh', 'poweroff', 'dash']);
  t.same(cmds('echo $(shutdown -h now) `reboot`'), ['shutdown', 'reboot', 'echo']);
  t.same(cmds('diff <(shutdown) >(reboot)'), ['shutdown', 'reboot', 'diff']);
  t.same(cmds("bash <<< 'shutdown'"), ['shutdown', 'bash']);
  t.same(cmds("sh <<'EOF'\nshutdown -h now\nEOF\n"), ['shutdown', 'sh'], 'a literal here-document fed to sh');
  t.same(cmds('cat <<EOF\n$(shutdown)\nEOF\n'), ['shutdown', 'cat'], 'substitutions in an unquoted here-document run');
  t.same(cmds("trap 'shutdown' EXIT"), ['shutdown', 'trap']);
  t.same(cmds("PROMPT_COMMAND='reboot'"), ['reboot']);
  t.same(cmds("alias ll='shutdown -h now'"), ['shutdown', 'alias']);
  t.same(cmds('echo "$(echo "$(shutdown)")"'), ['shutdown', 'echo', 'echo'], 'nested inside double quotes');
  t.same(cmds('a=(1 $(reboot))'), ['reboot'], 'array assignment');
  t.same(cmds('echo ${x:-$(shutdown)}'), ['shutdown', 'echo'], 'inside ${…}');
});

t.test('what the gateway cannot read makes the line uncertain, scoped', async (t) => {
  t.same(what(readShell('x=shut; ${x}down -h now')), ['command:${x}']);
  t.same(what(readShell('$cmd -h now')), ['command:$cmd']);
  t.same(what(readShell('$(echo shutdown) -h now')), ['command:$(…)']);
  t.same(what(readShell('`echo shutdown` -h now')), ['command:`…`']);
  t.same(what(readShell('ls $HOME')), ['argument:$HOME'], 'an unknown argument of a known command');
  t.same(what(readShell('ls *.log')), ['argument:a glob (*.log)']);
  t.same(what(readShell('/sbin/shut*')), ['command:a glob (/sbin/shut*)']);
  t.same(what(readShell('eval $x')), ['command:eval of $x']);
  t.same(what(readShell('bash -c "$x"')), ['command:bash -c of $x']);
  t.same(what(readShell('sudo $x')), ['command:$x'], 'an unknown word where the wrapped command goes');
  t.same(what(readShell('source ~/x.sh; . y')), ['command:source (a file the gateway cannot read)', 'command:. (a file the gateway cannot read)']);
  t.match(what(readShell('alias x=y')), ['command:alias (the gateway does not follow aliases)']);
  t.same(what(readShell('bash x.sh')), ['command:bash running a script file the gateway cannot read (x.sh)']);
  t.same(what(readShell('echo shutdown | sh')), ['command:sh reading commands from a pipe']);
  t.same(what(readShell('sh < cmds.txt')), ['command:sh reading commands from a file']);
  t.same(what(readShell('sh <<EOF\n$x\nEOF\n')), ['command:sh reading a here-document with expansions']);
  t.same(what(readShell('bash')), ['command:bash reading commands from the connection'], 'an exec command: the channel input is not followed');
  t.same(what(readShell('bash', { interactive: true })), [], 'in a terminal, its lines come through the line editor');
  t.same(what(readShell('echo shutdown | xargs -I{} {}')), ['command:xargs with commands from its input', 'argument:xargs (arguments from its input)']);
  t.match(what(readShell('export PS1="$(reboot)"')), ['command:setting PS1']);
  t.same(unc('echo hi'), []);
  t.same(unc('echo "$(( 1 + 2 ))" ok'), [{ what: '$((…))', scope: 'argument' }]);
});

t.test('history expansion only in an interactive shell, never in single quotes', async (t) => {
  t.same(what(readShell('!!', { interactive: true })), ['command:history recall (!!)']);
  t.same(what(readShell('sudo !-2', { interactive: true })), ['command:history recall (!-2)']);
  t.same(what(readShell('echo "!sh"', { interactive: true })), ['command:history recall (!sh)']);
  t.same(what(readShell('^shut^reboot', { interactive: true })), ['command:history substitution (^…^…)']);
  t.same(unc("echo '!!'", true), [], 'single quotes');
  t.same(unc('echo \\!!', true), [], 'escaped');
  t.same(unc('! true; echo a != b', true), [], '! before a blank is not history');
  t.same(unc('!!'), [], 'ssh host "…" runs a non-interactive shell');
});

t.test('bounded: long, deep and explosive input is cut short and says so', async (t) => {
  const long = readShell(`${'echo a; '.repeat(MAX_SHELL_TEXT / 8)}shutdown`);
  t.ok(long.uncertain.some((u) => u.what === 'a command line longer than the gateway reads'));
  const deep = readShell(`${'$('.repeat(5000)}x${')'.repeat(5000)}`);
  t.ok(deep.uncertain.some((u) => u.what === 'nesting deeper than the gateway follows'));
  t.ok(readShell('${'.repeat(10000)).uncertain.some((u) => u.what === 'nesting deeper than the gateway follows'));
  t.ok(readShell(`${'bash -c "'.repeat(100)}`).uncertain.length > 0);
  const braces = readShell('{a,b}'.repeat(40));
  t.ok(braces.uncertain.some((u) => u.what === 'a brace expansion too large to follow'));
  const nested = readShell(`${'{'.repeat(10000)}a,b${'}'.repeat(10000)}`);
  t.notOk(isInternalFailure(nested));
  t.ok(readShell('a;'.repeat(30000)).uncertain.some((u) => /more commands than/.test(u.what) || /longer than/.test(u.what)));
});

// A word, quoted in one of the ways bash accepts.
const quoters: Record<string, (w: string) => string> = {
  single: (w) => `'${w.replace(/'/g, `'\\''`)}'`,
  double: (w) => `"${w.replace(/[\\"$`]/g, (c) => `\\${c}`)}"`,
  backslash: (w) => [...w].map((c) => (c === '\n' ? "$'\\n'" : `\\${c}`)).join(''),
  ansiC: (w) => `$'${[...w].map((c) => {
    const cp = c.codePointAt(0)!;
    return cp > 0xffff ? `\\U${cp.toString(16).padStart(8, '0')}` : `\\u${cp.toString(16).padStart(4, '0')}`;
  }).join('')}'`,
  mixed: (w) => [...w].map((c, i) => (i % 2 ? `'${c === "'" ? `'\\''` : c}'` : `"${c.replace(/[\\"$`]/g, (x) => `\\${x}`)}"`)).join(''),
};

t.test('property: reading never throws, whatever the input', async (t) => {
  fc.assert(fc.property(fc.string({ unit: 'binary', maxLength: 300 }), fc.boolean(), (s, interactive) => {
    const r = readShell(s, { interactive });
    return !isInternalFailure(r) && Array.isArray(r.commands);
  }), { numRuns: 3000 });
  // Shell-ish alphabets find more structure than random text.
  const shellish = fc.string({ unit: fc.constantFrom(...'ab $(){}[]`\'"\\;|&<>!#*?=\n\t-c'.split(''), 'sh -c ', 'eval ', '<<EOF\n', 'case ', ' in ', ';;', 'esac', 'if ', 'fi', '$((', '${'), maxLength: 60 });
  fc.assert(fc.property(shellish, fc.boolean(), (s, interactive) => !isInternalFailure(readShell(s, { interactive }))), { numRuns: 5000 });
  t.pass('no throw, no internal failure');
});

t.test('property: any quoting of a word reads back as that word', async (t) => {
  const word = fc.string({ unit: 'grapheme', minLength: 1, maxLength: 20 }).filter((w) => !w.includes('\0'));
  fc.assert(fc.property(word, fc.constantFrom(...Object.keys(quoters)), (w, style) => {
    const r = readShell(`echo ${quoters[style]!(w)}`);
    return r.commands.length === 1 && r.commands[0]!.words[1] === w && r.commands[0]!.words.length === 2 && r.uncertain.length === 0;
  }), { numRuns: 3000 });
  fc.assert(fc.property(fc.constantFrom('shutdown', 'reboot', 'halt'), fc.constantFrom(...Object.keys(quoters)), (w, style) => {
    return readShell(`${quoters[style]!(w)} -h now`).commands[0]!.commands[0] === w;
  }));
  t.pass('every quoting style gives the same word');
});
