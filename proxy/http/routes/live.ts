import type uWS from 'uWebSockets.js';
import type { Principal } from '../../../auth/types.js';
import type { LiveSubscription } from '../../../recorder/types.js';
import { principalOf } from '../callers.js';
import type { ApiServices } from '../services.js';

interface Watcher { sessionId: string; principal: Principal; sub?: LiveSubscription }

/**
 * WebSocket live view: /api/v1/sessions/:id/live streams the session's frames as JSON text
 * messages, starting with {"type":"snapshot"} (the current screen), ending with {"type":"end"}.
 * SOC groups may watch any session; others only their own. The front refuses the upgrade from a
 * foreign Origin before this runs (HttpFront.ws), so no other origin can watch with the cookie.
 */
export function mountLive(s: Pick<ApiServices, 'http' | 'callers' | 'sessions' | 'roles' | 'audit' | 'recorder'>): void {
  s.http.ws<Watcher>('/api/v1/sessions/:id/live', {
    upgrade: async (req) => {
      const p = await principalOf(s, req);
      if (!p) return { ok: false, reply: { status: 401, body: { error: 'unauthenticated', message: 'sign in first' } } };
      const id = req.params['id']!;
      const live = s.sessions.get(id);
      if (!live) return { ok: false, reply: { status: 404, body: { error: 'not_found', message: 'no such live session' } } };
      if (!s.roles.isSoc(p) && live.identity !== p.sub) return { ok: false, reply: { status: 403, body: { error: 'forbidden', message: 'only the SOC or the session owner may watch' } } };
      return { ok: true, data: { sessionId: id, principal: p } };
    },
    open: (ws: uWS.WebSocket<Watcher>) => {
      const w = ws.getUserData();
      const live = s.sessions.get(w.sessionId);
      const send = (obj: unknown) => { try { ws.send(JSON.stringify(obj), false); } catch { /* closed */ } };
      if (!live) { send({ type: 'end', data: 'session ended' }); ws.end(1000, 'session ended'); return; }
      void s.audit.append(w.principal.sub, 'session.watch', w.sessionId, { target: live.target.name });
      w.sub = s.recorder.live.subscribe(w.sessionId, (f) => {
        send(f);
        if (f.type === 'end') { try { ws.end(1000, 'session ended'); } catch { /* closed */ } }
      });
      send({
        type: 'snapshot',
        session: { id: live.id, identity: live.identity, target: live.target.name, role: live.role.name, protocol: live.protocol, startedAt: live.startedAt, grantExpiresAt: live.grant.expiresAt },
        frames: w.sub.snapshot,
      });
    },
    close: (ws: uWS.WebSocket<Watcher>) => { ws.getUserData().sub?.unsubscribe(); },
  });
}
