/**
 * In-memory stand-ins for what a relay talks to, so a relay's state machine can be driven
 * synchronously by the fuzzer: a session (real compiled command rules, a recording that only
 * counts, a buffer budget), and sockets that count what is written to them.
 */
import { EventEmitter } from 'node:events';
import pino from 'pino';
import { compileRules } from '../../../policies/rules.js';
import type { CommandRuleConfig } from '../../../policies/config.js';
import type { EndReason, LiveSession } from '../../../protocols/types.js';
import type { SessionRecording, StatementHandle } from '../../../recorder/types.js';

const silent = pino({ level: 'silent' });

/** Rules that exercise every action (deny, kill, alert) on SQL and shell text. */
export const FUZZ_RULES: CommandRuleConfig[] = [
  { kinds: ['DROP', 'TRUNCATE', 'ALTER SYSTEM'], action: 'deny' },
  { pattern: 'rm\\s+-rf', action: 'kill' },
  { pattern: 'passwd', action: 'alert' },
  { kinds: ['FUNCTION'], action: 'deny' },
] as CommandRuleConfig[];

export interface FakeSession extends LiveSession {
  endedWith: EndReason | null;
  terminatedWith: EndReason | null;
  statementsOpen: number;
  held: number;
  budget: number;
}

export function fakeSession(budget = 16 * 1024 * 1024): FakeSession {
  const rules = compileRules(FUZZ_RULES, 'user');
  const terminate: ((r: EndReason) => void)[] = [];
  const handle = (): StatementHandle => {
    s.statementsOpen++;
    let done = false;
    return { finish: () => { if (!done) { done = true; s.statementsOpen--; } } };
  };
  const recording: SessionRecording = {
    sessionId: 'fuzz',
    cast: () => ({ output() {}, input() {}, resize() {}, marker() {}, close() {} }),
    queries: () => ({ statement: handle }),
    events: () => ({ event() {} }),
    screen: () => ({ write() {}, close() {} }),
    close: async () => {},
  };
  const s: FakeSession = {
    id: 'fuzz', principal: { sub: 'fuzz', email: null, name: null, groups: [], mfaAt: null, via: 'token' } as never,
    grant: { id: 'g' } as never, target: { name: 't' } as never, role: { name: 'user' } as never, startedAt: 0, commandRules: [],
    ending: new Promise<EndReason>(() => {}), recording, log: silent, ended: false, endedWith: null, terminatedWith: null, statementsOpen: 0, held: 0, budget,
    lease: async () => { throw new Error('no leases in the fuzzer'); },
    check: (text, opts) => rules.check(text, opts),
    onTerminate: (h) => { terminate.push(h); },
    onWarning: () => {},
    addBytes: () => {},
    holdBytes(delta) {
      s.held += delta;
      if (s.held < 0) throw new Error(`held bytes went negative (${s.held})`);
      if (s.held > s.budget && !s.terminatedWith) {
        s.terminatedWith = { code: 'resource_limit', message: 'over budget' };
        for (const h of terminate) h(s.terminatedWith);
        return false;
      }
      return s.held <= s.budget;
    },
    guard: (h) => h,
    audit: () => {},
    end: async (r) => { if (!s.endedWith) s.endedWith = r; (s as { ended: boolean }).ended = true; },
  };
  return s;
}

/** A socket that accepts every write (and counts it). */
export function fakeSocket() {
  const s = {
    destroyed: false,
    writableEnded: false,
    written: 0,
    write(b: Buffer | string) { s.written += b.length; return true; },
    end(b?: Buffer) { if (b) s.written += b.length; s.writableEnded = true; },
    destroy() { s.destroyed = true; },
    destroySoon() { s.destroyed = true; },
    on() { return s; },
    once() { return s; },
    pause() {},
    resume() {},
    cork() {},
    uncork() {},
  };
  return s;
}

/**
 * Run fn with setTimeout captured: timers it starts (a relay's "destroy after 2 s") run right
 * after it, once, instead of keeping every input's relay alive until they fire.
 */
export function withTimers<T>(fn: () => T): T {
  const saved = globalThis.setTimeout;
  const due: (() => void)[] = [];
  const handle = { unref: () => handle, ref: () => handle, hasRef: () => false, refresh: () => handle };
  globalThis.setTimeout = ((cb: () => void) => { due.push(cb); return handle; }) as unknown as typeof setTimeout;
  try {
    return fn();
  } finally {
    globalThis.setTimeout = saved;
    for (const cb of due) cb();
  }
}

/** A socket for code that attaches its own listeners (PacketConn): emit('data', …) delivers synchronously. */
export class FakeDuplex extends EventEmitter {
  destroyed = false;
  writable = true;
  written = 0;
  write(b: Buffer | string): boolean { this.written += b.length; return true; }
  end(b?: Buffer): this { if (b) this.written += b.length; this.writable = false; return this; }
  destroy(): this { this.destroyed = true; this.writable = false; return this; }
  pause(): this { return this; }
  resume(): this { return this; }
  cork(): void {}
  uncork(): void {}
  unshift(): void {}
  setNoDelay(): this { return this; }
}
