/**
 * The SSH inspectors under hostile input: the line editor costs O(1) per key (Ctrl-W, DEL) and
 * keeps at most MAX_LINE characters whatever their UTF-8 length, and matches a plain model of its
 * documented keys in any chunking. Pure: no sockets. (SFTP's held bytes: inspectors.test.ts.)
 */
import t from 'tap';
import fc from 'fast-check';
import { LineEditor, MAX_LINE } from '../../protocols/ssh/inspector/line-editor.js';

const feedAll = (ed: LineEditor, s: string | Buffer, size = 65536) => {
  const b = Buffer.isBuffer(s) ? s : Buffer.from(s, 'utf8');
  const out = [];
  for (let i = 0; i < b.length; i += size) out.push(...ed.feed(b.subarray(i, i + size)));
  return out;
};

t.test('Ctrl-W after a 16,000-character word: each key is O(1) (was ~360 ms per Ctrl-W)', async (t) => {
  const ed = new LineEditor();
  feedAll(ed, `${'a'.repeat(16_000)} `);
  const t0 = performance.now();
  feedAll(ed, 'b\x17'.repeat(2000), 40); // the issue: twenty pairs blocked the gateway 7.4 s; here two thousand
  const ms = performance.now() - t0;
  t.ok(ms < 250, `2,000 b + Ctrl-W pairs took ${ms.toFixed(1)} ms (bound 250 ms)`);
  const [line] = feedAll(ed, '\r');
  t.equal(line!.line, `${'a'.repeat(16_000)} `, 'each Ctrl-W erased only the b');
  t.equal(line!.truncated, false);
});

t.test('the cap counts characters: 8 MiB of é keeps the last 16,384, marked truncated; DEL stays cheap', async (t) => {
  const ed = new LineEditor();
  const t0 = performance.now();
  feedAll(ed, 'é'.repeat(4 * 1024 * 1024)); // 8 MiB of UTF-8, in 64 KiB chunks
  const ms = performance.now() - t0;
  t.ok(ms < 5000, `8 MiB of input took ${ms.toFixed(0)} ms (bound 5 s)`);
  const store = (ed as unknown as { cps: Uint32Array }).cps;
  t.ok(store.length <= 2 * MAX_LINE, `the editor stores at most ${2 * MAX_LINE} code points (has room for ${store.length})`);
  t.equal([...ed.current].length, MAX_LINE, 'the line is 16,384 characters, not 4 million');
  t.ok(ed.isTruncated && ed.isUncertain);
  const t1 = performance.now();
  feedAll(ed, 'x\x7f'.repeat(50_000), 100);
  const delMs = performance.now() - t1;
  t.ok(delMs < 250, `50,000 x + DEL pairs on a full line took ${delMs.toFixed(1)} ms (bound 250 ms; DEL used to copy the line)`);
  const [line] = feedAll(ed, '\x7f\r');
  t.equal([...line!.line].length, MAX_LINE - 1);
  t.ok(line!.truncated && line!.uncertain, 'reported as truncated and uncertain');
  const [next] = feedAll(ed, 'ls\r');
  t.same([next!.line, next!.truncated, next!.uncertain], ['ls', false, false], 'the next line starts clean');
});

t.test('a line over the cap keeps its end (what runs last is what is checked)', async (t) => {
  const ed = new LineEditor();
  const [l] = feedAll(ed, `${'a'.repeat(20_000)} rm -rf /\r`, 1000);
  t.equal(l!.line.length, MAX_LINE);
  t.ok(l!.line.endsWith('a rm -rf /'));
  t.ok(l!.truncated && l!.uncertain);
  const [u] = feedAll(ed, `${'a'.repeat(20_000)}\x15echo ok\r`);
  t.same([u!.line, u!.truncated], ['echo ok', false], 'Ctrl-U drops the whole line, truncated part included');
});

/**
 * The editor's documented behaviour as a plain model (no escape sequences; \r is Enter): used to
 * check the editor on random keys in random chunkings.
 */
function model(input: Buffer): { line: string; uncertain: boolean }[] {
  const out: { line: string; uncertain: boolean }[] = [];
  let line: string[] = [];
  let uncertain = false;
  let pending: number[] = [];
  const flush = () => { if (pending.length) { line.push(...Buffer.from(pending).toString('utf8')); pending = []; } };
  for (const b of input) {
    if (b >= 0x80) { pending.push(b); continue; }
    if (b === 0x0d) { flush(); out.push({ line: line.join(''), uncertain }); line = []; uncertain = false; continue; }
    if (b === 0x7f || b === 0x08) { flush(); line.pop(); continue; }
    if (b === 0x15) { pending = []; line = []; continue; }
    if (b === 0x03) { pending = []; line = []; uncertain = false; continue; }
    if (b === 0x17) {
      flush();
      while (line.length && /\s/.test(line.at(-1)!)) line.pop();
      while (line.length && !/\s/.test(line.at(-1)!)) line.pop();
      continue;
    }
    if (b < 0x20) { if (b !== 0x04) uncertain = true; continue; }
    flush();
    line.push(String.fromCharCode(b));
  }
  return out;
}

t.test('the editor matches its model on random keys in any chunking (fixed seed)', async (t) => {
  const keys = ['a', 'b', ' ', ' ', '-', '/', '\x7f', '\x08', '\x15', '\x17', '\x17', '\x03', '\r', '\t', '\x01', '\x04',
    'é', '€', '𝄞', '\u00a0', '\u3000'].map((k) => Buffer.from(k, 'utf8'));
  const bytes = fc.array(fc.oneof(fc.constantFrom(...keys), fc.constantFrom(Buffer.from([0x80]), Buffer.from([0xe2, 0x82]), Buffer.from([0xc3]))), { maxLength: 60 })
    .map((ks) => Buffer.concat(ks));
  const differ: string[] = [];
  fc.assert(fc.property(bytes, fc.array(fc.integer({ min: 1, max: 7 }), { minLength: 1, maxLength: 5 }), (input, sizes) => {
    const ed = new LineEditor();
    const got: { line: string; uncertain: boolean }[] = [];
    for (let i = 0, k = 0; i < input.length; k++) {
      const n = sizes[k % sizes.length]!;
      for (const l of ed.feed(input.subarray(i, i + n))) got.push({ line: l.line, uncertain: l.uncertain });
      i += n;
    }
    if (JSON.stringify(got) !== JSON.stringify(model(input))) differ.push(input.toString('hex'));
  }), { seed: 25, numRuns: 3000 });
  t.same(differ.slice(0, 5), [], 'no input where editor and model differ');
});
