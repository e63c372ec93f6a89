/**
 * The gateway.* settings of several nodes and worker processes (issue 17), composed into the
 * gateway section by proxy/config.ts. Durations are parsed with policies/config.ts's parseDuration.
 */
import { availableParallelism, hostname } from 'node:os';
import { z } from 'zod';
import { secretRefSchema } from '../../auth/secret.js';
import { durationSchema, parseDuration } from '../../policies/config.js';

/** A node id: what the registry, sessions and audit events name it by (worker processes add /w<n>). */
const nodeId = z.string().min(1).max(100).regex(/^[A-Za-z0-9._:-]+$/, 'letters, digits and . _ : - (a host name)');

export const clusterGatewayFields = {
  /** This node's name in the registry, on its sessions and in audit events: unique per node. Default: the host name. */
  id: nodeId.default(() => defaultNodeId()),
  /** A node silent this long is declared lost: a survivor ends its sessions (gateway_lost) and revokes their leases. */
  nodeTimeout: durationSchema.default('30s'),
  /** A node that cannot reach its store this long ends its live sessions (fail closed); it refuses new ones at once. */
  storeLossTimeout: durationSchema.default('30s'),
  /** SIGTERM: /readyz fails, listeners stop accepting, live sessions are warned, and end this long after (gateway_shutdown). */
  drainTimeout: durationSchema.default('30s'),
  /** Worker processes behind the same listeners: a number, or auto (one per core). */
  workers: z.union([z.number().int().min(1).max(64), z.literal('auto')]).default(1),
  /**
   * The internal listener other nodes stream live sessions from (mutual TLS with gateway.ca). Started
   * when the store is PostgreSQL or there are several workers. Worker n listens on port + n (port 0: any).
   */
  internal: z.object({
    host: z.string().default('127.0.0.1'),
    port: z.number().int().min(0).max(65535).default(0),
    /** The host other nodes dial (default: host, or this machine's host name when host is 0.0.0.0 or ::). */
    advertise: z.string().optional(),
  }).strict().optional(),
  /**
   * The CA every node shares (PEM certificate and key): it issues the gateway's TLS certificate (unless
   * gateway.tls is set) and each node's certificate for the internal channel. Default: a CA made in <dataDir>/tls.
   */
  ca: z.object({ cert: secretRefSchema, key: secretRefSchema }).strict().optional(),
  /** Where recordings are written; several nodes share it (one file system, mounted at the same path). Default <dataDir>/recordings. */
  recordingsDir: z.string().optional(),
  /** How often a node picks up requests and grants other nodes filed, to time them too (the first to fire claims the timer). */
  timerSweep: durationSchema.default('60s'),
};

/** The host name, as a node id (characters a node id may not hold become -). */
export function defaultNodeId(): string {
  return (hostname() || 'tollgate').replace(/[^A-Za-z0-9._:-]/g, '-').slice(0, 100);
}

/** How many worker processes gateway.workers asks for. */
export function workerCount(v: number | 'auto'): number {
  return v === 'auto' ? Math.max(1, Math.min(64, availableParallelism())) : v;
}

export interface ClusterTimings {
  nodeTimeoutMs: number;
  storeLossTimeoutMs: number;
  drainTimeoutMs: number;
  /** Heartbeat period: a third of nodeTimeout, between 100 ms and 5 s. */
  heartbeatMs: number;
}

export function clusterTimings(g: { nodeTimeout: string | number; storeLossTimeout: string | number; drainTimeout: string | number }): ClusterTimings {
  const nodeTimeoutMs = parseDuration(g.nodeTimeout);
  return {
    nodeTimeoutMs,
    storeLossTimeoutMs: parseDuration(g.storeLossTimeout),
    drainTimeoutMs: parseDuration(g.drainTimeout),
    heartbeatMs: Math.max(100, Math.min(5_000, Math.floor(nodeTimeoutMs / 3))),
  };
}
