/**
 * A real VNC desktop for `tollgate demo` and the tests: Xvfb on a display it picks itself
 * (-displayfd), an xterm on it, and x11vnc (loopback, a free port) reading its password from a
 * VNC password file that Tollgate rewrites for every session (-rfbauth is re-read at each login).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { DemoTargets, TargetConfig } from '../types.js';
import { vncPasswdFile } from './des.js';
import { freePort, waitPort } from '../net.js';

function which(cmd: string): boolean {
  return ['/usr/bin', '/usr/local/bin', '/bin'].some((d) => existsSync(join(d, cmd)));
}

/** Start Xvfb with -displayfd; resolves the display number (":N"). */
export function startXvfb(size = '1024x768x24', extra: string[] = []): Promise<{ display: string; proc: ChildProcess }> {
  return new Promise((resolve, reject) => {
    const proc = spawn('Xvfb', ['-displayfd', '3', '-screen', '0', size, '-nolisten', 'tcp', ...extra], { stdio: ['ignore', 'ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    proc.stderr!.on('data', (d: Buffer) => { if (err.length < 4000) err += d.toString(); });
    const fd3 = proc.stdio[3] as NodeJS.ReadableStream;
    fd3.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /^(\d+)\n/.exec(out);
      if (m) resolve({ display: `:${m[1]}`, proc });
    });
    proc.on('error', reject);
    proc.on('exit', (code) => reject(new Error(`Xvfb exited with ${code}: ${err.trim().slice(0, 500)}`)));
  });
}

function kill(p: ChildProcess | null | undefined): Promise<void> {
  if (!p || p.exitCode !== null || p.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => { p.kill('SIGKILL'); }, 3000);
    p.once('exit', () => { clearTimeout(t); resolve(); });
    p.kill('SIGTERM');
  });
}

export interface VncDesktop {
  display: string;
  port: number;
  passwordFile: string;
  stop(): Promise<void>;
}

/** Xvfb + xterm + x11vnc in dir; null when not installed. */
export async function startDesktop(dir: string, opts: { size?: string; xterm?: boolean } = {}): Promise<VncDesktop | null> {
  if (!which('Xvfb') || !which('x11vnc')) return null;
  mkdirSync(dir, { recursive: true });
  const passwordFile = join(dir, 'vncpasswd');
  // A random password nobody knows until Tollgate installs one for a session.
  writeFileSync(passwordFile, vncPasswdFile(randomBytes(6).toString('base64')), { mode: 0o600 });
  const procs: ChildProcess[] = [];
  const stop = async () => {
    for (const p of procs.reverse()) await kill(p);
  };
  try {
    const x = await startXvfb(opts.size ?? '1024x768x24');
    procs.push(x.proc);
    const env = { ...process.env, DISPLAY: x.display };
    if (opts.xterm !== false && which('xterm')) {
      const xt = spawn('xterm', ['-geometry', '100x30+10+10', '-fa', 'Monospace', '-fs', '12', '-bg', 'black', '-fg', 'white'], { env, stdio: 'ignore', cwd: dir });
      procs.push(xt);
    }
    const port = await freePort();
    const vnc = spawn('x11vnc', [
      '-display', x.display, '-rfbport', String(port), '-localhost', '-rfbauth', passwordFile, '-shared', '-forever',
      '-quiet', '-nopw', '-noxrecord', '-noxfixes', '-noxdamage', '-nowf', '-noscr', '-cursor', 'arrow', '-norc',
    ], { env, stdio: ['ignore', 'ignore', 'ignore'], cwd: dir });
    procs.push(vnc);
    await waitPort('127.0.0.1', port);
    return { display: x.display, port, passwordFile, stop: async () => { await stop(); } };
  } catch (e) {
    await stop();
    throw e;
  }
}

export async function demo(dir: string, log: Logger): Promise<DemoTargets | null> {
  const d = await startDesktop(join(dir, 'vnc'));
  if (!d) {
    log.info('x11vnc or Xvfb not installed: no VNC demo target');
    return null;
  }
  const target: TargetConfig = {
    name: 'desktop', protocol: 'vnc', address: `127.0.0.1:${d.port}`, risk: 'medium',
    description: `Xvfb ${d.display} with an xterm, served by x11vnc`,
    roles: [
      { name: 'operator', description: 'keyboard, mouse and clipboard both ways', clipboard: 'both' },
      { name: 'viewer', description: 'watch only: input dropped, no clipboard', viewOnly: true, clipboard: 'none' },
    ],
    credentials: { passwordFile: d.passwordFile },
    options: {},
  };
  return {
    targets: [target],
    stop: async () => {
      await d.stop();
      rmSync(join(dir, 'vnc'), { recursive: true, force: true });
    },
  };
}
