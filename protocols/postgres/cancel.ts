/**
 * CancelRequest mapping: each client gets BackendKeyData with the server backend's own pid (what
 * pg_backend_pid() and NotificationResponse say, as when connected directly) and a secret key of
 * the gateway's; a cancel arriving with that pair on a new connection is sent upstream with the
 * real backend's pid and secret. The upstream secret never reaches the client.
 */
import { randomBytes } from 'node:crypto';
import type { UpstreamKey } from './upstream.js';

export interface CancelEntry {
  upstream: UpstreamKey;
  onCancel?: () => void;
}

export class CancelRegistry {
  private readonly map = new Map<string, CancelEntry>();

  /**
   * A fresh client-facing key for an upstream backend: its pid (a random one when it has none)
   * and a random secret key. Call the returned release() at session end.
   */
  register(entry: CancelEntry): { pid: number; key: number; release(): void } {
    let pid = 0;
    let key = 0;
    let id = '';
    do {
      const r = randomBytes(8);
      pid = entry.upstream.pid > 0 ? entry.upstream.pid >>> 0 : (r.readUInt32BE(0) & 0x3fffffff) || 1; // positive, like a real pid
      key = r.readUInt32BE(4);
      id = `${pid}:${key}`;
    } while (this.map.has(id));
    this.map.set(id, entry);
    return { pid, key, release: () => { this.map.delete(id); } };
  }

  lookup(pid: number, key: number): CancelEntry | undefined {
    return this.map.get(`${pid >>> 0}:${key >>> 0}`);
  }

  get size(): number { return this.map.size; }
}
