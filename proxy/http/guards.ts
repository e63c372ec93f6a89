/**
 * Checks every authenticated API route shares: an identity lock refuses the locked identity's API
 * calls (not only its connections), audited, with a 403 that says why.
 */
import type { Gateway } from '../gateway.js';
import type { Principal } from '../../auth/types.js';
import type { LockRecord } from '../store/types.js';
import { HttpError } from './server.js';

/** The active lock on identity `sub`, if any. */
export async function identityLock(gw: Gateway, sub: string): Promise<LockRecord | null> {
  const locks = await gw.store.listLocks({ active: true, at: gw.clock.now() });
  return locks.find((l) => l.scope === 'identity' && l.value === sub) ?? null;
}

export function lockedMessage(sub: string, lock: LockRecord): string {
  return `${sub} is locked: ${lock.reason} (lock ${lock.id} by ${lock.createdBy}); ask the SOC to lift it`;
}

/** Routes a locked identity may still call: who am I (it says so). */
const OPEN_WHEN_LOCKED = new Set(['GET /api/v1/me']);

/** Throws 403 when `p` is locked; the refusal is an audit event. */
export async function refuseIfLocked(gw: Gateway, route: { method: string; path: string }, p: Principal): Promise<void> {
  if (OPEN_WHEN_LOCKED.has(`${route.method} ${route.path}`)) return;
  const lock = await identityLock(gw, p.sub);
  if (!lock) return;
  await gw.audit.append(p.sub, 'api.refused', lock.id, { code: 'locked', method: route.method, path: route.path, via: p.via });
  throw new HttpError(403, lockedMessage(p.sub, lock), { code: 'locked' });
}
