import type { Principal } from '../auth/types.js';
import type { EndReason } from '../protocols/types.js';
import type { SessionRecord, Store } from './store/types.js';
import type { AuditLog } from './audit.js';
import type { SessionManager } from './sessions.js';
import type { SessionSelector } from './cluster/bus.js';
import { RefusedError } from './errors.js';

/**
 * Ending live sessions on a person's word: a kill of one session (the SOC, or its owner), and the
 * sessions opened through an API token that was revoked. Locks end sessions too (proxy/locks.ts).
 * With several nodes, a session another node holds is ended there through the control bus.
 */
export class KillSwitch {
  constructor(private readonly deps: {
    store: Pick<Store, 'getSession'>;
    audit: Pick<AuditLog, 'append'>;
    sessions: Pick<SessionManager, 'get' | 'kill' | 'terminateWhere'>;
    /** End matching sessions on every node (here at once); default: this node only. */
    end?(select: SessionSelector, reason: EndReason): Promise<number>;
    /** A live session of another node: have it ended there; true once its record says it ended. */
    killRemote?(rec: SessionRecord, reason: EndReason): Promise<boolean>;
  }) {}

  /**
   * Terminate live session `id` for `actor` (audited as session.kill); resolves once it has ended
   * (`ended: false` when another node holding it did not confirm in time).
   * `soc`: the actor runs the SOC console and may kill (and see) anyone's session.
   */
  async killSession(actor: Principal, id: string, reason: string, opts: { soc: boolean }): Promise<{ id: string; ended: boolean }> {
    const why: EndReason = { code: 'killed', message: `Tollgate: session terminated by ${actor.sub}${reason ? `: ${reason}` : ''}.` };
    const live = this.deps.sessions.get(id);
    if (!live) {
      const s = await this.deps.store.getSession(id);
      if (!s || (s.identity !== actor.sub && !opts.soc)) throw new RefusedError('not_found', 'no such session');
      if (s.state !== 'active' || !this.deps.killRemote) throw new RefusedError('conflict', 'the session is not live');
      await this.deps.audit.append(actor.sub, 'session.kill', s.id, { reason, target: s.target, node: s.gatewayId });
      return { id: s.id, ended: await this.deps.killRemote(s, why) };
    }
    if (live.identity !== actor.sub && !opts.soc) throw new RefusedError('forbidden', 'only the SOC or the session owner may kill it');
    await this.deps.audit.append(actor.sub, 'session.kill', live.id, { reason, target: live.target.name });
    this.deps.sessions.kill(live.id, actor.sub, reason);
    await this.deps.sessions.terminateWhere((s) => s.id === live.id, why);
    return { id: live.id, ended: true };
  }

  /** End the live sessions opened through API token `tokenId` (it was revoked), on every node; how many here. */
  endTokenSessions(tokenId: string): Promise<number> {
    const why: EndReason = { code: 'revoked', message: 'Tollgate: the API token that opened this session was revoked; the session is closed.' };
    if (this.deps.end) return this.deps.end({ token: tokenId }, why);
    return this.deps.sessions.terminateWhere((s) => s.principal.credential?.kind === 'token' && s.principal.credential.id === tokenId, why);
  }
}
