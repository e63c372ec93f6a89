/**
 * CancelRequest mapping: each client gets the gateway's own BackendKeyData; a cancel arriving with
 * that key on a new connection is sent upstream with the real backend's pid and secret.
 */
import { randomBytes } from 'node:crypto';
import type { UpstreamKey } from './upstream.js';

export interface CancelEntry {
  upstream: UpstreamKey;
  onCancel?: () => void;
}

export class CancelRegistry {
  private readonly map = new Map<string, CancelEntry>();

  /** A fresh client-facing key for an upstream backend; call the returned release() at session end. */
  register(entry: CancelEntry): { pid: number; key: number; release(): void } {
    let pid = 0;
    let key = 0;
    let id = '';
    do {
      const r = randomBytes(8);
      pid = (r.readUInt32BE(0) & 0x3fffffff) || 1; // positive, like a real pid
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
