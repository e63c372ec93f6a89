/**
 * SSH channel inspectors (the SSH transport itself is ssh2's): the line editor that rebuilds typed
 * command lines for the rules, the SFTP inspector (both directions: requests, handles, data,
 * out-of-order writes and reads) and the scp inspector and command parser.
 */
import { LineEditor, MAX_LINE } from '../../../protocols/ssh/inspector/line-editor.js';
import { ScpInspector, scpMode } from '../../../protocols/ssh/inspector/scp.js';
import { SftpInspector } from '../../../protocols/ssh/inspector/sftp.js';
import { chunks, encodeRecords, invariant, records, type FuzzTarget } from '../engine.js';

function lineEditor(input: Buffer): void {
  const ed = new LineEditor();
  for (const c of chunks(input)) {
    let last = -1;
    for (const l of ed.feed(c)) {
      invariant(l.line.length <= 2 * MAX_LINE, `a line of ${l.line.length} UTF-16 units (limit ${MAX_LINE} characters)`);
      invariant(l.at >= 0 && l.at < c.length && l.end > l.at && l.end <= c.length && l.at > last, `offsets ${l.at}..${l.end} in a chunk of ${c.length}`);
      invariant(!/[\r\n]/.test(l.line), 'a submitted line contains Enter');
      last = l.at;
    }
  }
  invariant([...ed.current].length <= MAX_LINE, 'the current line outgrew MAX_LINE');
}

/** Records tagged even are client → server, odd server → client. */
function sftp(input: Buffer): void {
  let transfers = 0;
  const insp = new SftpInspector((t) => {
    transfers++;
    invariant(t.size >= 0 && (t.sha256 === null || /^[0-9a-f]{64}$/.test(t.sha256)), `transfer ${JSON.stringify(t)}`);
  });
  for (const r of records(input)) {
    for (const c of chunks(r.data)) {
      if (r.tag % 2 === 0) insp.feedClient(c); else insp.feedServer(c);
      invariant(insp.held >= 0, `held ${insp.held}`);
      invariant(insp.held <= 64 * 1024 * 1024 + input.length * 8, `held ${insp.held} for ${input.length} bytes of input`);
    }
  }
  insp.finish();
  invariant(transfers >= 0, 'transfers');
}

/** First line: the scp command; the rest: the stream in that direction. */
function scp(input: Buffer): void {
  const nl = input.indexOf(0x0a);
  const cmd = (nl < 0 ? input : input.subarray(0, nl)).toString('utf8');
  const mode = scpMode(cmd);
  const insp = new ScpInspector(mode?.direction ?? 'upload', mode?.path ?? '/tmp', (t) => {
    invariant(t.size >= 0 && /^[0-9a-f]{64}$/.test(t.sha256 ?? ''), `transfer ${JSON.stringify(t)}`);
  });
  for (const c of chunks(nl < 0 ? Buffer.alloc(0) : input.subarray(nl + 1))) insp.feed(c);
}

function pkt(type: number, ...fields: (number | bigint | Buffer | string)[]): Buffer {
  const parts: Buffer[] = [Buffer.from([type])];
  for (const f of fields) {
    if (typeof f === 'number') { const b = Buffer.alloc(4); b.writeUInt32BE(f >>> 0); parts.push(b); }
    else if (typeof f === 'bigint') { const b = Buffer.alloc(8); b.writeBigUInt64BE(f); parts.push(b); }
    else { const d = typeof f === 'string' ? Buffer.from(f) : f; const l = Buffer.alloc(4); l.writeUInt32BE(d.length); parts.push(l, d); }
  }
  const body = Buffer.concat(parts);
  const len = Buffer.alloc(4); len.writeUInt32BE(body.length);
  return Buffer.concat([len, body]);
}

const KEYS = ['\r', '\n', '\r\n', '\x7f', '\x08', '\x15', '\x17', '\x03', '\t', '\x1b[A', '\x1b[D', '\x1b[C', '\x1bOA', '\x1b[200~', '\x1b[201~', '\x1b', '\x1b[', 'é', '\u{1F600}', 'rm -rf /', ' ', 'a'];

export const targets: FuzzTarget[] = [
  {
    name: 'ssh.line-editor',
    covers: 'the SSH line editor: printable UTF-8 (split across chunks), erase keys, Ctrl-U/W/C, Enter, escape sequences, bracketed paste, very long lines',
    expected: () => false,
    run: lineEditor,
    // Long enough for a line over MAX_LINE characters; longer inputs only cost time.
    maxLength: 20 * 1024,
    arbitrary: (fcl) => fcl.array(fcl.oneof(fcl.constantFrom(...KEYS), fcl.string({ maxLength: 6 }), fcl.constantFrom('\x80', '\xc3', '\xe2\x82')), { maxLength: 80 })
      .map((ks) => new Uint8Array(Buffer.from(ks.join(''), 'latin1').length ? Buffer.from(ks.join(''), 'utf8') : Buffer.alloc(1))),
    seeds: () => [
      Buffer.from('ls -l\rrm -rf /tmpX\x7f\recho one two\x17three\rreboot\x03ls\r\x1b[200~rm -rf /\x1b[201~\récho ünï\r', 'utf8'),
      Buffer.from(`${'x'.repeat(16_500)}\r`, 'utf8'),
      Buffer.from(`${'é'.repeat(8_300)}\x17\x7f\r`, 'utf8'),
      Buffer.from('shut\t now\r\x1b[A\r\x1bOA\rrm -rf /x\x1b[D\x1b[Dy\r'),
    ],
  },
  {
    name: 'ssh.sftp',
    covers: 'the SFTP inspector both ways: INIT/VERSION, OPEN/HANDLE, READ/DATA, WRITE (in and out of order), CLOSE, STATUS, REMOVE/MKDIR/RMDIR/RENAME, handle reuse',
    expected: () => false,
    run: sftp,
    maxLength: 16 * 1024,
    arbitrary: (fcl) => fcl.array(fcl.oneof(
      fcl.tuple(fcl.nat(5), fcl.string({ maxLength: 12 }), fcl.nat(0x3f)).map(([id, p, f]) => ({ tag: 0, data: pkt(3, id, p, f, 0) })),
      fcl.tuple(fcl.nat(5), fcl.constantFrom('h1', 'h2')).map(([id, h]) => ({ tag: 1, data: pkt(102, id, h) })),
      fcl.tuple(fcl.nat(5), fcl.constantFrom('h1', 'h2'), fcl.nat(200), fcl.uint8Array({ maxLength: 64 })).map(([id, h, off, d]) => ({ tag: 0, data: pkt(6, id, h, BigInt(off), Buffer.from(d)) })),
      fcl.tuple(fcl.nat(5), fcl.constantFrom('h1', 'h2'), fcl.nat(200)).map(([id, h, off]) => ({ tag: 0, data: pkt(5, id, h, BigInt(off), 32) })),
      fcl.tuple(fcl.nat(5), fcl.uint8Array({ maxLength: 64 })).map(([id, d]) => ({ tag: 1, data: pkt(103, id, Buffer.from(d)) })),
      fcl.tuple(fcl.nat(5), fcl.constantFrom('h1', 'h2')).map(([id, h]) => ({ tag: 0, data: pkt(4, id, h) })),
      fcl.tuple(fcl.nat(5), fcl.nat(8)).map(([id, code]) => ({ tag: 1, data: pkt(101, id, code, 'msg', '') })),
      fcl.tuple(fcl.constantFrom(13, 14, 15, 18), fcl.string({ maxLength: 10 })).map(([t, p]) => ({ tag: 0, data: pkt(t, 9, p, p) })),
    ), { maxLength: 14 }).map((rs) => new Uint8Array(encodeRecords([{ tag: 0, data: pkt(1, 3) }, { tag: 1, data: pkt(2, 3) }, ...rs]))),
    seeds: () => [encodeRecords([
      { tag: 0, data: Buffer.concat([pkt(1, 3), pkt(3, 1, '/tmp/up.bin', 0x1a, 0)]) }, { tag: 1, data: Buffer.concat([pkt(2, 3), pkt(102, 1, 'h1')]) },
      { tag: 0, data: Buffer.concat([pkt(6, 2, 'h1', 0n, Buffer.alloc(100, 1)), pkt(6, 3, 'h1', 200n, Buffer.alloc(50, 2)), pkt(6, 4, 'h1', 100n, Buffer.alloc(100, 3)), pkt(4, 5, 'h1')]) },
      { tag: 0, data: Buffer.concat([pkt(3, 6, '/etc/hosts', 1, 0), pkt(5, 8, 'h2', 0n, 32768)]) }, { tag: 1, data: Buffer.concat([pkt(102, 6, 'h2'), pkt(103, 8, Buffer.from('127.0.0.1 localhost\n')), pkt(101, 9, 1, 'EOF', '')]) },
      { tag: 0, data: Buffer.concat([pkt(4, 10, 'h2'), pkt(14, 11, '/tmp/d', 0), pkt(18, 12, '/tmp/a', '/tmp/b')]) },
    ])],
  },
  {
    name: 'ssh.scp',
    covers: 'the scp command parser and the legacy scp protocol inspector (C/D/E/T lines, file data, acks, errors) in both directions',
    expected: () => false,
    run: scp,
    maxLength: 8 * 1024,
    arbitrary: (fcl) => fcl.tuple(fcl.constantFrom('scp -t /tmp/x', 'scp -f /etc/hosts', 'scp -r -t /tmp', "scp -t '/tmp/a b'", 'scp -v -d -p -t .', 'ls'), fcl.array(fcl.oneof(
      fcl.tuple(fcl.string({ maxLength: 8 }), fcl.uint8Array({ maxLength: 40 })).map(([n, d]) => Buffer.concat([Buffer.from(`C0644 ${d.length} ${n || 'f'}\n`), Buffer.from(d), Buffer.from([0])])),
      fcl.string({ maxLength: 8 }).map((n) => Buffer.from(`D0755 0 ${n || 'd'}\n`)),
      fcl.constant(Buffer.from('E\n')), fcl.constant(Buffer.from('T1700000000 0 1700000000 0\n')), fcl.constant(Buffer.from([0])), fcl.constant(Buffer.from('\x01scp: error\n')),
    ), { maxLength: 10 })).map(([c, parts]) => new Uint8Array(Buffer.concat([Buffer.from(`${c}\n`), ...parts]))),
    seeds: () => [Buffer.from('scp -r -t /tmp\nD0755 0 dir\nT1700000000 0 1700000000 0\nC0644 5 hello\nhello\0E\nC0600 0 empty\n\0')],
  },
];
