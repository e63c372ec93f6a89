import { existsSync, readFileSync } from 'node:fs';
import { z } from 'zod';
import type { Principal } from '../../../auth/types.js';
import type { SessionRecord } from '../../store/types.js';
import { HttpError } from '../server.js';
import type { ApiServices } from '../services.js';
import { ok, parse, type AddRoute, type Authed } from './route.js';

/** Sessions (live and ended), their statements, killing one; recordings and their seals. */
export function mountSessionRoutes(add: AddRoute, s: Pick<ApiServices, 'store' | 'sessions' | 'clock' | 'roles' | 'kill' | 'recorder'>): void {
  // A session another node holds is live too (its record says active): it can be watched and killed from here.
  const sessionView = (r: SessionRecord) => {
    const live = s.sessions.get(r.id);
    const grantEnd = live?.grant.expiresAt ?? null;
    const bytes = live ? live.bytes() : { up: r.bytesUp, down: r.bytesDown };
    return { ...r, live: !!live || r.state === 'active', bytesUp: bytes.up, bytesDown: bytes.down, grantExpiresAt: grantEnd, msLeft: grantEnd ? Math.max(0, grantEnd - s.clock.now()) : null };
  };
  const canSeeSession = (p: Principal, r: SessionRecord) => r.identity === p.sub || s.roles.isSoc(p);
  add({ method: 'GET', path: '/api/v1/sessions', summary: 'Sessions (SOC: all; others: their own). ?state=active|ended&identity=&target=&since=&until=', handler: async (req) => {
    const soc = s.roles.isSoc(req.principal);
    const q = req.query;
    const num = (k: string) => (q.get(k) ? Number(q.get(k)) || Date.parse(q.get(k)!) : undefined);
    const list = await s.store.listSessions({
      state: (q.get('state') as SessionRecord['state'] | null) ?? undefined,
      identity: soc ? q.get('identity') ?? undefined : req.principal.sub,
      target: q.get('target') ?? undefined, since: num('since'), until: num('until'), limit: Math.min(Number(q.get('limit') ?? 200) || 200, 1000),
    });
    return ok(list.map(sessionView));
  } });
  add({ method: 'GET', path: '/api/v1/sessions/{id}', summary: 'One session with its recordings', handler: async (req) => {
    const r = await s.store.getSession(req.params['id']!);
    if (!r || !canSeeSession(req.principal, r)) throw new HttpError(404, 'no such session');
    return ok({ ...sessionView(r), recordings: await s.store.listRecordings({ sessionId: r.id }) });
  } });
  add({ method: 'GET', path: '/api/v1/sessions/{id}/queries', summary: 'Statements recorded in a database session', handler: async (req) => {
    const r = await s.store.getSession(req.params['id']!);
    if (!r || !canSeeSession(req.principal, r)) throw new HttpError(404, 'no such session');
    return ok(await s.store.listQueries(r.id, { limit: Math.min(Number(req.query.get('limit') ?? 1000) || 1000, 10_000), offset: Number(req.query.get('offset') ?? 0) || 0 }));
  } });
  add({ method: 'POST', path: '/api/v1/sessions/{id}/kill', summary: 'Terminate a live session (SOC, or its owner)', body: { reason: 'string' }, handler: async (req) => {
    const b = parse(z.object({ reason: z.string().max(2000).default('') }), req);
    const r = await s.kill.killSession(req.principal, req.params['id']!, b.reason, { soc: s.roles.isSoc(req.principal) });
    return ok({ ok: true, id: r.id, ended: r.ended });
  } });

  // ---- recordings
  add({ method: 'GET', path: '/api/v1/recordings', summary: 'Recordings (SOC): ?identity=&target=&since=&until=', auth: 'soc', handler: async (req) => {
    const q = req.query;
    const sessions = await s.store.listSessions({ identity: q.get('identity') ?? undefined, target: q.get('target') ?? undefined, since: q.get('since') ? Number(q.get('since')) : undefined, until: q.get('until') ? Number(q.get('until')) : undefined, limit: 500 });
    const out = [];
    for (const r of sessions) out.push({ session: sessionView(r), recordings: await s.store.listRecordings({ sessionId: r.id }) });
    return ok(out);
  } });
  const recordingFor = async (req: Authed) => {
    const r = await s.store.getRecording(req.params['id']!);
    if (!r) throw new HttpError(404, 'no such recording');
    const session = await s.store.getSession(r.sessionId);
    if (!session || !canSeeSession(req.principal, session)) throw new HttpError(404, 'no such recording');
    return r;
  };
  add({ method: 'GET', path: '/api/v1/recordings/{id}', summary: 'Download a recording file (cast, NDJSON)', handler: async (req) => {
    const r = await recordingFor(req);
    if (!existsSync(r.path)) throw new HttpError(410, 'the recording file is gone');
    const type = r.kind === 'cast' ? 'application/x-asciicast' : 'application/x-ndjson';
    return { status: 200, headers: { 'content-type': type, 'x-tollgate-sha256': r.sha256 ?? '' }, body: readFileSync(r.path) };
  } });
  add({ method: 'GET', path: '/api/v1/recordings/{id}/verify', summary: 'Re-hash a recording and compare with its seal', handler: async (req) => {
    const r = await recordingFor(req);
    return ok(await s.recorder.verify(r.id));
  } });
}
