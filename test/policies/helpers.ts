import type { Test } from 'tap';
import type { Principal } from '../../auth/types.js';
import { ManualClock } from '../../policies/clock.js';
import { JitEngine, PolicyError, type JitEngineOptions } from '../../policies/engine.js';
import { policyStatus } from '../../proxy/http/errors.js';
import { validateConfig, type GatewayConfig } from '../../proxy/config.js';
import { openSqliteStore } from '../../proxy/store/sqlite.js';
import type { GrantRecord, Store } from '../../proxy/store/types.js';
import type { ProtocolModule } from '../../protocols/types.js';

/** Monday 23 November 2026, 10:00 UTC. */
export const MONDAY_10_UTC = Date.UTC(2026, 10, 23, 10, 0, 0);
export const MIN = 60_000;
export const HOUR = 3_600_000;

// validateConfig only needs to know the protocol names exist; target options are not under test here.
const modules = new Map<string, ProtocolModule>([['ssh', { name: 'ssh', defaultPort: 22, leaseKinds: {} }]]);

export function target(name: string, risk: 'low' | 'medium' | 'high' | 'critical', roles: string[] = ['ops']) {
  return { name, protocol: 'ssh', address: '127.0.0.1:22', risk, roles: roles.map((r) => ({ name: r })) };
}

export function config(raw: Record<string, unknown>): GatewayConfig {
  return validateConfig(raw, '<inline>', modules);
}

export function who(sub: string, groups: string[], mfaAt: number | null = null): Principal {
  return { sub, email: `${sub}@example.test`, name: sub, groups, mfaAt, via: 'web' };
}

export interface AuditEvent { actor: string; action: string; subject: string | null; data: Record<string, unknown> }

export interface Harness {
  clock: ManualClock;
  store: Store;
  engine: JitEngine;
  audits: AuditEvent[];
  notes: { kind: string; [k: string]: unknown }[];
  ended: { grant: GrantRecord; reason: 'expired' | 'revoked' }[];
  cfg: GatewayConfig;
  /** A second engine on the same store and clock (a restart). */
  restart(): Promise<JitEngine>;
  actions(): string[];
}

export async function harness(
  t: Test, raw: Record<string, unknown>, start = MONDAY_10_UTC, wrap?: (s: Store) => Store, extra: Partial<JitEngineOptions> = {},
): Promise<Harness> {
  const clock = new ManualClock(start);
  const real = await openSqliteStore(':memory:');
  const store = wrap ? wrap(real) : real;
  const cfg = config(raw);
  const audits: AuditEvent[] = [];
  const notes: Harness['notes'] = [];
  const ended: Harness['ended'] = [];
  const engines: JitEngine[] = [];
  const make = async () => {
    const e = new JitEngine({
      store, clock, config: cfg,
      audit: async (actor, action, subject, data) => { audits.push({ actor, action, subject, data }); },
      notify: (ev) => { notes.push(ev); },
      onGrantEnded: (grant, reason) => { ended.push({ grant, reason }); },
      ...extra,
    });
    engines.push(e);
    await e.start();
    return e;
  };
  t.teardown(async () => {
    for (const e of engines) e.stop();
    await store.close();
  });
  const engine = await make();
  return { clock, store, engine, audits, notes, ended, cfg, restart: make, actions: () => audits.map((a) => a.action) };
}

/** Assert that p rejects with a PolicyError of this code (and the API's HTTP status for it / field when given). */
export async function rejectsPolicy(t: Test, p: Promise<unknown>, code: string, extra: { status?: number; field?: string; message?: RegExp } = {}) {
  try {
    await p;
    t.fail(`expected PolicyError ${code}, but it resolved`);
  } catch (e) {
    if (!(e instanceof PolicyError)) { t.fail(`expected PolicyError ${code}, got ${String(e)}`); return; }
    t.equal(e.code, code, `code ${code} (${e.message})`);
    t.notOk('status' in e, 'a PolicyError carries no HTTP status');
    if (extra.status !== undefined) t.equal(policyStatus(e.code), extra.status, `the API answers ${extra.status}`);
    if (extra.field !== undefined) t.equal(e.field, extra.field, `field ${extra.field}`);
    if (extra.message) t.match(e.message, extra.message);
  }
}
