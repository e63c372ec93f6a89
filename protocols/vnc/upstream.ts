/**
 * The target side: install a session password (password file and/or admin command), dial the VNC
 * server, authenticate with VNC authentication, and read its ServerInit.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, rename, writeFile, stat } from 'node:fs/promises';
import net from 'node:net';
import type { Clock } from '../../policies/clock.js';
import type { Secret } from '../../auth/secret.js';
import { ByteReader, ProtocolError } from './reader.js';
import { vncAuthResponse, vncPasswdFile } from './des.js';
import { parseServerInitHead, parseVersion, SEC, type ServerInit } from './handshake.js';
import type { VncCredentials } from './config.js';
import { noteIssued } from '../../auth/secret.js';

export class UpstreamError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UpstreamError';
  }
}

const targetLocks = new Map<string, Promise<unknown>>();
const held = new AsyncLocalStorage<Set<string>>();

/**
 * Run fn with the target's password to itself: installing a session password and logging in with
 * it must not interleave with another session's revoke (which rotates the password again).
 */
export function withTargetLock<T>(target: string, fn: () => Promise<T>): Promise<T> {
  // Re-entrant: a failed mint revokes its lease from inside the lock.
  if (held.getStore()?.has(target)) return fn();
  const inner = () => held.run(new Set([...(held.getStore() ?? []), target]), fn);
  const prev = targetLocks.get(target) ?? Promise.resolve();
  const run = prev.then(inner, inner);
  const tail = run.catch(() => undefined);
  targetLocks.set(target, tail);
  void tail.then(() => { if (targetLocks.get(target) === tail) targetLocks.delete(target); });
  return run;
}

/** 8 random printable characters (VNC uses only the first 8 bytes of a password). */
export function mintPassword(): string {
  const alphabet = 'ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789';
  return noteIssued('vnc_password', Array.from(randomBytes(8), (b) => alphabet[b % alphabet.length]).join(''));
}

/** Make `password` the VNC server's password through every configured admin hook. */
export async function installPassword(cred: VncCredentials, password: Secret, timeoutMs = 15_000): Promise<void> {
  if (cred.passwordFile) {
    const tmp = `${cred.passwordFile}.tollgate-${randomBytes(4).toString('hex')}`;
    let mode = 0o600;
    try { mode = (await stat(cred.passwordFile)).mode & 0o777; } catch { /* new file */ }
    await writeFile(tmp, vncPasswdFile(password.reveal()), { mode: 0o600 });
    await chmod(tmp, mode);
    await rename(tmp, cred.passwordFile);
  }
  if (cred.installCommand) {
    const [cmd, ...args] = cred.installCommand;
    await new Promise<void>((res, rej) => {
      const child = spawn(cmd!, args, { stdio: ['pipe', 'ignore', 'pipe'] });
      let err = '';
      const timer = setTimeout(() => { child.kill('SIGKILL'); rej(new UpstreamError('the password install command timed out')); }, timeoutMs);
      child.stderr.on('data', (d: Buffer) => { if (err.length < 2000) err += d.toString('utf8'); });
      child.on('error', (e) => { clearTimeout(timer); rej(new UpstreamError(`the password install command cannot run: ${e.message}`)); });
      child.on('close', (code) => {
        clearTimeout(timer);
        if (code === 0) res();
        else rej(new UpstreamError(`the password install command failed (exit ${code}): ${err.trim().slice(0, 300).split(password.reveal()).join('<secret>')}`));
      });
      child.stdin.on('error', () => { /* reported by close */ });
      child.stdin.end(`${password.reveal()}\n`);
    });
  }
}

export interface Upstream {
  socket: net.Socket;
  init: ServerInit;
  /** Bytes that arrived after ServerInit. */
  rest: Buffer;
}

/** Connect, authenticate with VNC authentication, send ClientInit (shared) and read ServerInit. */
export async function dialUpstream(o: { host: string; port: number; password: Secret; timeoutMs: number; clock: Clock }): Promise<Upstream> {
  const socket = net.connect({ host: o.host, port: o.port });
  socket.setNoDelay(true);
  const reader = new ByteReader(socket, 'the VNC server');
  let failed: Error | null = null;
  socket.on('error', (e) => { failed = e; });
  const timer = o.clock.setTimer(o.timeoutMs, () => {
    failed ??= new UpstreamError(`the VNC server at ${o.host}:${o.port} did not answer within ${Math.round(o.timeoutMs / 1000)}s`);
    socket.destroy();
  });
  try {
    const minor = parseVersion(await reader.read(12));
    socket.write(minor >= 8 ? 'RFB 003.008\n' : minor === 7 ? 'RFB 003.007\n' : 'RFB 003.003\n');
    let types: number[];
    if (minor === 3) {
      types = [await reader.u32()];
    } else {
      const n = await reader.u8();
      types = n ? [...(await reader.read(n))] : [0];
    }
    if (types[0] === 0 && types.length === 1) {
      const reason = (await reader.string(4096, 'reason')).toString('utf8');
      throw new UpstreamError(`the VNC server refused the connection: ${reason}`);
    }
    if (!types.includes(SEC.VncAuth)) throw new UpstreamError(`the VNC server does not offer VNC authentication (offers ${types.join(', ')})`);
    if (minor !== 3) socket.write(Buffer.from([SEC.VncAuth]));
    const challenge = await reader.read(16);
    socket.write(vncAuthResponse(o.password.reveal(), challenge));
    const result = await reader.u32();
    if (result !== 0) {
      let reason = 'authentication failed';
      if (minor >= 8) reason = (await reader.string(4096, 'reason').catch(() => Buffer.from(reason))).toString('utf8') || reason;
      throw new UpstreamError(`the VNC server refused the session password: ${reason}`);
    }
    socket.write(Buffer.from([1]));
    const head = parseServerInitHead(await reader.read(24));
    const name = (await reader.read(head.nameLength)).toString('utf8');
    reader.detach();
    return { socket, init: { width: head.width, height: head.height, pf: head.pf, name }, rest: reader.take() };
  } catch (e) {
    socket.destroy();
    const err = failed ?? e;
    if (err instanceof UpstreamError) throw err;
    if (err instanceof ProtocolError) throw new UpstreamError(`the VNC server spoke garbage: ${err.message}`);
    throw new UpstreamError(`cannot reach the VNC server at ${o.host}:${o.port}: ${(err as Error).message}`);
  } finally {
    timer.cancel();
  }
}
