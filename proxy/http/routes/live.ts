import type uWS from 'uWebSockets.js';
import type { Principal } from '../../../auth/types.js';
import type { LiveFrame, LiveSubscription } from '../../../recorder/types.js';
import type { SessionRecord } from '../../store/types.js';
import { principalOf } from '../callers.js';
import type { ApiServices } from '../services.js';

interface Watcher {
  sessionId: string;
  principal: Principal;
  /** Another node holds the session: it is streamed from there over the internal channel. */
  remote?: SessionRecord;
  sub?: LiveSubscription;
  closeRemote?: () => void;
  closed?: boolean;
}

/**
 * WebSocket live view: /api/v1/sessions/:id/live streams the session's frames as JSON text
 * messages, starting with {"type":"snapshot"} (the current screen), ending with {"type":"end"}.
 * SOC groups may watch any session; others only their own. The front refuses the upgrade from a
 * foreign Origin before this runs (HttpFront.ws), so no other origin can watch with the cookie.
 * A session of another node is streamed from that node (proxy/cluster/relay.ts), the same frames.
 */
export function mountLive(s: Pick<ApiServices, 'http' | 'callers' | 'sessions' | 'roles' | 'audit' | 'recorder' | 'store' | 'cluster'>): void {
  s.http.ws<Watcher>('/api/v1/sessions/:id/live', {
    upgrade: async (req) => {
      const p = await principalOf(s, req);
      if (!p) return { ok: false, reply: { status: 401, body: { error: 'unauthenticated', message: 'sign in first' } } };
      const id = req.params['id']!;
      const live = s.sessions.get(id);
      const remote = live ? undefined : await s.store.getSession(id);
      if (!live && (!remote || remote.state !== 'active')) return { ok: false, reply: { status: 404, body: { error: 'not_found', message: 'no such live session' } } };
      const identity = live ? live.identity : remote!.identity;
      if (!s.roles.isSoc(p) && identity !== p.sub) return { ok: false, reply: { status: 403, body: { error: 'forbidden', message: 'only the SOC or the session owner may watch' } } };
      return { ok: true, data: { sessionId: id, principal: p, ...(remote ? { remote } : {}) } };
    },
    open: (ws: uWS.WebSocket<Watcher>) => {
      const w = ws.getUserData();
      const send = (obj: unknown) => { if (w.closed) return; try { ws.send(JSON.stringify(obj), false); } catch { /* closed */ } };
      const end = (why: string) => { send({ type: 'end', data: why }); if (!w.closed) { try { ws.end(1000, why); } catch { /* closed */ } } };
      if (w.remote) { openRemote(s, w, send, end); return; }
      const live = s.sessions.get(w.sessionId);
      if (!live) { end('session ended'); return; }
      void s.audit.append(w.principal.sub, 'session.watch', w.sessionId, { target: live.target.name });
      w.sub = s.recorder.live.subscribe(w.sessionId, (f) => {
        send(f);
        if (f.type === 'end') end('session ended');
      });
      send({
        type: 'snapshot',
        session: { id: live.id, identity: live.identity, target: live.target.name, role: live.role.name, protocol: live.protocol, startedAt: live.startedAt, grantExpiresAt: live.grant.expiresAt },
        frames: w.sub.snapshot,
      });
    },
    close: (ws: uWS.WebSocket<Watcher>) => {
      const w = ws.getUserData();
      w.closed = true;
      w.sub?.unsubscribe();
      w.closeRemote?.();
    },
  });
}

/** Stream another node's session: frames that arrive before the snapshot went out wait for it. */
function openRemote(s: Pick<ApiServices, 'cluster' | 'audit'>, w: Watcher, send: (o: unknown) => void, end: (why: string) => void): void {
  const rec = w.remote!;
  let early: LiveFrame[] | null = [];
  const onFrame = (f: LiveFrame) => {
    if (early) { early.push(f); return; }
    send(f);
    if (f.type === 'end') end('session ended');
  };
  s.cluster.watchRemote(rec, w.principal.sub, onFrame, () => end('session ended')).then((r) => {
    if (w.closed) { r.close(); return; }
    w.closeRemote = r.close;
    void s.audit.append(w.principal.sub, 'session.watch', rec.id, { target: rec.target, node: rec.gatewayId });
    send({ type: 'snapshot', session: r.session, frames: r.snapshot });
    const queued = early ?? [];
    early = null;
    for (const f of queued) onFrame(f);
  }, (e: Error) => end(`cannot stream this session from its node: ${e.message}`));
}
