/**
 * The Samba AD domain controller of the directory tests (protocols/directory-samba.ts): realm
 * TG.TEST, domain TG, in a temp dir, loopback only. One DC runs at a time on the machine (it needs
 * the standard ports): startSambaDc() waits for the others' lock.
 */
import { sambaMissing, startSambaDc as start, type SambaDc } from '../../protocols/directory-samba.js';

export type { SambaDc };
export const REALM = 'TG.TEST';
export const DOMAIN = 'TG';
export const BASE_DN = 'DC=tg,DC=test';
export const ADMIN = 'Administrator@tg.test';

/** Why the DC cannot run here (null: it can). */
export function haveSamba(): string | null {
  return sambaMissing();
}

export function startSambaDc(smbOptions?: string[]): Promise<SambaDc> {
  return start({ realm: REALM, domain: DOMAIN, ...(smbOptions ? { smbOptions } : {}) });
}
