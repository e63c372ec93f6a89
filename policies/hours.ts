/** Hours and durations: working-hour windows in a time zone, and the durations requests and policies name. */
import { parseDuration } from './config.js';
import type { HoursConfig } from './config.js';
import { PolicyError } from './errors.js';

/** No request may ask for more than this, whatever the policy says. */
export const MAX_DURATION_MS = 366 * 86_400_000;
const DAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'] as const;

export function toMs(v: number | string | undefined): number | null {
  if (v === undefined) return null;
  return parseDuration(v);
}

export function parseRequestedDuration(v: number | string): number {
  let ms: number;
  if (typeof v === 'number') ms = v * 1000;
  else if (/^\d+(\.\d+)?$/.test(v.trim())) ms = Number(v.trim()) * 1000;
  else {
    try { ms = parseDuration(v); } catch { throw new PolicyError('invalid', 'duration: a duration such as 30m, 2h or a number of seconds', 'duration'); }
  }
  ms = Math.round(ms);
  if (!Number.isFinite(ms) || ms <= 0) throw new PolicyError('invalid', 'duration: must be more than zero', 'duration');
  if (ms > MAX_DURATION_MS) throw new PolicyError('invalid', 'duration: at most 366 days', 'duration');
  return ms;
}

export function fmtDuration(ms: number): string {
  if (ms % 86_400_000 === 0) return `${ms / 86_400_000}d`;
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  return `${Math.round(ms / 1000)}s`;
}

export function hhmm(s: string): number {
  const [h, m] = s.split(':').map(Number) as [number, number];
  return h * 60 + m;
}

const fmtCache = new Map<string, Intl.DateTimeFormat>();
function localTime(at: number, tz: string): { day: (typeof DAYS)[number]; minutes: number } {
  let f = fmtCache.get(tz);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', { timeZone: tz, weekday: 'short', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
    fmtCache.set(tz, f);
  }
  const parts = Object.fromEntries(f.formatToParts(new Date(at)).map((p) => [p.type, p.value]));
  const day = String(parts.weekday).slice(0, 3).toLowerCase() as (typeof DAYS)[number];
  return { day, minutes: (Number(parts.hour) % 24) * 60 + Number(parts.minute) };
}

/** Whether `at` falls inside the window (windows past midnight belong to the day they start on). */
export function inHours(h: HoursConfig, at: number): boolean {
  const days = h.days ?? ['mon', 'tue', 'wed', 'thu', 'fri'];
  const { day, minutes } = localTime(at, h.tz ?? 'UTC');
  const from = hhmm(h.from);
  const to = hhmm(h.to);
  if (from === to) return days.includes(day);
  if (from < to) return days.includes(day) && minutes >= from && minutes < to;
  const prev = DAYS[(DAYS.indexOf(day) + 6) % 7]!;
  return (days.includes(day) && minutes >= from) || (days.includes(prev) && minutes < to);
}

export function describeHours(h: HoursConfig): string {
  return `${(h.days ?? ['mon', 'tue', 'wed', 'thu', 'fri']).join(',')} ${h.from}-${h.to} ${h.tz ?? 'UTC'}`;
}

const MINUTE = 60_000;

/**
 * When the working-hours window that contains `at` closes (or, when `at` is outside the hours, the
 * next window to open): the first minute at or after `at` that is outside the hours, found by
 * jumping to each candidate local time (the window's `to`, or midnight for whole days) and, where a
 * daylight-saving change made the jump overshoot, by searching back to the minute. null: the
 * window never closes (every day, all day).
 */
export function nextWindowEnd(h: HoursConfig, at: number): number | null {
  let t = Math.ceil(at / MINUTE) * MINUTE;
  // Outside the hours now: move to the next window's opening first.
  for (let i = 0; i < 16 && !inHours(h, t); i++) t = jumpToNextFlip(h, t, false);
  if (!inHours(h, t)) return null;
  for (let i = 0; i < 16; i++) {
    const next = jumpToNextFlip(h, t, true);
    if (!inHours(h, next)) return firstOut(h, t, next);
    t = next;
  }
  return null;
}

/** The next candidate minute where `inHours` may change from `inside` (local `to`/`from`, or midnight for whole days), by local arithmetic. */
function jumpToNextFlip(h: HoursConfig, t: number, inside: boolean): number {
  const { minutes } = localTime(t, h.tz ?? 'UTC');
  const from = hhmm(h.from);
  const to = hhmm(h.to);
  const mark = from === to ? 0 : inside ? to : from;
  const delta = (mark - minutes + 2 * 24 * 60) % (24 * 60) || 24 * 60;
  return t + delta * MINUTE;
}

/** The first minute in (lo, hi] outside the hours, given lo inside and hi outside (binary search). */
function firstOut(h: HoursConfig, lo: number, hi: number): number {
  // The jump lands on the local mark unless a clock change lies in between: then search.
  const { minutes } = localTime(hi, h.tz ?? 'UTC');
  const mark = hhmm(h.from) === hhmm(h.to) ? 0 : hhmm(h.to) % (24 * 60);
  if (minutes === mark && inHours(h, hi - MINUTE)) return hi;
  let a = lo;
  let b = hi;
  while (b - a > MINUTE) {
    const mid = a + Math.floor((b - a) / 2 / MINUTE) * MINUTE;
    if (inHours(h, mid)) a = mid; else b = mid;
  }
  return b;
}
