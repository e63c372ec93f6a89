/** Who is calling, as the gateway established it (web session cookie, API token, connection secret). */
export interface Principal {
  /** The IdP's subject; for the dev IdP this is the user name. */
  sub: string;
  email: string | null;
  name: string | null;
  groups: string[];
  /** When this sign-in last proved MFA (epoch ms), null when it did not. */
  mfaAt: number | null;
  via: 'web' | 'token' | 'secret' | 'system';
  /**
   * The credential this principal was established with, when there is one: what it issues (connection
   * secrets, tokens, sessions) ends with it — a revoked token, a web session or IdP link that failed
   * re-validation. linkId is its IdP sign-in (null: not tied to the IdP).
   */
  credential?: CredentialRef;
}

export interface CredentialRef {
  kind: 'token' | 'web' | 'key';
  id: string;
  linkId: string | null;
}

/** 'token:<id>' / 'web:<id>' as stored on what a credential issued. */
export function credentialTag(c: CredentialRef): string {
  return `${c.kind}:${c.id}`;
}

export const SYSTEM: Principal = { sub: 'system', email: null, name: 'Tollgate', groups: [], mfaAt: null, via: 'system' };
