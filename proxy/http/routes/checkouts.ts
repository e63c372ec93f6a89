import { z } from 'zod';
import { codeRefusal } from '../../../auth/mfa.js';
import { PolicyError } from '../../../policies/errors.js';
import { HttpError } from '../server.js';
import type { ApiServices } from '../services.js';
import { credentialLabel, parse, type AddRoute } from './route.js';

/** Reveals one identity may make within REVEAL_WINDOW_MS, counted in the audit log (so every gateway on the store shares the count); wrong authenticator codes have their own limit (auth/mfa.ts). */
export const REVEAL_MAX = 5;
export const REVEAL_WINDOW_MS = 10 * 60_000;

type RevealDeps = Pick<ApiServices, 'store' | 'clock' | 'config' | 'engine' | 'locks' | 'audit' | 'modules' | 'ctx' | 'mfa'>;

/**
 * Keeper's "view password" for a checked-out account: the holder, during the active grant, when the
 * role says `reveal: true`, with a fresh MFA (a sign-in within idp.mfaMaxAge, or an authenticator
 * code), at most REVEAL_MAX times per REVEAL_WINDOW_MS. Audited without the password, never cached.
 * The password rotates at check-in / grant end / revoke as after every check-out.
 */
export function mountCheckoutRoutes(add: AddRoute, s: RevealDeps): void {
  add({
    method: 'POST', path: '/api/v1/grants/{id}/reveal',
    summary: 'Reveal the current password of the checked-out account I hold (roles[].reveal: true); needs a fresh MFA or an authenticator code; audited; rotated at check-in',
    body: { mfaCode: 'authenticator code (when the sign-in has no fresh MFA)' },
    handler: async (req) => {
      const b = parse(z.object({ mfaCode: z.string().trim().max(16).optional() }), req);
      const sub = req.principal.sub;
      const g = await s.engine.assertMayReveal(req.principal, req.params['id']!);
      const refuse = async (code: string, reason: string) => {
        await s.audit.append(sub, 'checkout.reveal_refused', g.id, { code, reason, grant: g.id, target: g.target, by: credentialLabel(req.principal) });
      };
      const lock = await s.locks.covering({ identity: g.identity, target: g.target, grantId: g.id });
      if (lock) {
        await refuse('locked', lock.reason);
        throw new HttpError(403, `access is locked (${lock.scope} ${lock.value}): ${lock.reason}`, { code: 'locked' });
      }
      const now = s.clock.now();
      const recent = await s.store.listAudit({ actor: sub, action: 'checkout.revealed', since: now - REVEAL_WINDOW_MS, limit: REVEAL_MAX });
      if (recent.length >= REVEAL_MAX) {
        await refuse('rate_limited', `more than ${REVEAL_MAX} reveals in ${REVEAL_WINDOW_MS / 60_000} minutes`);
        throw new HttpError(429, `you revealed a password ${REVEAL_MAX} times in the last ${REVEAL_WINDOW_MS / 60_000} minutes; try again later`, { error: 'rate_limited' });
      }
      // A fresh MFA every time, whatever the policy's mfaAtConnect says.
      let mfa: 'sign-in' | 'code';
      if (s.engine.hasFreshMfa(req.principal)) mfa = 'sign-in';
      else if (b.mfaCode) {
        const r = await s.mfa.verify(sub, b.mfaCode);
        if (r !== 'ok') {
          await refuse('mfa_required', codeRefusal(r));
          throw new PolicyError('mfa_required', `revealing the password needs MFA, and ${codeRefusal(r)}`, 'mfaCode');
        }
        mfa = 'code';
      } else {
        await refuse('mfa_required', 'no fresh MFA and no authenticator code');
        throw new PolicyError('mfa_required', `revealing the password needs a fresh MFA: ${s.mfa.has(sub) ? 'give your authenticator code (mfaCode), or ' : ''}sign in again with your second factor (within the last ${Math.round(s.engine.mfaMaxAge / 60_000)} minutes)`);
      }
      const target = s.config.targets.find((t) => t.name === g.target);
      const mod = target && s.modules.get(target.protocol);
      if (!target || !mod?.revealCheckout) throw new HttpError(409, `${g.target} cannot reveal its password (no such checkout target is configured)`);
      const password = await mod.revealCheckout(s.ctx(mod.name), target);
      const account = typeof target.credentials['account'] === 'string' ? target.credentials['account'] : null;
      await s.audit.append(sub, 'checkout.revealed', g.id, { grant: g.id, target: g.target, role: g.role, account, mfa, by: credentialLabel(req.principal) });
      return {
        status: 200,
        headers: { 'cache-control': 'no-store', pragma: 'no-cache' },
        body: { grant: g.id, target: g.target, account, password: password.reveal(), rotatesAt: g.expiresAt, note: 'the password rotates when you check the account in, when the grant ends or is revoked, and at the end of each session through the gateway' },
      };
    },
  });
}
