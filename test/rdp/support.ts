/**
 * Real parts for the RDP tests: Xvfb displays, an xrdp + sesman pair in a temp dir (serialised
 * host-wide, see protocols/rdp/xrdp.ts), xfreerdp clients, window screenshots and pixel diffs.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodePng } from '../../recorder/screen/index.js';
import { startXrdp, xrdpInstalled, type XrdpServer } from '../../protocols/rdp/xrdp.js';
import { startXvfb as startVncXvfb } from '../../protocols/vnc/demo.js';
import type { Secret } from '../../auth/secret.js';
import type { ClientInfo } from '../../protocols/rdp/info.js';
import { fakeRdpTarget } from './fake-target.js';
import { login } from './client.js';

export function haveRdpTools(): string | null {
  if (process.getuid?.() !== 0) return 'tests must run as root (they create accounts)';
  if (!xrdpInstalled()) return 'xrdp + xorgxrdp are not installed';
  for (const b of ['xfreerdp', 'Xvfb', 'xdotool', 'import']) {
    if (spawnSync('sh', ['-c', `command -v ${b}`]).status !== 0) return `${b} is not installed`;
  }
  return null;
}

export interface Display { display: string; stop(): void }

/**
 * An Xvfb on a display number it picks itself (-displayfd), so test files running in parallel never
 * share a display (probing for a free number and then starting one raced with the VNC tests' Xvfb).
 */
export async function startXvfb(): Promise<Display> {
  const x = await startVncXvfb('1024x768x24');
  return { display: x.display, stop: () => { x.proc.kill('SIGKILL'); } };
}

export async function withXrdp(): Promise<XrdpServer> {
  const dir = mkdtempSync(join(tmpdir(), 'tg-xrdp-'));
  const srv = await startXrdp(dir);
  return { ...srv, stop: async () => { await srv.stop(); if (!process.env.RDP_KEEP_XRDP_DIR) rmSync(dir, { recursive: true, force: true }); } };
}

export interface Client { proc: ChildProcess; output(): string; exited: Promise<number | null>; stop(): void }

export function xfreerdp(display: string, args: string[]): Client {
  const proc = spawn('xfreerdp', ['/cert:ignore', '/size:800x600', '-grab-keyboard', '+auto-reconnect', '/auto-reconnect-max-retries:0', ...args], {
    env: { ...process.env, DISPLAY: display }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  proc.stdout!.on('data', (d) => { out += d; });
  proc.stderr!.on('data', (d) => { out += d; });
  const exited = new Promise<number | null>((res) => proc.on('exit', (c) => res(c)));
  return { proc, output: () => out, exited, stop: () => { if (proc.exitCode === null) proc.kill('SIGKILL'); } };
}

export function sleep(ms: number): Promise<void> { return new Promise((r) => setTimeout(r, ms)); }

export async function waitFor<T>(what: string, fn: () => T | Promise<T>, ms = 20_000): Promise<NonNullable<T>> {
  const until = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v as NonNullable<T>;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

export function clientWindow(display: string): string | null {
  const r = spawnSync('xdotool', ['search', '--onlyvisible', '--class', 'xfreerdp'], { env: { ...process.env, DISPLAY: display }, encoding: 'utf8' });
  return r.stdout.trim().split('\n').filter(Boolean)[0] ?? null;
}

export function screenshot(display: string, win: string, file: string): { width: number; height: number; rgba: Uint8Array } {
  const r = spawnSync('import', ['-window', win, file], { env: { ...process.env, DISPLAY: display } });
  if (r.status !== 0) throw new Error(`import failed: ${r.stderr}`);
  // ImageMagick may write 8-bit RGB; normalise to RGBA through a PNG32 conversion.
  spawnSync('convert', [file, `PNG32:${file}`]);
  return decodePng(readFileSync(file));
}

export function typeText(display: string, text: string): void {
  spawnSync('xdotool', ['type', '--delay', '60', text], { env: { ...process.env, DISPLAY: display } });
}

export function key(display: string, k: string): void {
  spawnSync('xdotool', ['key', k], { env: { ...process.env, DISPLAY: display } });
}

/** Mean absolute difference per channel (0..255) over the overlap, and the share of pixels differing by more than 48. */
export function pixelDiff(a: { width: number; height: number; rgba: Uint8Array }, b: { width: number; height: number; data?: Uint8Array; rgba?: Uint8Array }): { mean: number; bad: number } {
  const bd = b.rgba ?? b.data!;
  const w = Math.min(a.width, b.width);
  const h = Math.min(a.height, b.height);
  let sum = 0;
  let bad = 0;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = (y * a.width + x) * 4;
      const j = (y * b.width + x) * 4;
      const d = Math.abs(a.rgba[i]! - bd[j]!) + Math.abs(a.rgba[i + 1]! - bd[j + 1]!) + Math.abs(a.rgba[i + 2]! - bd[j + 2]!);
      sum += d / 3;
      if (d / 3 > 48) bad++;
    }
  }
  return { mean: sum / (w * h), bad: bad / (w * h) };
}

export function userExists(name: string): boolean {
  return spawnSync('id', ['-u', name]).status === 0;
}

export function mintedAccounts(prefix: string): string[] {
  return readFileSync('/etc/passwd', 'utf8').split('\n').map((l) => l.split(':')[0]!).filter((n) => n.startsWith(prefix));
}

/**
 * The fake RDP target of the directory tests: it records the Client Info login (user, domain,
 * password) the gateway makes upstream; `connect` is an RDP client through the gateway whose
 * `info()` waits for the login the target saw. `tls`: the gateway's certificate (read when a
 * connection comes, so the gateway may start after the target).
 */
export async function recordingRdpTarget(tls: () => { cert: string; key: Secret }) {
  const infos: ClientInfo[] = [];
  const fake = await fakeRdpTarget({ get cert() { return tls().cert; }, get key() { return tls().key.reveal(); } }, { width: 800, height: 600 }, () => {}, (i) => infos.push(i));
  const connect = async (port: number, username: string, secret: string) => {
    const before = infos.length;
    const c = await login(port, username, secret);
    c.sock.on('error', () => {});
    c.sock.resume();
    return { sock: c.sock, info: () => waitFor('the target to see the login', () => infos[before], 60_000), seen: () => infos.length > before };
  };
  return { port: fake.port, infos, connect, close: () => fake.close() };
}
