/**
 * A minimal ProtocolContext for early development of protocols/mysql only (no proxy, no store).
 * The end-to-end tests use test/support/gateway.ts; this one backs the wire-level unit test.
 */
import pino from 'pino';
import { SystemClock } from '../../policies/clock.js';
import { Secret } from '../../auth/secret.js';
import type { ProtocolContext, LiveSession, EndReason, TargetConfig, RuleDecision, Authorized } from '../../protocols/types.js';
import type { ProtocolModule } from '../../protocols/types.js';
import type { LeaseRecord } from '../../proxy/store/types.js';

export interface MiniRecord { statement: string; kind?: string | null; rows?: number | null; error?: string | null; decision?: string }

export function miniContext(mod: ProtocolModule, target: TargetConfig, secret: string, opts: { deny?: RegExp; kill?: RegExp; tls?: { cert: string; key: string; ca: string } } = {}) {
  const log = pino({ level: process.env['TG_LOG'] ?? 'silent' });
  const statements: MiniRecord[] = [];
  const leases: LeaseRecord[] = [];
  const sessions: { s: LiveSession; terminate: (r: EndReason) => void; endReason: EndReason | null }[] = [];
  const verifiers = mod.secretVerifiers!(undefined as never, target, new Secret(secret));
  const ctx: ProtocolContext = {
    log,
    clock: new SystemClock(),
    tls: opts.tls ? { cert: opts.tls.cert, key: new Secret(opts.tls.key), ca: opts.tls.ca } : (undefined as never),
    dataDir: '/tmp',
    publicHost: '127.0.0.1',
    publicUrl: 'http://127.0.0.1',
    target: (n) => (n === target.name ? target : undefined),
    targets: () => [target],
    resolveSecret: (ref) => new Secret((ref as { value: string }).value),
    pendingSecrets: async (u) => (u.split(':')[0] === target.name ? [{ id: 's1', verifiers }] : []),
    deriveKey: () => Buffer.alloc(32),
    async authenticate(req) {
      const good = req.provenSecretId === 's1' || (req.secret && req.secret.reveal() === secret);
      if (!good || req.username.split(':')[0] !== target.name) return { ok: false, code: 'bad_secret', reason: 'the connection secret is wrong, used or expired' };
      const role = target.roles.find((r) => r.name === (req.username.split(':')[1] ?? target.roles[0]!.name))!;
      const auth: Authorized = {
        principal: { sub: 'alice', email: null, name: null, groups: [], mfaAt: null, via: 'secret' },
        grant: { id: 'g1' } as never,
        target,
        role,
      };
      return { ok: true, auth };
    },
    beginBrowserApproval: () => { throw new Error('no'); },
    async openSession(auth) {
      let term: (r: EndReason) => void = () => {};
      const entry = { s: null as unknown as LiveSession, terminate: (r: EndReason) => term(r), endReason: null as EndReason | null };
      const myLeases: LeaseRecord[] = [];
      const s: LiveSession = {
        id: `sess${sessions.length + 1}`,
        principal: auth.principal, grant: auth.grant, target: auth.target, role: auth.role, startedAt: Date.now(),
        log,
        recording: {
          sessionId: 'x',
          cast: () => { throw new Error('no'); },
          events: () => ({ event() {} }),
          screen: () => { throw new Error('no'); },
          close: async () => {},
          queries: () => ({
            statement(st) {
              const r: MiniRecord = { statement: st.statement, kind: st.kind, decision: st.decision };
              statements.push(r);
              return { finish(x) { r.rows = x.rows; r.error = x.error; } };
            },
          }),
        },
        async lease(kind, data, create) {
          const l: LeaseRecord = { id: `l${leases.length + 1}`, sessionId: null, grantId: 'g1', target: target.name, kind, state: 'pending', data, createdAt: 0, activatedAt: null, revokedAt: null, error: null };
          leases.push(l);
          myLeases.push(l);
          try {
            const res = await create(l.id);
            Object.assign(l.data, res.data ?? {});
            l.state = 'active';
            return res.credential;
          } catch (e) {
            await mod.revokeLease!(ctx, target, l);
            l.state = 'revoked';
            throw e;
          }
        },
        check(text, o): RuleDecision {
          if (opts.kill?.test(text)) return { action: 'kill', message: `forbidden: ${o?.kind}` };
          if (opts.deny?.test(text)) return { action: 'deny', message: `denied: ${o?.kind}` };
          return { action: 'allow', message: '' };
        },
        onTerminate(h) { term = h; },
        onWarning() {},
        addBytes() {},
        audit() {},
        ended: false,
        async end(reason) {
          if (entry.endReason) return;
          entry.endReason = reason;
          for (const l of myLeases) if (l.state === 'active') { await mod.revokeLease!(ctx, target, l); l.state = 'revoked'; }
        },
      };
      entry.s = s;
      sessions.push(entry);
      return s;
    },
  };
  return { ctx, statements, leases, sessions };
}
