/**
 * Terminal lines read together the way bash reads them (protocols/ssh/inspector/shell-lines.ts):
 * continuation lines, here-document bodies (data until the delimiter, then read with the command
 * that reads them), Ctrl-C dropping what was kept, a denied line never kept, and the size cap.
 */
import t from 'tap';
import { LineEditor } from '../../protocols/ssh/inspector/line-editor.js';
import { ShellLines, MAX_PENDING } from '../../protocols/ssh/inspector/shell-lines.js';

/** Type keystrokes; each submitted line is read, accepted unless `deny` says so. */
function session() {
  const editor = new LineEditor();
  const lines = new ShellLines();
  return (keys: string, deny = false) => editor.feed(Buffer.from(keys)).map((l) => {
    const r = lines.read(l);
    if (!deny) r.accept();
    return r;
  });
}

t.test('a word split over two lines is one word', async (t) => {
  const type = session();
  const [a] = type('echo "x" sh"ut\r');
  t.equal(a!.shell.incomplete, true);
  const [b] = type('down" -h now\r');
  t.equal(b!.text, 'echo "x" sh"ut\ndown" -h now');
  t.same(b!.shell.commands.map((c) => c.words), [['echo', 'x', 'shut\ndown', '-h', 'now']], 'the newline is inside the word, as in bash');
  const [c] = type('s\\\r');
  const [d] = type('hutdown\r');
  t.equal(c!.shell.incomplete, true);
  t.same(d!.shell.commands[0]!.commands, ['shutdown'], 'backslash-newline joins');
  const [e] = type('echo ok\r');
  t.equal(e!.text, 'echo ok', 'a complete command is not kept');
});

t.test('here-document bodies are data until the delimiter; then the whole command is read', async (t) => {
  const type = session();
  type("sh <<'EOF'\r");
  const body = type('shutdown -h now\r');
  t.same(body[0]!.shell.commands, [], 'a body line is not read as a command');
  t.equal(body[0]!.text, 'shutdown -h now', 'but its raw text is still checked by patterns');
  const [end] = type('EOF\r');
  t.same(end!.shell.commands.flatMap((c) => c.commands), ['shutdown', 'sh'], 'the body fed to sh is read with it');
  t.equal(end!.shell.incomplete, false);
  const [after] = type('echo a\r');
  t.equal(after!.text, 'echo a');
  // <<- strips leading tabs of the delimiter line.
  type('cat <<-X\r');
  type('\tbody\r');
  const [x] = type('\tX\r');
  t.equal(x!.shell.incomplete, false);
});

t.test('Ctrl-C drops what was kept; a denied line is never kept', async (t) => {
  const type = session();
  type('echo "a\r');
  const [a] = type('\x03echo b\r');
  t.equal(a!.text, 'echo b', 'after Ctrl-C the shell starts afresh');
  type('echo "c\r');
  type('" ; shutdown\r', true);
  const [d] = type('"\r');
  t.equal(d!.text, 'echo "c\n"', 'the denied line is not part of what bash holds');
});

t.test('editing keys and a command too long to follow are uncertain', async (t) => {
  const type = session();
  const [a] = type('ls\t\r');
  t.same(a!.uncertain, [{ what: 'editing keys the gateway does not follow (Tab, arrows, history search)', scope: 'command' }]);
  type('echo "\r');
  let last;
  for (let i = 0; i < 40; i++) last = type(`${'y'.repeat(1000)}\r`)[0];
  const lost = 'a command spanning more lines than the gateway follows (Ctrl-C starts afresh)';
  t.ok(last!.uncertain.some((u) => u.what === lost), 'past the cap every line is uncertain');
  t.ok(last!.text.length <= MAX_PENDING, 'what is kept stays bounded');
  t.same(type('shutdown\r')[0]!.shell.commands[0]!.commands, ['shutdown'], 'a line is still read on its own');
  t.same(type('\x03echo fresh\r')[0]!.uncertain, [], 'Ctrl-C starts afresh');
  // A long here-document: lost until its delimiter.
  type('cat <<EOF\r');
  for (let i = 0; i < 20; i++) type(`${'z'.repeat(1000)}\r`);
  t.ok(type('more\r')[0]!.uncertain.some((u) => u.what === lost));
  t.ok(type('EOF\r')[0]!.uncertain.some((u) => u.what === lost));
  t.same(type('echo back\r')[0]!.uncertain, [], 'the delimiter ends it');
});
