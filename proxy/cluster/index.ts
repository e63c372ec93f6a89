/**
 * One gateway process among several (nodes on one PostgreSQL store, worker processes on one
 * machine): the control bus (bus.ts), the node registry and failure handling (nodes.ts), the
 * internal channel for live views of other nodes' sessions (relay.ts), readiness and drain. The
 * gateway wires it in (proxy/gateway.ts); it works the same with one node alone (SQLite): the bus
 * then has nobody else to tell, the registry no peer to watch.
 */
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { EndReason } from '../../protocols/types.js';
import type { LiveFrame, Recorder } from '../../recorder/index.js';
import type { AuditLog } from '../audit.js';
import type { Clock } from '../../policies/clock.js';
import type { SessionManager } from '../sessions.js';
import type { ControlEventRecord, NodeRecord, SessionRecord, Store } from '../store/types.js';
import { issueNodeCertificate, type CaMaterial } from '../tls.js';
import { ControlBus, selects, type SessionSelector } from './bus.js';
import { NodeRegistry } from './nodes.js';
import { startInternalServer, watchRemote, type InternalServer, type NodeTls, type RemoteWatch } from './relay.js';
import type { ClusterTimings } from './config.js';

export type { SessionSelector } from './bus.js';

/** How long a kill of another node's session waits for that node to end it (its modules get 5 s to close both sides). */
const REMOTE_KILL_WAIT_MS = 7_000;

export interface ClusterOptions {
  nodeId: string;
  store: Store;
  sessions: SessionManager;
  recorder: Recorder;
  audit: Pick<AuditLog, 'append'>;
  clock: Clock;
  log: Logger;
  timings: ClusterTimings;
  dataDir: string;
  ca: CaMaterial;
  /** The internal listener (null: none, e.g. one node alone on SQLite). */
  internal: { host: string; port: number; advertise: string } | null;
  notify(event: Record<string, unknown>): void;
}

/** What /readyz reports (nothing about targets or sessions). */
export interface Readiness { ready: boolean; checks: { store: boolean; idp: boolean; listeners: boolean; draining: boolean } }

export class Cluster {
  readonly nodeId: string;
  readonly bus: ControlBus;
  readonly registry: NodeRegistry;
  private internal: InternalServer | null = null;
  private nodeTls: NodeTls | null = null;
  draining = false;
  /** Worker processes: the primary says when all of them listen (readiness of the HTTP front's worker). */
  peersReady = true;

  constructor(private readonly o: ClusterOptions) {
    this.nodeId = o.nodeId;
    this.bus = new ControlBus({
      store: o.store, nodeId: o.nodeId, log: o.log.child({ c: 'bus' }),
      apply: async (msg) => { await this.endLocal(msg.select, msg.reason); },
    });
    this.registry = new NodeRegistry({
      store: o.store, id: o.nodeId, host: hostname(), timings: o.timings, log: o.log.child({ c: 'nodes' }),
      internalAddr: () => (this.internal && o.internal ? `${formatHost(o.internal.advertise)}:${this.internal.port}` : null),
      reap: async (node) => { await this.reapNode(node); },
      onStoreLost: () => { void this.o.audit.append('system', 'gateway.store_lost', this.nodeId, {}).catch(() => undefined); },
      onStoreBack: () => {
        void this.o.audit.append('system', 'gateway.store_back', this.nodeId, {}).catch(() => undefined);
        void this.afterStoreLoss();
      },
      onStoreLossTimeout: () => {
        void this.o.sessions.terminateWhere(() => true, {
          code: 'store_lost',
          message: 'Tollgate: this gateway lost its connection to its store and can no longer be told to end sessions; the session is closed (fail closed). Reconnect.',
        });
      },
      onFenced: (by) => {
        void this.o.sessions.terminateWhere(() => true, {
          code: 'gateway_lost',
          message: `Tollgate: this gateway was out of touch and ${by ?? 'another gateway'} ended its sessions; the session is closed. Reconnect.`,
        });
      },
    });
  }

  async start(): Promise<void> {
    if (this.o.internal) {
      const c = issueNodeCertificate(this.o.ca, this.nodeId, join(this.o.dataDir, 'tls'));
      this.nodeTls = { cert: c.cert, key: c.key, ca: this.o.ca.cert };
      this.internal = await startInternalServer({
        host: this.o.internal.host, port: this.o.internal.port, tls: this.nodeTls, log: this.o.log.child({ c: 'internal' }),
        watch: (id, by, peer, onFrame) => this.localWatch(id, by, peer, onFrame),
      });
    }
    await this.registry.start();
    await this.bus.start();
  }

  /**
   * The store answers again: the ends of sessions that closed without it are written, and the
   * reaper revokes (again: revokes are idempotent) the leases whose revoke could not be recorded.
   */
  private async afterStoreLoss(): Promise<void> {
    try {
      const left = await this.o.sessions.flushUnrecorded();
      const reaped = await this.o.sessions.reap();
      this.o.log.info({ unrecorded: left, ...reaped }, 'store back: session ends written, leases reaped');
    } catch (e) {
      this.o.log.warn({ err: (e as Error).message }, 'store back: writing what the loss left failed (the next reaper run tries again)');
    }
  }

  /** Why no new session may start here now, or null. */
  admit(): string | null {
    if (this.draining) return 'Tollgate: this gateway is shutting down; connect again (another gateway takes the connection).';
    if (this.registry.storeLost) return 'Tollgate: this gateway has lost its connection to its store; try again shortly or through another gateway.';
    return null;
  }

  /**
   * End the matching live sessions on every node: elsewhere through the bus, here at once
   * (resolves when they have ended). The message is handed to the store first, so its INSERT
   * (and NOTIFY) is queued ahead of the local teardowns' store writes and the other nodes end
   * theirs in parallel with this one; the local end never waits for it (a lost store).
   */
  async end(select: SessionSelector, reason: EndReason): Promise<number> {
    const published = this.bus.publish({ kind: 'end', select, reason });
    const local = this.endLocal(select, reason);
    const [n] = await Promise.all([local, published]);
    return n;
  }

  private endLocal(select: SessionSelector, reason: EndReason): Promise<number> {
    return this.o.sessions.terminateWhere((s) => selects(select, s, this.nodeId), reason);
  }

  /** A live session another node holds: tell every node, wait (bounded) until its record says it ended. */
  async killRemote(rec: SessionRecord, reason: EndReason): Promise<boolean> {
    await this.bus.publish({ kind: 'end', select: { session: rec.id }, reason });
    const until = performance.now() + REMOTE_KILL_WAIT_MS;
    while (performance.now() < until) {
      const s = await this.o.store.getSession(rec.id);
      if (!s || s.state !== 'active') return true;
      await new Promise((r) => setTimeout(r, 20));
    }
    return false;
  }

  private localWatch(id: string, by: string, peer: string, onFrame: (f: LiveFrame) => void) {
    const live = this.o.sessions.get(id);
    if (!live) return null;
    this.o.log.info({ session: id, by, peer }, 'internal channel: another node watches a session of this node');
    const sub = this.o.recorder.live.subscribe(id, onFrame);
    return {
      session: { id: live.id, identity: live.identity, target: live.target.name, role: live.role.name, protocol: live.protocol, startedAt: live.startedAt, grantExpiresAt: live.grant.expiresAt, node: this.nodeId },
      snapshot: sub.snapshot,
      unsubscribe: () => sub.unsubscribe(),
    };
  }

  /** Watch a live session another node holds, over the internal channel. */
  async watchRemote(rec: SessionRecord, by: string, onFrame: (f: LiveFrame) => void, onClose: () => void): Promise<RemoteWatch> {
    if (!this.nodeTls) throw new Error('this gateway has no internal channel (gateway.internal) to reach other nodes');
    const node = await this.o.store.getNode(rec.gatewayId);
    if (!node || !node.internalAddr || (node.state !== 'up' && node.state !== 'draining')) {
      throw new Error(`the node that holds this session (${rec.gatewayId}) cannot be reached`);
    }
    return watchRemote({ addr: node.internalAddr, peer: node.id, tls: this.nodeTls, sessionId: rec.id, by, onFrame, onClose });
  }

  /**
   * A lost node's sessions end as gateway_lost: each claimed once (state active → ended), its leases
   * revoked from the stored lease data through their protocol modules, its open recordings sealed as
   * they are on the shared disk; all audited. Idempotent: a second pass finds nothing left.
   */
  async reapNode(node: Pick<NodeRecord, 'id'>): Promise<{ sessions: number; leases: number; failed: number }> {
    let sessions = 0;
    let leases = 0;
    let failed = 0;
    const message = `Tollgate: the gateway ${node.id} that held this session stopped answering; ${this.nodeId} ended it and revoked its credentials.`;
    for (const s of await this.o.store.listSessions({ state: 'active' })) {
      if (s.gatewayId !== node.id) continue;
      const ended = await this.o.store.claim('sessions', s.id, { state: 'active', gatewayId: node.id }, { state: 'ended', endedAt: this.o.clock.now(), endReason: `gateway_lost: ${message}` });
      if (!ended) continue;
      sessions++;
      for (const l of await this.o.store.listLeases({ sessionId: s.id, state: ['pending', 'active', 'revoking'] })) {
        try { await this.o.sessions.revokeLease(l); leases++; } catch (e) {
          failed++;
          this.o.log.error({ err: (e as Error).message, lease: l.id, node: node.id }, 'could not revoke a lease of a lost node (the reaper tries again)');
        }
      }
      await this.o.audit.append('system', 'session.ended', s.id, { target: s.target, protocol: s.protocol, reason: 'gateway_lost', message, node: node.id, by: this.nodeId });
    }
    const sealed = await this.o.recorder.sealOrphans(async (id) => {
      if (this.o.sessions.get(id)) return true;
      const r = await this.o.store.getSession(id);
      return !!r && r.state === 'active';
    }).catch(() => ({ sealed: 0 }));
    if (sessions || leases || failed) {
      await this.o.audit.append('system', 'gateway.lost', node.id, { by: this.nodeId, sessions, leases, failed, recordingsSealed: sealed.sealed });
      this.o.notify({ kind: 'gateway_lost', node: node.id, by: this.nodeId, sessions });
    }
    return { sessions, leases, failed };
  }

  /** Nodes already lost or stopped that still list live sessions (a reaper interrupted, a node that died stopping): reap them. */
  async sweep(): Promise<void> {
    const stale = (await this.o.store.listNodes()).filter((n) => n.id !== this.nodeId && (n.state === 'lost' || n.state === 'stopped'));
    if (!stale.length) return;
    const ids = new Set(stale.map((n) => n.id));
    if (!(await this.o.store.listSessions({ state: 'active' })).some((s) => ids.has(s.gatewayId))) return;
    for (const n of stale) await this.reapNode(n);
  }

  /** The primary of worker processes saw a worker exit: claim it lost here and reap it (no wait for nodeTimeout). */
  async workerExited(nodeId: string): Promise<void> {
    const n = await this.o.store.getNode(nodeId);
    if (n && (n.state === 'up' || n.state === 'draining')) await this.registry.declareLost(n);
    else if (n) await this.reapNode(n);
  }

  /** IPC between worker processes: an event another process stored. */
  receive(e: ControlEventRecord): void { this.bus.receive(e); }

  /** Draining: new sessions are refused, live ones warned, and waited for up to timeoutMs (the caller ends the rest). */
  async drain(timeoutMs: number): Promise<number> {
    if (!this.draining) {
      this.draining = true;
      this.registry.setState('draining');
      const live = this.o.sessions.list().length;
      await this.o.audit.append('system', 'gateway.draining', this.nodeId, { sessions: live, timeoutMs }).catch(() => undefined);
      this.o.sessions.warnAll(`Tollgate: this gateway is shutting down; your session ends in ${Math.max(1, Math.round(timeoutMs / 1000))} seconds. Reconnect to go on (another gateway takes the connection).`, timeoutMs);
    }
    const until = performance.now() + timeoutMs;
    while (this.o.sessions.list().length && performance.now() < until) await new Promise((r) => setTimeout(r, 100));
    return this.o.sessions.list().length;
  }

  async stop(): Promise<void> {
    await this.bus.close().catch(() => undefined);
    await this.registry.stop().catch(() => undefined);
    await this.internal?.close();
  }

  /** The internal listener's port (tests). */
  get internalPort(): number | null { return this.internal?.port ?? null; }
}

const formatHost = (h: string) => (h.includes(':') && !h.startsWith('[') ? `[${h}]` : h);
