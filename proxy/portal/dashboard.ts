import type { Store } from '../store/types.js';
import { standingPrivileges } from '../sessions.js';

/**
 * The JIT health figures, computed from the store alone (no counters kept elsewhere), so the
 * dashboard says the same thing after a restart and on every gateway sharing the store.
 */

export interface DayPoint { day: string; value: number | null }

export interface Health {
  at: number;
  /** Leases still holding a privilege (pending/active/revoking) with no live session: a failed revoke waits for its retry (error, attempts, retryAt). */
  standingPrivileges: {
    count: number;
    leases: { id: string; target: string; kind: string; state: string; sessionId: string | null; createdAt: number; error: string | null; attempts: number; retryAt: number | null }[];
  };
  /** Sessions that ran under a JIT-approved grant, over all sessions (break-glass is not JIT). */
  jitShare: { jit: number; total: number; ratio: number | null };
  /** Average time a session held its privilege (ended sessions, plus live ones so far). */
  avgPrivilegeMs: number | null;
  /** Request filed → decided by a person (requests with at least one approval record). */
  approvalResponse: { count: number; medianMs: number | null; p90Ms: number | null };
  breakGlassThisMonth: number;
  expiredUnusedGrants: number;
  series: {
    sessions: DayPoint[];
    requests: DayPoint[];
    approvalMedianMs: DayPoint[];
    avgPrivilegeMs: DayPoint[];
  };
}

const DAY = 86_400_000;

export function quantile(sorted: number[], q: number): number | null {
  if (!sorted.length) return null;
  // nearest-rank: the smallest value with at least q of the values at or below it
  const rank = Math.max(1, Math.ceil(q * sorted.length));
  return sorted[rank - 1]!;
}

/**
 * isLive: whether a session runs on this gateway now. Sessions the store shows active on another
 * gateway (several gateways sharing a store) count as live too; their own gateway reaps them.
 */
export async function computeHealth(store: Store, now: number, isLive: (sessionId: string) => boolean, opts: { days?: number; gatewayId?: string } = {}): Promise<Health> {
  const days = opts.days ?? 14;
  const BIG = 100_000;
  const [standing, sessions, grants, requests] = await Promise.all([
    standingPrivileges(store, isLive, opts.gatewayId, now),
    store.listSessions({ limit: BIG }),
    store.listGrants({ limit: BIG }),
    store.listRequests({ limit: BIG }),
  ]);

  const grantById = new Map(grants.map((g) => [g.id, g]));
  const jit = sessions.filter((s) => { const g = grantById.get(s.grantId); return g ? !g.breakGlass && !!g.requestId : false; }).length;

  const held = (s: { startedAt: number; endedAt: number | null }) => (s.endedAt ?? now) - s.startedAt;
  const avg = (xs: number[]) => (xs.length ? Math.round(xs.reduce((a, b) => a + b, 0) / xs.length) : null);
  const durations = sessions.map(held).filter((d) => d >= 0);

  const decided: { at: number; ms: number }[] = [];
  for (const r of requests) {
    if ((r.state !== 'approved' && r.state !== 'denied') || r.decidedAt === null || r.breakGlass) continue;
    const approvals = await store.listApprovals(r.id);
    if (!approvals.length) continue; // auto-approved: no person responded
    decided.push({ at: r.decidedAt, ms: Math.max(0, r.decidedAt - r.createdAt) });
  }
  const sortedMs = decided.map((d) => d.ms).sort((a, b) => a - b);

  const d = new Date(now);
  const monthStart = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
  const breakGlass = grants.filter((g) => g.breakGlass && g.createdAt >= monthStart).length;
  const expiredUnused = grants.filter((g) => g.state === 'expired' && !g.used).length;

  const today = Math.floor(now / DAY) * DAY;
  const dayKeys = Array.from({ length: days }, (_, i) => today - (days - 1 - i) * DAY);
  const bucket = <T>(items: T[], at: (x: T) => number) => dayKeys.map((k) => items.filter((x) => { const a = at(x); return a >= k && a < k + DAY; }));
  const label = (k: number) => new Date(k).toISOString().slice(0, 10);
  const sessBuckets = bucket(sessions, (s) => s.startedAt);
  const decBuckets = bucket(decided, (x) => x.at);

  return {
    at: now,
    standingPrivileges: {
      count: standing.length,
      leases: standing.slice(0, 50).map((l) => ({
        id: l.id, target: l.target, kind: l.kind, state: l.state, sessionId: l.sessionId, createdAt: l.createdAt, error: l.error, attempts: l.attempts ?? 0, retryAt: l.retryAt ?? null,
      })),
    },
    jitShare: { jit, total: sessions.length, ratio: sessions.length ? jit / sessions.length : null },
    avgPrivilegeMs: avg(durations),
    approvalResponse: { count: sortedMs.length, medianMs: quantile(sortedMs, 0.5), p90Ms: quantile(sortedMs, 0.9) },
    breakGlassThisMonth: breakGlass,
    expiredUnusedGrants: expiredUnused,
    series: {
      sessions: dayKeys.map((k, i) => ({ day: label(k), value: sessBuckets[i]!.length })),
      requests: bucket(requests, (r) => r.createdAt).map((b, i) => ({ day: label(dayKeys[i]!), value: b.length })),
      approvalMedianMs: decBuckets.map((b, i) => ({ day: label(dayKeys[i]!), value: quantile(b.map((x) => x.ms).sort((a, z) => a - z), 0.5) })),
      avgPrivilegeMs: sessBuckets.map((b, i) => ({ day: label(dayKeys[i]!), value: avg(b.map(held)) })),
    },
  };
}
