/**
 * The live bus: in-process pub/sub per session, so a SOC analyst can watch a session as it runs.
 *
 * Callbacks are called SYNCHRONOUSLY from publish(). A consumer must never block in its callback:
 * a WebSocket handler should enqueue the frame and, when its socket is too slow (its buffer grows
 * past its own bound), drop the watcher or resynchronise it from a fresh subscribe() snapshot.
 * A callback that throws is removed from the session so it cannot disturb the publisher again.
 *
 * Per session the bus keeps a bounded snapshot so a new watcher starts from the current screen:
 *   - the terminal output since the last clear-screen sequence (ESC[2J, ESC c, ESC[3J), at most
 *     ~256 KiB, with the resizes in between and the terminal size in force at its start;
 *   - the last 200 query / event / marker frames;
 *   - for desktop sessions, the screen stream since the last keyframe (bounded).
 * Input frames ('i') are delivered live but are not part of the snapshot.
 * When a session records several casts (a shell and exec channels), every frame is delivered with
 * its `cast`, but the snapshot's terminal follows one cast: the first, until it closes
 * (castClosed), then the next one that publishes.
 */
import type { Logger } from 'pino';
import { LRUCache } from 'lru-cache';
import type { LiveBus, LiveFrame, LiveSubscription } from './types.js';

export const TERM_SNAPSHOT_CHARS = 256 * 1024;
export const MISC_SNAPSHOT_FRAMES = 200;
export const SCREEN_SNAPSHOT_FRAMES = 500;
export const SCREEN_SNAPSHOT_CHARS = 8 * 1024 * 1024;

/** Sequences after which nothing earlier is visible on the terminal (`clear` on xterm and linux). */
const CLEAR_SEQUENCES = ['\x1b[2J', '\x1bc', '\x1b[3J', '\x1b[H\x1b[J', '\x1b[H\x1b[0J'];
/** Just before a clear, these still matter to a fresh terminal: another clear or a cursor move. */
const BEFORE_CLEAR = /(?:\x1b\[2J|\x1b\[3J|\x1bc|\x1b\[\d*(?:;\d*)?[Hf])$/;
const LOOKBACK_STEPS = 4;
const LOOKBACK_CHARS = 16;
/**
 * Output kept from earlier frames: enough to see a clear sequence split across frames and the
 * cursor moves / clears before it, however the output was chunked.
 */
const CLEAR_TAIL = LOOKBACK_STEPS * LOOKBACK_CHARS + Math.max(...CLEAR_SEQUENCES.map((s) => s.length));

type Callback = (f: LiveFrame) => void;

interface LiveState {
  subs: Set<Callback>;
  /** Whether anybody ever published on this session (a state made only by a watcher is dropped with it). */
  published: boolean;
  /** The size ('r' frame) in force at the start of `term`. */
  baseSize: LiveFrame | null;
  /** 'o' and 'r' frames since the last clear. */
  term: LiveFrame[];
  termChars: number;
  /** The last few output characters, to find a clear sequence split across two frames. */
  tail: string;
  misc: LiveFrame[];
  screenHeader: LiveFrame | null;
  screen: LiveFrame[];
  screenChars: number;
  lastT: number;
  /** The cast the terminal snapshot follows (undefined: none yet). */
  primary: string | undefined;
  /** Last size per cast, so a cast that becomes primary starts with its size. */
  sizes: Map<string, LiveFrame>;
}

function newState(): LiveState {
  return {
    subs: new Set(), published: false, baseSize: null, term: [], termChars: 0, tail: '', misc: [],
    screenHeader: null, screen: [], screenChars: 0, lastT: 0, primary: undefined, sizes: new Map(),
  };
}

/**
 * Index in s of the start of the last clear-screen sequence that ends after `seen` (the part of s
 * already scanned with the previous frame), or -1.
 */
function lastClear(s: string, seen: number): number {
  // Walk the ESC characters from the end (memchr-fast), checking the clear sequences at each.
  let best = -1;
  search: for (let i = s.lastIndexOf('\x1b'); i >= 0; i = i > 0 ? s.lastIndexOf('\x1b', i - 1) : -1) {
    for (const seq of CLEAR_SEQUENCES) {
      if (s.startsWith(seq, i)) {
        if (i + seq.length > seen) best = i;
        break search;
      }
    }
  }
  if (best < 0) return -1;
  // Keep the cursor move and clears right before it (`clear` sends ESC[H ESC[2J ESC[3J).
  for (let i = 0; best > 0 && i < LOOKBACK_STEPS; i++) {
    const m = BEFORE_CLEAR.exec(s.slice(Math.max(0, best - LOOKBACK_CHARS), best));
    if (!m) break;
    best -= m[0].length;
  }
  return best;
}

/** Cut a string to its last n UTF-16 units without starting on a lone low surrogate. */
function keepTail(s: string, n: number): string {
  if (s.length <= n) return s;
  let start = s.length - n;
  const c = s.charCodeAt(start);
  if (c >= 0xdc00 && c <= 0xdfff) start++;
  return s.slice(start);
}

/** A cheap size estimate of a screen frame's payload (top-level strings dominate: PNG base64). */
function screenSize(data: unknown): number {
  let n = 64;
  if (data && typeof data === 'object') {
    for (const v of Object.values(data as Record<string, unknown>)) if (typeof v === 'string') n += v.length;
  }
  return n;
}

export class MemoryLiveBus implements LiveBus {
  private sessions = new Map<string, LiveState>();
  /** Sessions that ended recently: late publishes are ignored, late watchers get an 'end' frame. */
  private ended = new LRUCache<string, number>({ max: 10_000 });

  constructor(private log?: Logger) {}

  /** Forget that a session ended (a recording reopened under the same id). */
  begin(sessionId: string): void {
    this.ended.delete(sessionId);
  }

  /** Number of sessions with live state (for metrics and tests). */
  get size(): number {
    return this.sessions.size;
  }

  publish(sessionId: string, frame: LiveFrame): void {
    if (frame.type === 'end') {
      this.end(sessionId);
      return;
    }
    if (this.ended.has(sessionId)) return;
    let st = this.sessions.get(sessionId);
    if (!st) {
      st = newState();
      this.sessions.set(sessionId, st);
    }
    st.published = true;
    if (Number.isFinite(frame.t)) st.lastT = Math.max(st.lastT, frame.t);
    this.remember(st, frame);
    this.deliver(sessionId, st, frame);
  }

  subscribe(sessionId: string, onFrame: Callback): LiveSubscription {
    if (this.ended.has(sessionId)) {
      return { snapshot: [{ t: this.ended.get(sessionId) ?? 0, type: 'end', data: null }], unsubscribe: () => {} };
    }
    let st = this.sessions.get(sessionId);
    if (!st) {
      st = newState();
      this.sessions.set(sessionId, st);
    }
    const snapshot = this.snapshotOf(st);
    st.subs.add(onFrame);
    const state = st;
    return {
      snapshot,
      unsubscribe: () => {
        state.subs.delete(onFrame);
        if (!state.published && state.subs.size === 0 && this.sessions.get(sessionId) === state) {
          this.sessions.delete(sessionId);
        }
      },
    };
  }

  end(sessionId: string): void {
    const st = this.sessions.get(sessionId);
    const t = st?.lastT ?? 0;
    this.sessions.delete(sessionId);
    this.ended.set(sessionId, t);
    if (st) this.deliver(sessionId, st, { t, type: 'end', data: null });
  }

  private deliver(sessionId: string, st: LiveState, frame: LiveFrame): void {
    for (const cb of Array.from(st.subs)) {
      try {
        cb(frame);
      } catch (err) {
        st.subs.delete(cb);
        this.log?.warn({ sessionId, err: (err as Error)?.message }, 'live watcher callback threw; removed');
      }
    }
  }

  /** A cast of the session ended: if the snapshot followed it, the next cast to publish takes over. */
  castClosed(sessionId: string, cast: string): void {
    const st = this.sessions.get(sessionId);
    if (!st) return;
    st.sizes.delete(cast);
    if (st.primary === cast) st.primary = undefined;
  }

  /** Whether a terminal frame belongs to the cast the snapshot follows (switching to it if none). */
  private followed(st: LiveState, frame: LiveFrame): boolean {
    if (frame.cast === undefined) return true;
    if (frame.type === 'r') st.sizes.set(frame.cast, frame);
    if (st.primary === frame.cast) return true;
    if (st.primary !== undefined) return false;
    st.primary = frame.cast;
    st.term = [];
    st.termChars = 0;
    st.tail = '';
    st.baseSize = frame.type === 'r' ? null : st.sizes.get(frame.cast) ?? null;
    return true;
  }

  private remember(st: LiveState, frame: LiveFrame): void {
    if ((frame.type === 'o' || frame.type === 'r') && !this.followed(st, frame)) return;
    switch (frame.type) {
      case 'o': {
        const data = typeof frame.data === 'string' ? frame.data : String(frame.data ?? '');
        const joined = st.tail + data;
        const at = lastClear(joined, st.tail.length);
        if (at >= 0) {
          // Everything before the clear is gone from the screen: restart from the clear sequence.
          const kept = at >= st.tail.length ? data.slice(at - st.tail.length) : joined.slice(at);
          st.baseSize = this.currentSize(st);
          st.term = [{ ...frame, data: kept }];
          st.termChars = kept.length;
        } else {
          st.term.push({ ...frame, data });
          st.termChars += data.length;
        }
        st.tail = keepTail(joined, CLEAR_TAIL);
        this.trimTerm(st);
        break;
      }
      case 'r':
        st.term.push(frame);
        this.trimTerm(st);
        break;
      case 'i':
        break;
      case 'screen': {
        const d = frame.data as { type?: unknown; keyframe?: unknown } | null;
        if (d && d.type === 'header') {
          st.screenHeader = frame;
          st.screen = [];
          st.screenChars = 0;
        } else if (d && (d.type === 'keyframe' || d.keyframe === true)) {
          st.screen = [frame];
          st.screenChars = screenSize(frame.data);
        } else {
          st.screen.push(frame);
          st.screenChars += screenSize(frame.data);
          while (st.screen.length > 1 && (st.screen.length > SCREEN_SNAPSHOT_FRAMES || st.screenChars > SCREEN_SNAPSHOT_CHARS)) {
            st.screenChars -= screenSize(st.screen.shift()!.data);
          }
        }
        break;
      }
      default:
        st.misc.push(frame);
        if (st.misc.length > MISC_SNAPSHOT_FRAMES) st.misc.splice(0, st.misc.length - MISC_SNAPSHOT_FRAMES);
    }
  }

  private currentSize(st: LiveState): LiveFrame | null {
    for (let i = st.term.length - 1; i >= 0; i--) if (st.term[i]!.type === 'r') return st.term[i]!;
    return st.baseSize;
  }

  private trimTerm(st: LiveState): void {
    while (st.termChars > TERM_SNAPSHOT_CHARS && st.term.length > 0) {
      const first = st.term[0]!;
      if (first.type === 'r') {
        st.baseSize = first;
        st.term.shift();
        continue;
      }
      const data = first.data as string;
      const excess = st.termChars - TERM_SNAPSHOT_CHARS;
      if (data.length <= excess) {
        st.term.shift();
        st.termChars -= data.length;
      } else {
        const kept = keepTail(data, data.length - excess);
        st.term[0] = { ...first, data: kept };
        st.termChars -= data.length - kept.length;
      }
    }
  }

  private snapshotOf(st: LiveState): LiveFrame[] {
    const term = st.baseSize ? [st.baseSize, ...st.term] : [...st.term];
    const screen = st.screenHeader ? [st.screenHeader, ...st.screen] : [...st.screen];
    // Merge the three time-ordered lists by t (stable: terminal first on ties).
    const lists = [term, screen, st.misc];
    const idx = [0, 0, 0];
    const out: LiveFrame[] = [];
    for (;;) {
      let pick = -1;
      for (let k = 0; k < lists.length; k++) {
        const f = lists[k]![idx[k]!];
        if (f && (pick < 0 || f.t < lists[pick]![idx[pick]!]!.t)) pick = k;
      }
      if (pick < 0) break;
      out.push(lists[pick]![idx[pick]!++]!);
    }
    return out;
  }
}

export function createLiveBus(log?: Logger): MemoryLiveBus {
  return new MemoryLiveBus(log);
}
