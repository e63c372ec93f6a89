/**
 * Signed identity assertions for apps: ES256 JWTs (jose) with a key pair generated once and kept in
 * the module's data dir (0600). The public half is published as a JWKS at /.well-known/jwks.json.
 */
import { existsSync, readFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { exportJWK, generateKeyPair, importJWK, calculateJwkThumbprint, SignJWT, type JWK, type CryptoKey } from 'jose';
import type { Principal } from '../../auth/types.js';
import { writeFileDurable } from '../../auth/durable.js';

export interface AssertionKey {
  kid: string;
  privateKey: CryptoKey;
  jwks: { keys: JWK[] };
}

const FILE = 'assertion-key.json';

export async function loadOrCreateAssertionKey(dir: string): Promise<AssertionKey> {
  const file = join(dir, FILE);
  let priv: JWK;
  if (existsSync(file)) {
    priv = JSON.parse(readFileSync(file, 'utf8')) as JWK;
  } else {
    const { privateKey } = await generateKeyPair('ES256', { extractable: true });
    priv = await exportJWK(privateKey);
    priv.kid = await calculateJwkThumbprint(priv);
    writeFileDurable(file, JSON.stringify(priv), { mode: 0o600 });
  }
  chmodSync(file, 0o600);
  const kid = priv.kid ?? await calculateJwkThumbprint(priv);
  const privateKey = await importJWK(priv, 'ES256') as CryptoKey;
  const { d: _d, ...pub } = priv;
  return { kid, privateKey, jwks: { keys: [{ ...pub, kid, alg: 'ES256', use: 'sig' }] } };
}

export interface AssertionClaims {
  issuer: string;
  app: string;
  principal: Principal;
  grantId: string;
  sessionId: string;
  role: string;
  /** Epoch ms now (from the gateway clock). */
  now: number;
  ttlMs: number;
}

export async function signAssertion(key: AssertionKey, c: AssertionClaims): Promise<{ jwt: string; expiresAt: number }> {
  const iat = Math.floor(c.now / 1000);
  const exp = iat + Math.max(1, Math.floor(c.ttlMs / 1000));
  const jwt = await new SignJWT({
    email: c.principal.email ?? undefined,
    name: c.principal.name ?? undefined,
    groups: c.principal.groups,
    grant: c.grantId,
    sid: c.sessionId,
    role: c.role,
  })
    .setProtectedHeader({ alg: 'ES256', kid: key.kid, typ: 'JWT' })
    .setIssuer(c.issuer)
    .setAudience(c.app)
    .setSubject(c.principal.sub)
    .setIssuedAt(iat)
    .setNotBefore(iat - 5)
    .setExpirationTime(exp)
    .setJti(crypto.randomUUID())
    .sign(key.privateKey);
  return { jwt, expiresAt: exp * 1000 };
}
