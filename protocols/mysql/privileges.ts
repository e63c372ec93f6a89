/**
 * Statement rules enforced by the server's privilege system: a kind the role's rules deny or kill
 * unconditionally has its privileges left out of the minted user's grants, so the same statement
 * run through a stored procedure, PREPARE/EXECUTE, EXECUTE IMMEDIATE or an event (all of which run
 * with the session user's privileges when it defined them) is refused by the server as well.
 *
 * `ALL [PRIVILEGES] ON x` is granted, then the withheld privileges that exist at that level are
 * revoked on the same object; an explicit list simply leaves them out. What a database role
 * (`roles:`) grants is not reduced (the server has no per-user exception to a role); the audit says
 * so. Routines defined by another user with SQL SECURITY DEFINER run with that user's privileges.
 */
import type { CommandRuleConfig } from '../types.js';

/** The privileges each statement kind needs (what is withheld when the kind is denied). */
export const KIND_PRIVILEGES: Record<string, string[]> = {
  'DROP TABLE': ['DROP'], 'DROP DATABASE': ['DROP'], 'DROP SCHEMA': ['DROP'], 'DROP VIEW': ['DROP'], 'DROP SEQUENCE': ['DROP'],
  'DROP PROCEDURE': ['ALTER ROUTINE'], 'DROP FUNCTION': ['ALTER ROUTINE'], 'DROP TRIGGER': ['TRIGGER'], 'DROP EVENT': ['EVENT'],
  'DROP INDEX': ['INDEX'], 'DROP USER': ['CREATE USER'], 'DROP ROLE': ['CREATE USER'],
  DROP: ['DROP', 'ALTER ROUTINE', 'TRIGGER', 'EVENT', 'INDEX', 'CREATE USER'],
  TRUNCATE: ['DROP'],
  'ALTER TABLE': ['ALTER'], 'ALTER DATABASE': ['ALTER'], 'ALTER SCHEMA': ['ALTER'], 'ALTER PROCEDURE': ['ALTER ROUTINE'],
  'ALTER FUNCTION': ['ALTER ROUTINE'], 'ALTER EVENT': ['EVENT'], 'ALTER USER': ['CREATE USER'],
  ALTER: ['ALTER', 'ALTER ROUTINE'],
  'CREATE TABLE': ['CREATE'], 'CREATE DATABASE': ['CREATE'], 'CREATE SCHEMA': ['CREATE'], 'CREATE VIEW': ['CREATE VIEW'],
  'CREATE PROCEDURE': ['CREATE ROUTINE'], 'CREATE FUNCTION': ['CREATE ROUTINE'], 'CREATE TRIGGER': ['TRIGGER'], 'CREATE EVENT': ['EVENT'],
  'CREATE INDEX': ['INDEX'], 'CREATE TEMPORARY': ['CREATE TEMPORARY TABLES'], 'CREATE USER': ['CREATE USER'], 'CREATE ROLE': ['CREATE USER'],
  CREATE: ['CREATE', 'CREATE VIEW', 'CREATE ROUTINE', 'TRIGGER', 'EVENT', 'INDEX', 'CREATE TEMPORARY TABLES', 'CREATE USER'],
  'RENAME TABLE': ['ALTER'], 'RENAME USER': ['CREATE USER'], RENAME: ['ALTER', 'CREATE USER'],
  GRANT: ['GRANT OPTION'], REVOKE: ['GRANT OPTION'],
  DELETE: ['DELETE'], UPDATE: ['UPDATE'], INSERT: ['INSERT'],
  'LOAD DATA': ['FILE'], 'LOAD XML': ['FILE'], LOAD: ['FILE'],
  'SET GLOBAL': ['SUPER'], SHUTDOWN: ['SHUTDOWN'], 'LOCK TABLES': ['LOCK TABLES'], LOCK: ['LOCK TABLES'],
  FLUSH: ['RELOAD'], RESET: ['RELOAD'], CALL: ['EXECUTE'],
};

/** Privileges that exist at each grant level (what REVOKE accepts there). */
const DATABASE_LEVEL = new Set(['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'CREATE', 'DROP', 'REFERENCES', 'INDEX', 'ALTER', 'CREATE TEMPORARY TABLES',
  'LOCK TABLES', 'EXECUTE', 'CREATE VIEW', 'SHOW VIEW', 'CREATE ROUTINE', 'ALTER ROUTINE', 'EVENT', 'TRIGGER', 'DELETE HISTORY']);
const TABLE_LEVEL = new Set(['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'CREATE', 'DROP', 'REFERENCES', 'INDEX', 'ALTER', 'CREATE VIEW', 'SHOW VIEW', 'TRIGGER', 'DELETE HISTORY']);
const ROUTINE_LEVEL = new Set(['EXECUTE', 'ALTER ROUTINE']);

const norm = (s: string) => s.trim().toUpperCase().split(/\s+/).join(' ');

/** The privileges to withhold for the rules of a role (deny/kill rules whose only condition is kinds). */
export function withheldPrivileges(rules: readonly CommandRuleConfig[]): string[] {
  const out = new Set<string>();
  for (const r of rules) {
    if ((r.action !== 'deny' && r.action !== 'kill') || !r.kinds || r.pattern || r.commands || r.methods || r.path) continue;
    for (const k of r.kinds) for (const p of KIND_PRIVILEGES[norm(k)] ?? []) out.add(p);
  }
  return [...out];
}

function levelOf(object: string): Set<string> | null {
  const o = object.trim();
  if (/^(FUNCTION|PROCEDURE)\s/i.test(o)) return ROUTINE_LEVEL;
  const bare = o.replace(/^TABLE\s+/i, '');
  if (bare === '*.*') return null; // global: every privilege
  if (bare === '*' || /\.\*$/.test(bare)) return DATABASE_LEVEL;
  return TABLE_LEVEL;
}

export interface ReducedGrant {
  /** The GRANT privileges to issue (null: nothing left to grant). */
  privs: string | null;
  /** Privileges to REVOKE on the same object after GRANT ALL. */
  revoke: string[];
  /** Privileges the grant would have given and does not. */
  withheld: string[];
}

/** One configured grant ("privs ON object", already validated) with the withheld privileges taken out. */
export function reduceGrant(privs: string, object: string, withheld: readonly string[]): ReducedGrant {
  if (!withheld.length) return { privs, revoke: [], withheld: [] };
  const items = privs.split(',').map((p) => p.trim()).filter(Boolean);
  const name = (item: string) => norm(item.replace(/\(.*$/, ''));
  if (items.some((i) => name(i) === 'ALL' || name(i) === 'ALL PRIVILEGES')) {
    const level = levelOf(object);
    const revoke = withheld.filter((w) => w !== 'GRANT OPTION' && (level === null || level.has(w)));
    return { privs, revoke, withheld: revoke };
  }
  const kept = items.filter((i) => !withheld.includes(name(i)));
  const dropped = items.filter((i) => withheld.includes(name(i))).map(name);
  return { privs: kept.length ? kept.join(', ') : null, revoke: [], withheld: dropped };
}
