/** Time for everything that expires, escalates or auto-denies. Inject a ManualClock in tests. */
export interface TimerHandle { cancel(): void }

export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  /** Run fn once the clock has reached now()+ms. */
  setTimer(ms: number, fn: () => void): TimerHandle;
}

export class SystemClock implements Clock {
  now(): number { return Date.now(); }
  setTimer(ms: number, fn: () => void): TimerHandle {
    // setTimeout caps at 2^31-1 ms; chain for longer delays.
    const MAX = 2_147_000_000;
    let t: NodeJS.Timeout;
    const due = Date.now() + ms;
    const arm = () => {
      const left = due - Date.now();
      t = setTimeout(left > MAX ? arm : fn, Math.max(0, Math.min(left, MAX)));
      t.unref?.();
    };
    arm();
    return { cancel: () => clearTimeout(t) };
  }
}

/** A clock that only moves when told to: advance() fires due timers in order. */
export class ManualClock implements Clock {
  private t: number;
  private timers: { due: number; seq: number; fn: () => void; live: boolean }[] = [];
  private seq = 0;
  constructor(start: number | Date = Date.UTC(2026, 10, 23, 10, 0, 0)) {
    this.t = typeof start === 'number' ? start : start.getTime();
  }
  now(): number { return this.t; }
  setTimer(ms: number, fn: () => void): TimerHandle {
    const timer = { due: this.t + Math.max(0, ms), seq: this.seq++, fn, live: true };
    this.timers.push(timer);
    return { cancel: () => { timer.live = false; } };
  }
  /** Move time forward, firing every timer that falls due, in due order. */
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      const next = this.timers
        .filter((x) => x.live && x.due <= end)
        .sort((a, b) => a.due - b.due || a.seq - b.seq)[0];
      if (!next) break;
      next.live = false;
      this.t = Math.max(this.t, next.due);
      next.fn();
    }
    this.timers = this.timers.filter((x) => x.live);
    this.t = end;
  }
  set(at: number | Date): void {
    const target = typeof at === 'number' ? at : at.getTime();
    if (target > this.t) this.advance(target - this.t);
    else this.t = target;
  }
}
