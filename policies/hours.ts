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
