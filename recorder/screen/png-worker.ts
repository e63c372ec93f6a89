/**
 * PNG encoding off the event loop: one worker thread for the process encodes large screen images
 * (keyframes, big damaged rectangles) with the same pngjs options as encodePng, so one session's
 * full-screen frames never stall the other sessions; the thread runs at a lower priority (nice 10
 * on Linux, when running as root) than the event loop. Pixels are transferred, not copied. A caller
 * that must finish now (a recording being closed) can wait for a job synchronously (waitFor).
 * If the worker cannot start or dies, jobs fail (png null) and callers encode on the main thread.
 */
import { MessageChannel, receiveMessageOnPort, Worker, type MessagePort } from 'node:worker_threads';
import { createRequire } from 'node:module';
import { getPriority, setPriority } from 'node:os';
import { pngOptions } from './png.js';

/** Plain CommonJS run by the worker (no TypeScript loader there): it needs only pngjs. */
const SOURCE = `
const { workerData } = require('node:worker_threads');
// Background work: on Linux this thread (its id from /proc/thread-self) yields to the event loop,
// when the process may raise it again (root) while someone waits for a result.
let tid = 0;
try {
  if (process.getuid() === 0) {
    tid = Number(require('node:fs').readlinkSync('/proc/thread-self').split('/').pop());
    require('node:os').setPriority(tid, 10);
  }
} catch { tid = 0; }
const { PNG } = require(workerData.pngjs);
const { port, signal } = workerData;
const count = new Int32Array(signal);
port.postMessage({ tid });
port.on('message', ({ id, width, height, data }) => {
  let reply;
  try {
    const png = new PNG({ width, height, colorType: 6, inputHasAlpha: true });
    png.data = Buffer.from(data.buffer, data.byteOffset, width * height * 4);
    reply = { id, png: PNG.sync.write(png, workerData.options).toString('base64') };
  } catch (e) {
    reply = { id, error: String((e && e.message) || e) };
  }
  port.postMessage(reply);
  Atomics.add(count, 0, 1);
  Atomics.notify(count, 0);
});
`;

/** Longest a synchronous wait for one job may take before it is given up (then the main thread encodes). */
const SYNC_WAIT_MS = 2_000;

export interface PngJob {
  done: boolean;
  /** Base64 PNG when done and it worked. */
  png: string | null;
}

type Reply = { id?: number; png?: string; tid?: number };

class PngWorker {
  private worker: Worker | null = null;
  private port: MessagePort | null = null;
  private count = new Int32Array(new SharedArrayBuffer(4));
  private broken = false;
  private next = 1;
  private waiting = new Map<number, { job: PngJob; then: () => void }>();
  /** The worker thread's Linux thread id (0: unknown), to raise its priority while someone waits for it. */
  private tid = 0;

  private start(): MessagePort | null {
    if (this.port || this.broken) return this.port;
    try {
      const pngjs = createRequire(import.meta.url).resolve('pngjs');
      const { port1, port2 } = new MessageChannel();
      const w = new Worker(SOURCE, {
        eval: true,
        workerData: { pngjs, options: pngOptions(true), port: port2, signal: this.count.buffer },
        transferList: [port2],
      });
      port1.on('message', (m: Reply) => this.finish(m));
      // Neither keeps the process alive (unref after the listener: adding one refs the port).
      w.unref();
      port1.unref();
      const fail = () => {
        this.broken = true;
        this.worker = null;
        this.port = null;
        for (const id of [...this.waiting.keys()]) this.finish({ id });
      };
      w.on('error', fail);
      w.on('exit', fail);
      this.worker = w;
      this.port = port1;
    } catch {
      this.broken = true;
    }
    return this.port;
  }

  private finish(m: Reply): void {
    if (m.tid !== undefined) { this.tid = m.tid; return; }
    const w = this.waiting.get(m.id!);
    if (!w) return;
    this.waiting.delete(m.id!);
    w.job.done = true;
    w.job.png = m.png ?? null;
    w.then();
  }

  /**
   * Encode w*h RGBA pixels in the worker; rgba's buffer is transferred (the caller gives it up).
   * then() runs when the job is done (or failed).
   */
  encode(width: number, height: number, rgba: Uint8Array, then: () => void): PngJob {
    const job: PngJob = { done: false, png: null };
    const port = this.start();
    if (!port) { job.done = true; queueMicrotask(then); return job; }
    const n = width * height * 4;
    const data = rgba.byteOffset === 0 && rgba.buffer.byteLength === n ? rgba : rgba.slice(0, n);
    const id = this.next++;
    this.waiting.set(id, { job, then });
    port.postMessage({ id, width, height, data }, [data.buffer as ArrayBuffer]);
    return job;
  }

  /**
   * Block until job is done (its replies are taken in order). Meanwhile the worker runs at the
   * event loop's priority: the caller is waiting for it, so it is no longer background work.
   */
  waitFor(job: PngJob): void {
    if (job.done || !this.port) return;
    const urgent = this.priority(getPriority());
    try {
      const until = Date.now() + SYNC_WAIT_MS;
      while (!job.done && this.port && Date.now() < until) {
        const seen = Atomics.load(this.count, 0);
        const m = receiveMessageOnPort(this.port);
        if (m) { this.finish(m.message as Reply); continue; }
        Atomics.wait(this.count, 0, seen, 50);
      }
    } finally {
      if (urgent) this.priority(10);
    }
  }

  private priority(p: number): boolean {
    if (!this.tid) return false;
    try { setPriority(this.tid, p); return true; } catch { return false; }
  }
}

export const pngWorker = new PngWorker();
