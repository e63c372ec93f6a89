/**
 * The gateway as an OpenID relying party (openid-client v6, functional API): browser sign-in with
 * authorization code + PKCE + state + nonce, and the device authorization grant for CLIs.
 *
 * beginLogin() returns the authorization URL and an opaque sealed `state` value (AES-256-GCM, short
 * expiry) that the HTTP front keeps in a short-lived cookie and hands back to finishLogin().
 * Device sign-ins are kept in memory by handle; pollDevice() makes at most one token request per
 * call and never blocks: a call sooner than the IdP's polling interval (real time) answers 'pending'
 * without asking the IdP. Handle expiry follows the injected clock.
 */
import { createHash, randomBytes } from 'node:crypto';
import * as client from 'openid-client';
import type { Logger } from 'pino';
import { Secret } from './secret.js';
import type { Clock } from '../policies/clock.js';
import { SystemClock } from '../policies/clock.js';
import { ephemeralKey, type GatewayKey } from './keys.js';

export interface Claims {
  sub: string;
  email: string | null;
  name: string | null;
  groups: string[];
  /** Whether this sign-in proved MFA (amr has "mfa"/"otp", or acr equals the configured MFA acr). */
  mfa: boolean;
  /** When the person authenticated at the IdP (epoch ms). */
  authTime: number;
  returnTo?: string;
  /** How the IdP says the person signed in (for the audit log), when it says so. */
  acr?: string;
  amr?: string[];
  /** What the IdP issued with this sign-in, to re-validate it later (never logged: Secrets). */
  idp?: IdpTokens;
}

/** IdP tokens kept to re-validate a sign-in: the refresh token (preferred) or an access token for userinfo. */
export interface IdpTokens {
  refresh: Secret | null;
  access: Secret | null;
  /** When the access token stops working (epoch ms), when the IdP said. */
  accessExpiresAt: number | null;
}

/**
 * The IdP's answer when the gateway re-checks a sign-in. refused: it said no (user disabled, refresh
 * token revoked or expired); unverifiable: there is nothing left to ask it with; unavailable: it
 * could not be asked (network, server error): try again later, the credential stays as it is.
 */
export type Revalidation =
  | { ok: true; email: string | null; name: string | null; groups: string[] | null; tokens: IdpTokens }
  | { ok: false; kind: 'refused' | 'unverifiable' | 'unavailable'; message: string };

export interface OidcOptions {
  issuer: string;
  clientId: string;
  clientSecret?: Secret;
  /** How a client secret is sent (default client_secret_basic). */
  tokenEndpointAuthMethod?: 'client_secret_basic' | 'client_secret_post';
  redirectUri: string;
  scopes: string[];
  groupsClaim: string;
  mfaAcr: string;
  log: Logger;
  /** Seals login state; defaults to a key that lives in memory (state then dies with the process). */
  key?: GatewayKey;
  clock?: Clock;
  /** How long a browser sign-in may take (default 10 minutes). */
  loginTtlMs?: number;
  /** Device sign-ins pending at once, in total and per source (default 100 and 10); beyond, startDevice refuses. */
  maxPendingDevices?: number;
  maxPendingDevicesPerSource?: number;
}

export interface BeginLoginOptions {
  /** A path on the gateway to go back to afterwards ("/requests/12"); other values are refused. */
  returnTo?: string;
  /**
   * Ask the IdP for MFA (acr_values = mfaAcr); finishLogin refuses a sign-in without it. Implies a
   * fresh sign-in (prompt=login) unless forceLogin: false or maxAgeSec is given.
   */
  mfa?: boolean;
  /** Force a fresh sign-in at the IdP even when it has a session (prompt=login). */
  forceLogin?: boolean;
  /** Require an authentication no older than this many seconds (max_age). */
  maxAgeSec?: number;
}

export interface DeviceStart {
  handle: string;
  userCode: string;
  verificationUri: string;
  verificationUriComplete?: string;
  /** Seconds. */
  expiresIn: number;
  /** Seconds between polls. */
  interval: number;
}

export type DevicePoll =
  | { status: 'pending' }
  | { status: 'done'; claims: Claims }
  | { status: 'denied' | 'expired'; message: string };

export interface Oidc {
  readonly issuer: string;
  beginLogin(opts?: BeginLoginOptions): { url: string; state: string };
  finishLogin(callbackUrl: URL, state: string): Promise<Claims>;
  /** `source`: who asks (the caller's address as the gateway counts it), for the per-source bound. */
  startDevice(opts?: { mfa?: boolean; source?: string }): Promise<DeviceStart>;
  pollDevice(handle: string): Promise<DevicePoll>;
  /** Ask the IdP again about `sub` with the tokens of an earlier sign-in (refresh grant, else userinfo). */
  revalidate(sub: string, tokens: IdpTokens): Promise<Revalidation>;
}

/** A sign-in failure with a sentence a person understands (no tokens or secrets in it). */
export class SignInError extends Error {
  constructor(message: string, readonly code: string = 'sign_in_failed') {
    super(message);
    this.name = 'SignInError';
  }
}

interface LoginState { s: string; n: string; v: string; r?: string; m: boolean; a?: number }

interface DeviceEntry {
  response: client.DeviceAuthorizationResponse;
  expiresAt: number;
  intervalMs: number;
  /** Real monotonic time (performance.now) before which the IdP is not asked again. */
  nextPollAt: number;
  mfa: boolean;
  inFlight: boolean;
  source: string;
}

const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

/** Loopback hosts where an http issuer is acceptable (dev IdP, tests). */
export function isLoopbackHost(hostname: string): boolean {
  const h = hostname.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/** Only same-origin paths may be used to come back after sign-in (no open redirects). */
export function safeReturnTo(value: string | undefined): string | undefined {
  if (value === undefined || value === '') return undefined;
  if (!value.startsWith('/') || value.startsWith('//') || value.startsWith('/\\') || /[\r\n\t]/.test(value) || value.length > 2048) {
    throw new SignInError('returnTo must be a path on the gateway', 'bad_return_to');
  }
  return value;
}

/**
 * The subject is the identity's key in the store, the audit log and every lease: refuse one with
 * control characters (NUL, newlines, escapes) or bidirectional formatting marks (which make one
 * subject look like another), and one longer than OpenID Connect allows (255 characters).
 */
export function checkSubject(sub: string): void {
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029\ufeff]/.test(sub)) {
    throw new SignInError('sign-in refused: the identity provider sent a subject (sub) with control or text-direction characters; ask its administrator to fix this account', 'bad_subject');
  }
  if (sub.length > 255) {
    throw new SignInError('sign-in refused: the identity provider sent a subject (sub) longer than 255 characters; ask its administrator to fix this account', 'bad_subject');
  }
}

function describe(err: unknown): string {
  if (err instanceof client.AuthorizationResponseError || err instanceof client.ResponseBodyError) {
    return err.error_description ? `${err.error}: ${err.error_description}` : err.error;
  }
  if (err instanceof Error) return err.message;
  return String(err);
}

export async function createOidc(opts: OidcOptions): Promise<Oidc> {
  const log = opts.log.child({ component: 'oidc' });
  const clock = opts.clock ?? new SystemClock();
  const key = opts.key ?? ephemeralKey(clock);
  const loginTtl = opts.loginTtlMs ?? 10 * 60_000;
  const issuerUrl = new URL(opts.issuer);
  const insecure = issuerUrl.protocol === 'http:';
  if (insecure && !isLoopbackHost(issuerUrl.hostname)) {
    throw new SignInError(`the IdP issuer ${issuerUrl.origin} must use https (plain http is only allowed on loopback)`, 'insecure_issuer');
  }
  const auth = opts.clientSecret
    ? (opts.tokenEndpointAuthMethod === 'client_secret_post'
      ? client.ClientSecretPost(opts.clientSecret.reveal())
      : client.ClientSecretBasic(opts.clientSecret.reveal()))
    : client.None();
  let config: client.Configuration;
  try {
    config = await client.discovery(issuerUrl, opts.clientId, undefined, auth, {
      ...(insecure ? { execute: [client.allowInsecureRequests] } : {}),
      timeout: 10,
    });
  } catch (err) {
    throw new SignInError(`could not read the IdP configuration from ${issuerUrl.origin}: ${describe(err)}`, 'idp_unreachable');
  }
  const scope = opts.scopes.includes('openid') ? opts.scopes.join(' ') : ['openid', ...opts.scopes].join(' ');
  const devices = new Map<string, DeviceEntry>();

  /** The groups claim as a list; null when the claim is absent. */
  function groupsOf(c: Record<string, unknown>): string[] | null {
    const raw = c[opts.groupsClaim];
    if (Array.isArray(raw)) return raw.filter((g): g is string => typeof g === 'string');
    return typeof raw === 'string' ? [raw] : null;
  }
  const str = (v: unknown): string | null => (typeof v === 'string' && v ? v : null);

  function idpTokens(t: client.TokenEndpointResponse, previous?: IdpTokens): IdpTokens {
    const refresh = typeof t.refresh_token === 'string' && t.refresh_token ? new Secret(t.refresh_token) : previous?.refresh ?? null;
    const access = typeof t.access_token === 'string' && t.access_token ? new Secret(t.access_token) : null;
    const accessExpiresAt = access && typeof t.expires_in === 'number' ? clock.now() + t.expires_in * 1000 : null;
    return { refresh, access, accessExpiresAt };
  }

  function toClaims(c: client.IDToken | undefined, wantedMfa: boolean, returnTo?: string): Claims {
    if (!c || typeof c.sub !== 'string' || !c.sub) throw new SignInError('the IdP returned no ID token subject', 'no_id_token');
    checkSubject(c.sub);
    const groups = groupsOf(c as Record<string, unknown>) ?? [];
    const amr = Array.isArray(c.amr) ? c.amr.map(String) : [];
    const mfa = amr.includes('mfa') || amr.includes('otp') || (typeof c.acr === 'string' && c.acr === opts.mfaAcr);
    if (wantedMfa && !mfa) throw new SignInError('multi-factor sign-in was required but the IdP did not perform it', 'mfa_required');
    const authTime = typeof c.auth_time === 'number' ? c.auth_time * 1000 : clock.now();
    return {
      sub: c.sub,
      email: str(c.email),
      name: str(c.name) ?? str(c.preferred_username),
      groups,
      mfa,
      authTime,
      ...(returnTo ? { returnTo } : {}),
      ...(typeof c.acr === 'string' ? { acr: c.acr } : {}),
      ...(amr.length ? { amr } : {}),
    };
  }

  function sweepDevices(): void {
    const now = clock.now();
    for (const [h, d] of devices) if (now >= d.expiresAt + 60_000) devices.delete(h);
  }

  return {
    issuer: config.serverMetadata().issuer,

    beginLogin(o: BeginLoginOptions = {}) {
      const returnTo = safeReturnTo(o.returnTo);
      const verifier = client.randomPKCECodeVerifier();
      const st: LoginState = { s: client.randomState(), n: client.randomNonce(), v: verifier, m: Boolean(o.mfa) };
      if (returnTo) st.r = returnTo;
      if (o.maxAgeSec !== undefined) st.a = o.maxAgeSec;
      // S256 of the verifier, computed synchronously (calculatePKCECodeChallenge is async).
      const challenge = createChallenge(verifier);
      const params: Record<string, string> = {
        redirect_uri: opts.redirectUri,
        scope,
        response_type: 'code',
        code_challenge: challenge,
        code_challenge_method: 'S256',
        state: st.s,
        nonce: st.n,
      };
      if (o.mfa) params.acr_values = opts.mfaAcr;
      // Step-up means a fresh proof now: unless the caller chose otherwise, an MFA request also
      // asks the IdP to sign in again (an old MFA session would not satisfy a recency check).
      if (o.forceLogin || (o.mfa && o.forceLogin === undefined && o.maxAgeSec === undefined)) params.prompt = 'login';
      if (o.maxAgeSec !== undefined) params.max_age = String(o.maxAgeSec);
      const url = client.buildAuthorizationUrl(config, params);
      return { url: url.href, state: key.seal(st, loginTtl) };
    },

    async finishLogin(callbackUrl: URL, state: string): Promise<Claims> {
      const st = key.unseal<LoginState>(state);
      if (!st || typeof st.s !== 'string') {
        throw new SignInError('the sign-in took too long or was started in another browser; please sign in again', 'bad_state');
      }
      let tokens: Awaited<ReturnType<typeof client.authorizationCodeGrant>>;
      try {
        tokens = await client.authorizationCodeGrant(config, callbackUrl, {
          pkceCodeVerifier: st.v,
          expectedState: st.s,
          expectedNonce: st.n,
          idTokenExpected: true,
          ...(st.a !== undefined ? { maxAge: st.a } : {}),
        });
      } catch (err) {
        const msg = describe(err);
        log.info({ error: msg }, 'sign-in failed');
        if (err instanceof client.AuthorizationResponseError && err.error === 'access_denied') {
          throw new SignInError(`sign-in was refused: ${err.error_description ?? 'access denied'}`, 'access_denied');
        }
        throw new SignInError(`sign-in failed: ${msg}`);
      }
      const claims = { ...toClaims(tokens.claims(), st.m, st.r), idp: idpTokens(tokens) };
      log.info({ sub: claims.sub, mfa: claims.mfa, refreshToken: !!claims.idp.refresh }, 'signed in');
      return claims;
    },

    async startDevice(o: { mfa?: boolean; source?: string } = {}): Promise<DeviceStart> {
      sweepDevices();
      // Every start costs a request to the IdP and memory until it expires: bounded before the IdP is asked.
      const source = o.source ?? 'unknown';
      let pending = 0;
      let mine = 0;
      const at = clock.now();
      for (const d of devices.values()) {
        if (at >= d.expiresAt) continue;
        pending++;
        if (d.source === source) mine++;
      }
      if (pending >= (opts.maxPendingDevices ?? 100)) {
        throw new SignInError('too many device sign-ins are pending; try again in a few minutes', 'too_many_pending');
      }
      if (mine >= (opts.maxPendingDevicesPerSource ?? 10)) {
        throw new SignInError('too many device sign-ins are pending from your address; finish one or wait until it expires', 'too_many_pending');
      }
      const params: Record<string, string> = { scope };
      if (o.mfa) params.acr_values = opts.mfaAcr;
      let response: client.DeviceAuthorizationResponse;
      try {
        response = await client.initiateDeviceAuthorization(config, params);
      } catch (err) {
        throw new SignInError(`could not start a device sign-in: ${describe(err)}`, 'device_start_failed');
      }
      const handle = randomBytes(24).toString('base64url');
      const interval = response.interval ?? 5;
      const now = clock.now();
      devices.set(handle, {
        response,
        expiresAt: now + response.expires_in * 1000,
        intervalMs: interval * 1000,
        nextPollAt: performance.now(),
        mfa: Boolean(o.mfa),
        inFlight: false,
        source,
      });
      return {
        handle,
        userCode: response.user_code,
        verificationUri: response.verification_uri,
        ...(response.verification_uri_complete ? { verificationUriComplete: response.verification_uri_complete } : {}),
        expiresIn: response.expires_in,
        interval,
      };
    },

    async pollDevice(handle: string): Promise<DevicePoll> {
      const d = typeof handle === 'string' ? devices.get(handle) : undefined;
      if (!d) return { status: 'expired', message: 'unknown or expired device sign-in; start again' };
      const now = clock.now();
      if (now >= d.expiresAt) {
        devices.delete(handle);
        return { status: 'expired', message: 'the device code expired before sign-in finished; start again' };
      }
      // Never poll the IdP faster than it asked; a too-early call is simply still pending. This is
      // about the IdP's real rate limit, so it runs on real time, not the injected clock.
      if (d.inFlight || performance.now() < d.nextPollAt) return { status: 'pending' };
      d.inFlight = true;
      d.nextPollAt = performance.now() + d.intervalMs;
      try {
        const tokens = await client.genericGrantRequest(config, DEVICE_GRANT, { device_code: d.response.device_code });
        devices.delete(handle);
        const claims = { ...toClaims(tokens.claims(), d.mfa), idp: idpTokens(tokens) };
        log.info({ sub: claims.sub, mfa: claims.mfa, refreshToken: !!claims.idp.refresh }, 'signed in (device)');
        return { status: 'done', claims };
      } catch (err) {
        if (err instanceof client.ResponseBodyError) {
          if (err.error === 'authorization_pending') return { status: 'pending' };
          if (err.error === 'slow_down') {
            d.intervalMs += 5000;
            d.nextPollAt = performance.now() + d.intervalMs;
            return { status: 'pending' };
          }
          devices.delete(handle);
          if (err.error === 'expired_token') return { status: 'expired', message: 'the device code expired before sign-in finished; start again' };
          if (err.error === 'access_denied') return { status: 'denied', message: `sign-in was refused: ${err.error_description ?? 'access denied'}` };
          return { status: 'denied', message: `sign-in failed: ${describe(err)}` };
        }
        if (err instanceof SignInError) {
          devices.delete(handle);
          return { status: 'denied', message: err.message };
        }
        // Network trouble reaching the IdP: keep the sign-in pending until it expires.
        log.warn({ error: describe(err) }, 'device sign-in poll failed; will retry');
        return { status: 'pending' };
      } finally {
        d.inFlight = false;
      }
    },

    async revalidate(sub: string, t: IdpTokens): Promise<Revalidation> {
      const unavailable = (err: unknown): Revalidation => {
        log.warn({ sub, error: describe(err) }, 're-validation: the IdP could not be asked');
        return { ok: false, kind: 'unavailable', message: `the identity provider could not be reached to re-check ${sub}; try again shortly` };
      };
      const fromUserinfo = async (access: Secret, tokens: IdpTokens): Promise<Revalidation> => {
        let info: client.UserInfoResponse;
        try {
          info = await client.fetchUserInfo(config, access.reveal(), sub);
        } catch (err) {
          if (err instanceof client.WWWAuthenticateChallengeError || (err instanceof client.ResponseBodyError && err.status === 401)) {
            return { ok: false, kind: t.refresh ? 'refused' : 'unverifiable', message: t.refresh
              ? `the identity provider no longer accepts the sign-in of ${sub}`
              : `the identity provider's access token for ${sub} expired and it issued no refresh token; sign in again` };
          }
          if (err instanceof client.ClientError && err.code === 'OAUTH_JSON_ATTRIBUTE_COMPARISON_FAILED') {
            return { ok: false, kind: 'refused', message: `the identity provider answered for another subject than ${sub}` };
          }
          return unavailable(err);
        }
        return { ok: true, email: str(info.email), name: str(info.name) ?? str(info.preferred_username), groups: groupsOf(info as Record<string, unknown>), tokens };
      };
      if (t.refresh) {
        let res: Awaited<ReturnType<typeof client.refreshTokenGrant>>;
        try {
          res = await client.refreshTokenGrant(config, t.refresh.reveal());
        } catch (err) {
          if (err instanceof client.ResponseBodyError && ['invalid_grant', 'unauthorized_client', 'access_denied'].includes(err.error)) {
            log.info({ sub, error: describe(err) }, 're-validation: refresh refused');
            return { ok: false, kind: 'refused', message: `the identity provider refused to renew the sign-in of ${sub} (${err.error_description ?? err.error})` };
          }
          return unavailable(err);
        }
        const tokens = idpTokens(res, t);
        const c = res.claims();
        if (c) {
          if (c.sub !== sub) return { ok: false, kind: 'refused', message: `the identity provider answered for another subject than ${sub}` };
          const groups = groupsOf(c as Record<string, unknown>);
          if (groups !== null || !tokens.access || !config.serverMetadata().userinfo_endpoint) {
            return { ok: true, email: str(c.email), name: str(c.name) ?? str(c.preferred_username), groups, tokens };
          }
        }
        if (tokens.access && config.serverMetadata().userinfo_endpoint) return fromUserinfo(tokens.access, tokens);
        // Renewed, so the person is still there; the IdP just did not say anything about groups.
        return { ok: true, email: null, name: null, groups: null, tokens };
      }
      if (t.access && config.serverMetadata().userinfo_endpoint) {
        if (t.accessExpiresAt !== null && clock.now() >= t.accessExpiresAt) {
          return { ok: false, kind: 'unverifiable', message: `the identity provider's access token for ${sub} expired and it issued no refresh token; sign in again` };
        }
        return fromUserinfo(t.access, t);
      }
      return { ok: false, kind: 'unverifiable', message: `the identity provider issued nothing to re-check the sign-in of ${sub} with; sign in again` };
    },
  };
}

function createChallenge(verifier: string): string {
  return createHash('sha256').update(verifier, 'ascii').digest('base64url');
}
