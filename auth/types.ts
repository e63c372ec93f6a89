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
}

export const SYSTEM: Principal = { sub: 'system', email: null, name: 'Tollgate', groups: [], mfaAt: null, via: 'system' };
