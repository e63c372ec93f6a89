import type { Principal } from '../auth/types.js';
import type { Store } from './store/types.js';
import type { AuditLog } from './audit.js';
import type { SessionManager } from './sessions.js';
import { RefusedError } from './errors.js';

/**
 * Ending live sessions on a person's word: a kill of one session (the SOC, or its owner), and the
 * sessions opened through an API token that was revoked. Locks end sessions too (proxy/locks.ts).
 */
export class KillSwitch {
  constructor(private readonly deps: {
    store: Pick<Store, 'getSession'>;
    audit: Pick<AuditLog, 'append'>;
    sessions: Pick<SessionManager, 'get' | 'kill' | 'terminateWhere'>;
  }) {}

  /**
   * Terminate live session `id` for `actor` (audited as session.kill); resolves once it has ended.
   * `soc`: the actor runs the SOC console and may kill (and see) anyone's session.
   */
  async killSession(actor: Principal, id: string, reason: string, opts: { soc: boolean }): Promise<{ id: string }> {
    const live = this.deps.sessions.get(id);
    if (!live) {
      const s = await this.deps.store.getSession(id);
      if (!s || (s.identity !== actor.sub && !opts.soc)) throw new RefusedError('not_found', 'no such session');
      throw new RefusedError('conflict', 'the session is not live');
    }
    if (live.identity !== actor.sub && !opts.soc) throw new RefusedError('forbidden', 'only the SOC or the session owner may kill it');
    await this.deps.audit.append(actor.sub, 'session.kill', live.id, { reason, target: live.target.name });
    this.deps.sessions.kill(live.id, actor.sub, reason);
    await this.deps.sessions.terminateWhere((s) => s.id === live.id, { code: 'killed', message: `Tollgate: session terminated by ${actor.sub}${reason ? `: ${reason}` : ''}.` });
    return { id: live.id };
  }

  /** End the live sessions opened through API token `tokenId` (it was revoked); how many. */
  endTokenSessions(tokenId: string): Promise<number> {
    return this.deps.sessions.terminateWhere(
      (s) => s.principal.credential?.kind === 'token' && s.principal.credential.id === tokenId,
      { code: 'revoked', message: 'Tollgate: the API token that opened this session was revoked; the session is closed.' },
    );
  }
}
