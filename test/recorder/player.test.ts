/**
 * A cast written by the recorder, downloaded through recorder.read(), loads in asciinema-player
 * (the portal's player) in a real Chromium: duration, final screen text and size match.
 */
import t from 'tap';
import { createServer, type Server } from 'node:http';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { verifyCastText } from '../../recorder/index.js';
import { opened } from './helpers.js';

const T0 = Date.UTC(2026, 10, 23, 14, 0, 0);
const CHROMIUM = [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p): p is string => !!p && existsSync(p));

t.test('asciinema-player loads and renders a recorded cast', async (t) => {
  t.ok(CHROMIUM, 'a Chromium binary is installed (Debian package chromium)');
  if (!CHROMIUM) return;
  const { clock, r, rec } = await opened(t, 'player-1', T0);
  const cast = rec.cast({ width: 60, height: 12, env: { TERM: 'xterm-256color' } });
  clock.advance(300);
  cast.output('$ cat notes\r\nthis scrolls away\r\n');
  clock.advance(700);
  cast.resize(72, 14);
  const bytes = Buffer.from('\x1b[H\x1b[2J\x1b[3J$ echo héllo 世界\r\nhéllo 世界\r\n\x1b[1;32mgreen\x1b[0m done\r\n', 'utf8');
  for (let i = 0; i < bytes.length; i += 3) {
    clock.advance(10);
    cast.output(bytes.subarray(i, i + 3)); // cuts multi-byte characters
  }
  clock.advance(480);
  cast.marker('end of demo');
  await rec.close();
  const [recording] = await r.store.listRecordings({ sessionId: 'player-1' });
  const check = verifyCastText(readFileSync(recording!.path, 'utf8'));
  t.ok(check.ok, 'valid cast');

  const bundle = join(dirname(createRequire(import.meta.url).resolve('asciinema-player')), 'bundle');
  const server: Server = createServer((req, res) => {
    if (req.url === '/player.js') { res.setHeader('content-type', 'text/javascript'); res.end(readFileSync(join(bundle, 'asciinema-player.min.js'))); return; }
    if (req.url === '/player.css') { res.setHeader('content-type', 'text/css'); res.end(readFileSync(join(bundle, 'asciinema-player.css'))); return; }
    if (req.url === '/session.cast') {
      r.recorder.read(recording!.id).then((s) => { res.setHeader('content-type', 'application/x-asciicast'); s.pipe(res); }, () => { res.statusCode = 404; res.end(); });
      return;
    }
    res.setHeader('content-type', 'text/html; charset=utf-8');
    res.end('<!doctype html><html><head><meta charset="utf-8"><link rel="stylesheet" href="/player.css"></head><body><div id="p"></div><script src="/player.js"></script></body></html>');
  });
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', () => res()));
  t.teardown(() => new Promise<void>((res) => server.close(() => res())));
  const port = (server.address() as { port: number }).port;

  const browser: Browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  t.teardown(() => browser.close());
  const page = await browser.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`http://127.0.0.1:${port}/`);
  const result = await page.evaluate(async () => {
    const w = window as unknown as { AsciinemaPlayer: { create(src: string, el: Element | null, opts: object): { getDuration(): Promise<number | undefined> | number | undefined; seek(pos: number): Promise<void> } } };
    const p = w.AsciinemaPlayer.create('/session.cast', document.getElementById('p'), { preload: true });
    let d: number | undefined;
    for (let i = 0; i < 200 && d === undefined; i++) {
      d = (await p.getDuration()) ?? undefined;
      if (d === undefined) await new Promise((res) => setTimeout(res, 25));
    }
    if (d === undefined) return { duration: null, text: '', cols: '', rows: '' };
    await p.seek(d);
    await new Promise((res) => setTimeout(res, 300));
    const term = document.querySelector('.ap-term') as HTMLElement | null;
    return {
      duration: d,
      text: document.getElementById('p')!.innerText,
      cols: term?.style.getPropertyValue('--term-cols') ?? '',
      rows: term?.style.getPropertyValue('--term-rows') ?? '',
    };
  });
  t.same(errors, [], 'no page errors');
  t.equal(result.duration, check.duration, 'the player sees the same duration');
  t.equal(result.cols, '72', 'the resize reached the player');
  t.equal(result.rows, '14');
  // The player lays cells out in spans (wide characters alone): compare without whitespace.
  const screen = result.text.replace(/\s+/g, '');
  t.match(screen, /\$echohéllo世界héllo世界greendone/, 'multi-byte text split across reads renders whole');
  t.notMatch(screen, /scrolls/, 'the clear screen was replayed');
});
