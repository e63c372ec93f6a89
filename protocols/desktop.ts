/**
 * What the desktop protocols (VNC, RDP) share about a role: its clipboard rule. Directions are
 * seen from the person: `to-server` is their clipboard going to the desktop (gateway to desktop),
 * `to-client` is the desktop's clipboard coming back to them.
 */
import type { RoleConfig } from './types.js';

export type Clipboard = 'both' | 'to-client' | 'to-server' | 'none';
export const CLIPBOARD_RULES: readonly Clipboard[] = ['both', 'to-client', 'to-server', 'none'];

/** The role's clipboard rule; absent means both ways, anything unknown means none. */
export function clipboardOf(r: RoleConfig): Clipboard {
  const c = r.clipboard;
  return c === 'to-client' || c === 'to-server' || c === 'none' ? c : c === undefined || c === 'both' ? 'both' : 'none';
}

/** Whether clipboard content may flow in this direction under the rule. */
export function clipboardAllows(rule: Clipboard, direction: 'to-server' | 'to-client'): boolean {
  return rule === 'both' || rule === direction;
}
