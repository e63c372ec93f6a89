/**
 * FreeRDP's shadow server as a real CredSSP/NTLMv2 target (`freerdp-shadow-cli /sec:nla +auth
 * /sam-file:<file>` showing an Xvfb display with an xterm), plus direct xfreerdp probes.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { startXvfb } from '../../protocols/vnc/demo.js';
import { sleep, type Display } from './support.js';
import { freePort } from '../../protocols/net.js';

export function haveShadowTools(): string | null {
  if (process.getuid?.() !== 0) return 'tests must run as root';
  for (const b of ['freerdp-shadow-cli', 'winpr-hash', 'xfreerdp', 'Xvfb', 'xterm', 'xdotool', 'import']) {
    if (spawnSync('sh', ['-c', `command -v ${b}`]).status !== 0) return `${b} is not installed`;
  }
  return null;
}

export interface Shadow { host: string; port: number; display: Display; output(): string; stop(): Promise<void> }

export async function startShadow(samFile: string): Promise<Shadow> {
  const display = await startXvfbSized('800x600x24');
  const term = spawn('xterm', ['-geometry', '100x30+20+20', '-bg', 'navy', '-fg', 'yellow', '-e', 'sh', '-c', 'echo NLA target desktop; exec sleep 3600'], {
    env: { ...process.env, DISPLAY: display.display }, stdio: 'ignore',
  });
  let proc: ChildProcess | null = null;
  let out = '';
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    out = '';
    proc = spawn('freerdp-shadow-cli', [`/port:${port}`, '/bind-address:127.0.0.1', '/sec:nla', '+auth', `/sam-file:${samFile}`], {
      env: { ...process.env, DISPLAY: display.display }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    proc.stdout!.on('data', (d) => { if (out.length < 200_000) out += d; });
    proc.stderr!.on('data', (d) => { if (out.length < 200_000) out += d; });
    for (let i = 0; i < 50 && proc.exitCode === null; i++) {
      await sleep(100);
      const up = await new Promise<boolean>((res) => {
        const c = net.connect({ host: '127.0.0.1', port }, () => { c.destroy(); res(true); });
        c.on('error', () => res(false));
      });
      if (up) {
        const p = proc;
        return {
          host: '127.0.0.1', port, display, output: () => out,
          stop: async () => {
            if (p.exitCode === null) { p.kill('SIGKILL'); await new Promise((r) => p.once('exit', r)); }
            if (term.exitCode === null) term.kill('SIGKILL');
            display.stop();
          },
        };
      }
    }
    if (proc.exitCode === null) proc.kill('SIGKILL');
  }
  if (term.exitCode === null) term.kill('SIGKILL');
  display.stop();
  throw new Error(`freerdp-shadow-cli did not start: ${out.slice(-2000)}`);
}

/** Xvfb of a given geometry (the shadow server shares the whole screen), on a display number it picks itself. */
export async function startXvfbSized(geometry: string): Promise<Display> {
  const x = await startXvfb(geometry);
  return { display: x.display, stop: () => { x.proc.kill('SIGKILL'); } };
}

/**
 * Connect xfreerdp straight to a server and report whether it got a session window
 * ('connected') or gave up ('refused'). The client is always stopped afterwards.
 */
export async function probe(display: string, args: string[], ms = 20_000): Promise<{ result: 'connected' | 'refused' | 'timeout'; output: string }> {
  const p = spawn('xfreerdp', ['/cert:ignore', '/size:800x600', '-grab-keyboard', '/auto-reconnect-max-retries:0', ...args], {
    env: { ...process.env, DISPLAY: display }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  p.stdout!.on('data', (d) => { out += d; });
  p.stderr!.on('data', (d) => { out += d; });
  const until = Date.now() + ms;
  try {
    while (Date.now() < until) {
      if (p.exitCode !== null || p.signalCode !== null) return { result: 'refused', output: out };
      const w = spawnSync('xdotool', ['search', '--onlyvisible', '--pid', String(p.pid)], { env: { ...process.env, DISPLAY: display }, encoding: 'utf8' });
      if (w.stdout.trim()) return { result: 'connected', output: out };
      await sleep(150);
    }
    return { result: 'timeout', output: out };
  } finally {
    if (p.exitCode === null) { p.kill('SIGKILL'); await new Promise((r) => p.once('exit', r)); }
  }
}
