/**
 * Cross-checks with the reference implementation, the asciinema CLI (Debian package asciinema):
 * it reads every line of a cast the recorder wrote, and the recorder's validator and replay accept
 * a cast asciinema recorded from a real command. asciinema needs a terminal: script(1) gives it one.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { replayCast, verifyCastText } from '../../recorder/index.js';
import { opened } from './helpers.js';

const T0 = Date.UTC(2026, 10, 23, 16, 0, 0);
const ASCIINEMA = '/usr/bin/asciinema';

function inPty(command: string, cwd: string): Promise<{ code: number | null; out: Buffer }> {
  return new Promise((resolve, reject) => {
    const child = spawn('script', ['-qec', command, '/dev/null'], { cwd, env: { ...process.env, HOME: cwd, TERM: 'xterm' }, stdio: ['ignore', 'pipe', 'inherit'] });
    const parts: Buffer[] = [];
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.stdout.on('data', (d: Buffer) => parts.push(d));
    child.on('error', reject);
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, out: Buffer.concat(parts) }); });
  });
}

t.test('asciinema cat reads a recorded cast back byte for byte', async (t) => {
  t.ok(existsSync(ASCIINEMA), 'asciinema is installed (Debian package asciinema)');
  if (!existsSync(ASCIINEMA)) return;
  const { clock, r, rec } = await opened(t, 'ref-1', T0);
  const cast = rec.cast({ width: 80, height: 24, env: { TERM: 'xterm', SHELL: '/bin/bash' } });
  const output = Buffer.from('$ echo "héllo 世界 🎉"\r\nhéllo 世界 🎉\r\n\x1b[31mred\x1b[0m \\ "quotes" \t tab\r\n', 'utf8');
  for (let i = 0; i < output.length; i += 5) {
    clock.advance(7);
    cast.output(output.subarray(i, i + 5));
    if (i === 20) { cast.input('ls\r'); cast.resize(100, 40); cast.marker('half way'); }
  }
  await rec.close();
  const [recording] = await r.store.listRecordings({ sessionId: 'ref-1' });
  const res = await inPty(`${ASCIINEMA} cat ${recording!.path}`, r.dir);
  t.equal(res.code, 0, 'asciinema cat succeeds');
  t.same(res.out.toString('utf8'), output.toString('utf8'), 'it prints exactly the recorded output');
});

t.test('a cast recorded by asciinema from a real command passes verifyCastText and replays', async (t) => {
  t.ok(existsSync(ASCIINEMA), 'asciinema is installed');
  if (!existsSync(ASCIINEMA)) return;
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-asciinema-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'real.cast');
  const res = await inPty(`${ASCIINEMA} rec -q -c 'printf "h\\303\\251llo\\n"; sleep 0.2; printf "\\033[2Jdone"' ${file}`, dir);
  t.equal(res.code, 0, 'asciinema rec succeeds');
  const text = readFileSync(file, 'utf8');
  const check = verifyCastText(text);
  t.same(check.errors, []);
  t.ok(check.ok);
  const replay = replayCast(text);
  t.equal(replay.header.version, 2);
  const out = replay.events.filter((e) => e.type === 'o').map((e) => e.data).join('');
  t.match(out, /héllo\r\n/);
  t.match(out, /\x1b\[2Jdone/);
  t.ok(check.duration >= 0.2, `duration ${check.duration} covers the sleep`);
});
