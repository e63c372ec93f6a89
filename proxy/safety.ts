/**
 * The process-level safety net. Each session's event handlers run inside `runInSession` (see
 * LiveSession.guard), an AsyncLocalStorage scope that follows the timers and promises they start.
 * An uncaught exception or unhandled rejection raised in such a scope ends only that session
 * (logged, audited, `error` reason to its client); anything else cannot be attributed, so the
 * process logs it, audits `gateway.crashed` and exits non-zero: a supervisor restarts it and the
 * reaper revokes the leases of the sessions it lost. Nothing is swallowed silently.
 *
 * installSafetyNet() is called by the process entry (`tollgate serve`, `tollgate demo`) only, never
 * by library code, so tests that embed a gateway keep Node's own behaviour.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import type { Logger } from 'pino';
import type { AuditLog } from './audit.js';

export interface ScopedSession {
  readonly id: string;
  /** End this session because of an internal error (idempotent). */
  fail(err: unknown, origin: string): void;
}

const scope = new AsyncLocalStorage<ScopedSession>();

/** Run fn in the session's scope (errors from what it starts are attributed to the session). */
export function runInSession<T>(session: ScopedSession, fn: () => T): T {
  return scope.run(session, fn);
}

/** The session whose handler (or the async work it started) is running now, if any. */
export function currentSession(): ScopedSession | undefined {
  return scope.getStore();
}

/** One line about an error, for audit events and stderr (the stack goes to the log only). */
export function describeError(err: unknown): string {
  const e = err as { name?: unknown; message?: unknown } | null;
  const text = e && typeof e === 'object' && typeof e.message === 'string'
    ? `${typeof e.name === 'string' ? e.name : 'Error'}: ${e.message}`
    : safeString(err);
  return text.length > 500 ? `${text.slice(0, 500)}…` : text;
}

function safeString(v: unknown): string {
  try { return String(v); } catch { return Object.prototype.toString.call(v); }
}

export interface SafetyNetOptions {
  log: Logger;
  /** Appends the `gateway.crashed` audit event before exiting (the gateway's audit log once it runs). */
  auditCrash?: (data: Record<string, unknown>) => Promise<unknown>;
  /** How long the crash audit may take before the process exits anyway. */
  exitDeadlineMs?: number;
  exit?: (code: number) => void;
}

/** Install the handlers; returns a function that removes them. */
export function installSafetyNet(opts: SafetyNetOptions): () => void {
  const exit = opts.exit ?? ((code: number) => process.exit(code));
  let exiting = false;
  const handle = (err: unknown, origin: 'uncaughtException' | 'unhandledRejection') => {
    const s = scope.getStore();
    if (s) {
      opts.log.error({ err, origin, session: s.id }, 'internal error in a session: ending that session, the gateway keeps running');
      try { s.fail(err, origin); } catch (e) { opts.log.error({ err: e, session: s.id }, 'ending the failed session failed'); }
      return;
    }
    opts.log.fatal({ err, origin }, 'internal error outside any session: exiting (a supervisor restarts the gateway; the reaper revokes leftover leases)');
    process.stderr.write(`tollgate: fatal ${origin}: ${describeError(err)}\n`);
    if (exiting) return;
    exiting = true;
    const deadline = setTimeout(() => exit(1), opts.exitDeadlineMs ?? 2000);
    const audited = opts.auditCrash ? Promise.resolve().then(() => opts.auditCrash!({ origin, error: describeError(err) })) : Promise.resolve();
    audited.catch(() => undefined).finally(() => { clearTimeout(deadline); exit(1); });
  };
  const onException = (err: unknown) => handle(err, 'uncaughtException');
  const onRejection = (reason: unknown) => handle(reason, 'unhandledRejection');
  process.on('uncaughtException', onException);
  process.on('unhandledRejection', onRejection);
  return () => {
    process.off('uncaughtException', onException);
    process.off('unhandledRejection', onRejection);
  };
}

/** The safety net of a gateway process: its log, and `gateway.crashed` in its audit log before exiting. */
export interface ProtectedGateway { log: Logger; audit?: AuditLog; config: { gateway: { id: string } } }

export function protectGateway(gw: ProtectedGateway): () => void {
  return installSafetyNet({
    log: gw.log,
    auditCrash: async (data) => {
      const audit = gw.audit as AuditLog | undefined; // set once start() opened the store
      if (audit) await audit.append('system', 'gateway.crashed', gw.config.gateway.id, data);
    },
  });
}
