/** Pure parts of the ssh module: line editor, SFTP and scp parsers, names, target validation. */
import t from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { LineEditor } from '../../protocols/ssh/inspector/line-editor.js';
import { SftpInspector, type FileTransfer } from '../../protocols/ssh/inspector/sftp.js';
import { ScpInspector, scpMode } from '../../protocols/ssh/inspector/scp.js';
import { sanitiseName, accountName, isMintedName } from '../../protocols/linux-accounts.js';
import { validateSshTarget } from '../../protocols/ssh/config.js';
import { sshModule } from '../../protocols/ssh/index.js';
import { tollgate, printable } from '../../protocols/ssh/wire.js';
import type { TargetConfig } from '../../protocols/types.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const lines = (ed: LineEditor, s: string | Buffer) => ed.feed(Buffer.isBuffer(s) ? s : Buffer.from(s, 'utf8'));

t.test('line editor follows typing, erasing and submitting', async (t) => {
  const ed = new LineEditor();
  t.same(lines(ed, 'ls -l'), []);
  t.same(lines(ed, '\r').map((l) => [l.line, l.uncertain]), [['ls -l', false]]);
  t.same(lines(ed, 'rm -rf /tmpX\x7f\r').map((l) => l.line), ['rm -rf /tmp'], 'DEL erases');
  t.same(lines(ed, 'rm -rf /\x08\x08\x08\x08\x08\x08\x08\x08echo hi\r').map((l) => l.line), ['echo hi'], 'backspace erases');
  t.same(lines(ed, 'shutdown now\x15echo ok\r').map((l) => l.line), ['echo ok'], 'Ctrl-U kills the line');
  t.same(lines(ed, 'echo one two\x17three\r').map((l) => l.line), ['echo one three'], 'Ctrl-W kills a word');
  t.same(lines(ed, 'reboot\x03ls\r').map((l) => l.line), ['ls'], 'Ctrl-C abandons the line');
  const two = lines(ed, 'a\rb\r\nc');
  t.same(two.map((l) => [l.line, l.at, l.end]), [['a', 1, 2], ['b', 3, 5]], 'several lines in one chunk, \\r\\n is one Enter');
  t.same(lines(ed, '\n').map((l) => l.line), ['c']);
  t.same(lines(ed, '\x1b[200~rm -rf /\x1b[201~\r').map((l) => [l.line, l.uncertain]), [['rm -rf /', false]], 'bracketed paste is plain text');
  t.same(lines(ed, 'écho ünï\r').map((l) => l.line), ['écho ünï'], 'UTF-8');
  const split = Buffer.from('é', 'utf8');
  t.same(lines(ed, split.subarray(0, 1)), []);
  t.same(lines(ed, Buffer.concat([split.subarray(1), Buffer.from('\r')])).map((l) => l.line), ['é'], 'UTF-8 split across chunks');
});

t.test('line editor marks what it cannot follow (known limit) but still reports the text', async (t) => {
  const ed = new LineEditor();
  t.same(lines(ed, '\x1b[A\r').map((l) => [l.line, l.uncertain]), [['', true]], 'history recall (up arrow) is uncertain');
  t.same(lines(ed, 'rm -rf /x\x1b[D\x1b[Dy\r').map((l) => [l.line, l.uncertain]), [['rm -rf /xy', true]], 'cursor movement: text checked, marked uncertain');
  t.same(lines(ed, 'shut\t now\r').map((l) => [l.line, l.uncertain]), [['shut now', true]], 'tab completion is uncertain');
  t.same(lines(ed, 'ls\r').map((l) => l.uncertain), [false], 'the next line starts certain again');
  t.same(lines(ed, '\x1bOA\r').map((l) => l.uncertain), [true], 'SS3 keys are uncertain');
});

function pkt(type: number, ...fields: (number | bigint | Buffer | string)[]): Buffer {
  const parts: Buffer[] = [Buffer.from([type])];
  for (const f of fields) {
    if (typeof f === 'number') { const b = Buffer.alloc(4); b.writeUInt32BE(f); parts.push(b); }
    else if (typeof f === 'bigint') { const b = Buffer.alloc(8); b.writeBigUInt64BE(f); parts.push(b); }
    else { const d = typeof f === 'string' ? Buffer.from(f) : f; const l = Buffer.alloc(4); l.writeUInt32BE(d.length); parts.push(l, d); }
  }
  const body = Buffer.concat(parts);
  const len = Buffer.alloc(4); len.writeUInt32BE(body.length);
  return Buffer.concat([len, body]);
}

t.test('SFTP inspector hashes uploads and downloads, in any chunking and out-of-order replies', async (t) => {
  const got: FileTransfer[] = [];
  const ops: string[] = [];
  const insp = new SftpInspector((x) => got.push(x), (op) => ops.push(op));
  const data = randomBytes(100_000);
  const handle = Buffer.from('h1');
  const opening = Buffer.concat([pkt(1, 3), pkt(3, 1, '/tmp/up.bin', 0x02 | 0x08 | 0x10, 0)]);
  const client = Buffer.concat([
    pkt(6, 2, handle, 0n, data.subarray(0, 32768)),
    pkt(6, 3, handle, 65536n, data.subarray(65536)), // out of order
    pkt(6, 4, handle, 32768n, data.subarray(32768, 65536)),
    pkt(4, 5, handle),
    pkt(14, 6, '/tmp/newdir', 0),
  ]);
  const server = Buffer.concat([pkt(2, 3), pkt(102, 1, handle)]);
  // OPEN, the server's HANDLE, then the client's writes, all fed in odd-sized slices.
  for (let i = 0; i < opening.length; i += 5) insp.feedClient(opening.subarray(i, i + 5));
  for (let i = 0; i < server.length; i += 3) insp.feedServer(server.subarray(i, i + 3));
  for (let i = 0; i < client.length; i += 997) insp.feedClient(client.subarray(i, i + 997));
  t.same(got, [{ path: '/tmp/up.bin', direction: 'upload', size: data.length, sha256: sha(data), complete: true }]);
  t.same(ops, ['sftp.mkdir']);

  const dl: FileTransfer[] = [];
  const i2 = new SftpInspector((x) => dl.push(x));
  const h2 = Buffer.from('hh');
  i2.feedClient(pkt(3, 10, '/etc/motd', 0x01, 0));
  i2.feedServer(pkt(102, 10, h2));
  i2.feedClient(Buffer.concat([pkt(5, 11, h2, 0n, 50_000), pkt(5, 12, h2, 50_000n, 50_000), pkt(5, 13, h2, 100_000n, 50_000)]));
  i2.feedServer(Buffer.concat([pkt(103, 12, data.subarray(50_000)), pkt(103, 11, data.subarray(0, 50_000)), pkt(101, 13, 1, 'EOF', '')]));
  i2.feedClient(pkt(4, 14, h2));
  t.same(dl, [{ path: '/etc/motd', direction: 'download', size: data.length, sha256: sha(data), complete: true }]);

  const bad = new SftpInspector(() => t.fail('no transfer from garbage'));
  bad.feedClient(Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3]));
  bad.feedClient(randomBytes(1000));
  t.equal(bad.broken, true, 'an impossible length stops the parser (the relay carries on)');
  const trunc = new SftpInspector(() => t.fail('no transfer from a truncated OPEN'));
  trunc.feedClient(pkt(3, 1));
  trunc.feedServer(pkt(102, 1, 'x'));
  trunc.feedClient(pkt(4, 2, 'x'));
  t.equal(trunc.broken, false, 'a malformed packet is skipped, not fatal');
});

t.test('SFTP inspector: what it holds (out-of-order data, open requests, files) is counted and given back', async (t) => {
  const insp = new SftpInspector(() => {});
  insp.feedClient(pkt(1, 3));
  insp.feedServer(pkt(2, 3));
  t.equal(insp.held, 0);
  // A thousand OPENs the server has not answered yet: tracked, and counted.
  for (let id = 1; id <= 1000; id++) insp.feedClient(pkt(3, id, `/tmp/f${id}`, 0x02, 0));
  const opens = insp.held;
  t.ok(opens >= 1000 * 128, `1,000 open requests count ${opens} bytes`);
  for (let id = 1; id <= 999; id++) insp.feedServer(pkt(101, id, 2, 'no', ''));
  insp.feedServer(pkt(102, 1000, Buffer.from('h')));
  t.ok(insp.held > 0 && insp.held < 2000, `answered requests are released; one open file remains (${insp.held})`);
  // Writes far ahead of the file's next offset wait (bounded per file), and count.
  const before = insp.held;
  for (let k = 0; k < 64; k++) insp.feedClient(pkt(6, 2000 + k, Buffer.from('h'), BigInt(1 << 20) + BigInt(k * 32768), Buffer.alloc(32768)));
  t.equal(insp.held - before, 64 * 32768, 'out-of-order data is counted byte for byte');
  // Half a packet is held too.
  const half = pkt(6, 3000, Buffer.from('h'), 0n, Buffer.alloc(10_000));
  insp.feedClient(half.subarray(0, 5000));
  t.equal(insp.held - before, 64 * 32768 + 5000);
  insp.feedClient(half.subarray(5000));
  insp.feedClient(pkt(4, 3001, Buffer.from('h')));
  t.equal(insp.held, 0, 'closing the file gives everything back');
  for (let id = 1; id <= 10; id++) insp.feedClient(pkt(3, 4000 + id, `/tmp/g${id}`, 0, 0));
  t.ok(insp.held > 0);
  insp.finish();
  t.equal(insp.held, 0, 'finish() forgets unanswered requests');
});

t.test('scp inspector follows the legacy protocol', async (t) => {
  t.same(scpMode('scp -t /tmp/x'), { direction: 'upload', path: '/tmp/x' });
  t.same(scpMode('scp -v -r -f -- dir'), { direction: 'download', path: 'dir' });
  t.equal(scpMode('ls -t'), null);
  t.equal(scpMode('scp'), null);
  const got: FileTransfer[] = [];
  const insp = new ScpInspector('upload', '/tmp/d', (x) => got.push(x));
  const a = randomBytes(5000);
  const stream = Buffer.concat([
    Buffer.from('T1700000000 0 1700000000 0\nD0755 0 sub\nC0644 5000 a.bin\n'), a, Buffer.from([0]),
    Buffer.from('C0600 0 empty\n'), Buffer.from([0]), Buffer.from('E\n'),
  ]);
  for (let i = 0; i < stream.length; i += 7) insp.feed(stream.subarray(i, i + 7));
  t.same(got, [
    { path: 'sub/a.bin', direction: 'upload', size: 5000, sha256: sha(a), complete: true },
    { path: 'sub/empty', direction: 'upload', size: 0, sha256: sha(Buffer.alloc(0)), complete: true },
  ]);
  const bad = new ScpInspector('upload', '/x', () => t.fail('nothing from garbage'));
  bad.feed(Buffer.from('Xnonsense\n'));
  t.equal(bad.broken, true);
});

t.test('account names are sanitised and only minted names are ever deleted', async (t) => {
  t.equal(sanitiseName('Alice.Smith@example.com'), 'alice-smith');
  t.equal(sanitiseName("'; rm -rf / #"), 'rm-rf');
  t.equal(sanitiseName('../../root'), 'root');
  t.equal(sanitiseName('☃☃☃'), 'user');
  t.equal(sanitiseName('a'.repeat(80)).length, 16);
  const n = accountName('tg-', 'Alice$(reboot)');
  t.match(n, /^tg-alice-reboot-[a-z0-9]{4}$/);
  t.ok(isMintedName('tg-', n));
  for (const bad of ['root', 'tg-', 'tg-x; rm -rf /-abcd', 'tg-alice-ABCD', 'xtg-alice-abcd', '', 42, null]) t.notOk(isMintedName('tg-', bad), String(bad));
});

t.test('target validation, client commands, messages', async (t) => {
  const base: TargetConfig = {
    name: 'web01', protocol: 'ssh', address: '10.0.0.5:22', risk: 'medium', roles: [{ name: 'user' }], options: {},
    credentials: { mode: 'ephemeral-account', admin: { username: 'root', privateKey: { file: 'k' } } },
  };
  t.equal(validateSshTarget(base), null);
  t.match(validateSshTarget({ ...base, credentials: { ...base.credentials, mode: 'magic' } }), { path: 'credentials.mode' });
  t.match(validateSshTarget({ ...base, credentials: { mode: 'ephemeral-account' } }), { path: 'credentials.admin' });
  t.match(validateSshTarget({ ...base, credentials: { mode: 'ephemeral-account', admin: { username: 'root' } } }), { path: 'credentials.admin' });
  t.match(validateSshTarget({ ...base, roles: [{ name: 'r', groups: ['sudo;id'] }] }), { path: 'roles[0].groups' });
  t.match(validateSshTarget({ ...base, credentials: { ...base.credentials, mode: 'certificate' } }), { path: 'roles[0]' });
  t.equal(validateSshTarget({ ...base, credentials: { ...base.credentials, mode: 'certificate' }, roles: [{ name: 'r', login: 'deploy' }] }), null);
  t.match(validateSshTarget({ ...base, credentials: { ...base.credentials, mode: 'checkout', account: 'svc' } }), { path: 'credentials.password' });
  t.match(validateSshTarget({ ...base, credentials: { ...base.credentials, trustedCaFile: 'relative/path' } }), { path: 'credentials.trustedCaFile' });
  const cmds = sshModule.clientCommands!({ protocol: 'ssh', host: 'gw.example', port: 2222, username: 'web01:admin', secret: "it's", target: base,
    caUrl: '', gatewayUrl: 'https://gw.example', certSha256: '', files: { ca: 'ca.pem', knownHosts: 'kh' } });
  t.equal(cmds['ssh (sshpass)'], `curl -fsS https://gw.example/api/v1/ssh/known_hosts -o kh && sshpass -p 'it'\\''s' ssh -p 2222 -o UserKnownHostsFile=kh -o StrictHostKeyChecking=yes web01:admin@gw.example`);
  t.match(cmds['scp (sshpass)'], /scp -P 2222 /);
  t.match(cmds['sftp (sshpass)'], /sftp -P 2222 /);
  t.equal(tollgate('Tollgate: x'), 'Tollgate: x');
  t.equal(tollgate('x'), 'Tollgate: x');
  t.equal(printable('a\x1b[2Jb\r\nc'), 'a [2Jb\nc', 'no terminal control sequences from messages');
});
