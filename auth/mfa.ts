/**
 * Authenticator (TOTP) codes checked by the gateway itself, for MFA at connect time where no
 * browser round trip to the IdP fits: SSH keyboard-interactive after a public key, and the CLI
 * asking for a connection secret. The gateway knows an identity's TOTP secret only when it is
 * configured with it (the dev IdP's users, idp.dev.users[].totp); everyone else steps up at the IdP
 * (portal sign-in with MFA, `tollgate login --mfa`). A code is good once (its time step is
 * remembered in the store, so a code seen by one gateway is refused by every other), and wrong
 * codes are limited per identity: after MAX_WRONG within WINDOW_MS, codes are refused for WINDOW_MS.
 */
import type { Clock } from '../policies/clock.js';
import type { Store } from '../proxy/store/types.js';
import type { Secret } from './secret.js';
import { verifyTotp } from './totp.js';

export type CodeCheck = 'ok' | 'wrong' | 'replayed' | 'no_authenticator' | 'too_many';

const MAX_WRONG = 5;
const WINDOW_MS = 5 * 60_000;

export class TotpFactors {
  private wrong = new Map<string, number[]>();

  constructor(private store: Store, private clock: Clock, private secrets: ReadonlyMap<string, Secret>) {}

  /** Whether the gateway can check codes of this identity. */
  has(sub: string): boolean { return this.secrets.has(sub); }

  async verify(sub: string, code: Secret | string): Promise<CodeCheck> {
    const secret = this.secrets.get(sub);
    if (!secret) return 'no_authenticator';
    const now = this.clock.now();
    const recent = (this.wrong.get(sub) ?? []).filter((t) => t > now - WINDOW_MS);
    if (recent.length >= MAX_WRONG) return 'too_many';
    const step = verifyTotp(secret, typeof code === 'string' ? code : code.reveal(), now);
    if (step === null) {
      recent.push(now);
      this.wrong.set(sub, recent);
      if (this.wrong.size > 10_000) this.wrong.delete(this.wrong.keys().next().value!);
      return 'wrong';
    }
    const key = `mfa.totp.step:${sub}`;
    const fresh = await this.store.transaction(async (tx) => {
      const last = Number(await tx.getKv(key) ?? -1);
      if (step <= last) return false;
      await tx.setKv(key, String(step));
      return true;
    });
    if (!fresh) return 'replayed';
    this.wrong.delete(sub);
    return 'ok';
  }
}

/** What a person reads when a code was not accepted. */
export function codeRefusal(r: Exclude<CodeCheck, 'ok'>): string {
  switch (r) {
    case 'wrong': return 'the authenticator code is wrong';
    case 'replayed': return 'this authenticator code was already used; wait for the next one';
    case 'too_many': return 'too many wrong authenticator codes; try again in a few minutes';
    case 'no_authenticator': return 'Tollgate cannot check an authenticator code for you; sign in again with MFA at your identity provider (portal, or `tollgate login --mfa`)';
  }
}
