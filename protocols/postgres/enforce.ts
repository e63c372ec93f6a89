/**
 * Statement rules enforced by the database server itself, so DDL run through indirection - a DO
 * block, EXECUTE of a built string, a function or procedure - is refused too, not only the
 * statements the gateway sees on the wire.
 *
 * How: once per database (versioned by the comment on the function), the target's admin installs
 * an event trigger on `ddl_command_start`, `tollgate_refuse_ddl`, running `tollgate.refuse_ddl()`.
 * Each session role Tollgate mints carries its rules in its own role comment
 * (`tollgate:{"deny":[{"k":"DROP","m":"…"}]}`): only a role with CREATEROLE can change a role's
 * comment, which a minted role never has, and `SET` cannot touch it (a custom setting such as
 * `tollgate.deny` could be changed by the session with one SET). The trigger reads the comment of
 * `session_user` (unchanged by SET ROLE and SECURITY DEFINER functions) and refuses a command whose
 * tag is a denied kind (`DROP` refuses `DROP TABLE`, `DROP FUNCTION`…) with the rule's message,
 * SQLSTATE 42501, constraint name `tollgate.deny`, so the relay can tell the refusal in the reply.
 * A comment that says tollgate but cannot be read refuses all DDL (fails closed). Roles without a
 * comment - everyone else, the admin's own teardown - pass at the cost of one catalog lookup.
 *
 * What event triggers cannot see: TRUNCATE and DML (not DDL), shared objects (databases, roles,
 * tablespaces), ALTER SYSTEM. See the README for where each kind is enforced.
 */
import type pg from 'pg';
import type { CommandRuleConfig } from '../types.js';

export const TRIGGER_VERSION = 1;
const VERSION_NOTE = `tollgate event trigger v${TRIGGER_VERSION}`;
export const REFUSED_CONSTRAINT = 'tollgate.deny';

/** First words of the command tags ddl_command_start fires for. */
const DDL_WORDS = new Set(['CREATE', 'ALTER', 'DROP', 'COMMENT', 'GRANT', 'REVOKE', 'SECURITY', 'REFRESH', 'IMPORT']);
/** Kinds that start like DDL but that no event trigger sees. */
const NOT_DDL = new Set(['ALTER SYSTEM', 'CREATE DATABASE', 'DROP DATABASE', 'ALTER DATABASE', 'CREATE ROLE', 'DROP ROLE', 'ALTER ROLE',
  'CREATE USER', 'DROP USER', 'ALTER USER', 'CREATE TABLESPACE', 'DROP TABLESPACE', 'ALTER TABLESPACE']);

export interface DatabaseRule { k: string; m: string }

/**
 * The DDL kinds the session's rules deny or kill unconditionally (rules with kinds and no other
 * condition), with the message each refusal shows. Kinds the server cannot see are left out.
 */
export function databaseRules(rules: readonly CommandRuleConfig[]): DatabaseRule[] {
  const out: DatabaseRule[] = [];
  const seen = new Set<string>();
  for (const r of rules) {
    if ((r.action !== 'deny' && r.action !== 'kill') || !r.kinds || r.pattern || r.commands || r.methods || r.path) continue;
    for (const kind of r.kinds) {
      const k = kind.trim().toUpperCase().split(/\s+/).join(' ');
      if (!k || !DDL_WORDS.has(k.split(' ')[0]!) || NOT_DDL.has(k) || seen.has(k)) continue;
      seen.add(k);
      out.push({ k, m: r.message ?? `Blocked by Tollgate policy: ${r.kinds.join(', ')}` });
    }
  }
  return out;
}

/** The role comment that carries the rules (the trigger reads it). */
export function roleNote(rules: DatabaseRule[]): string {
  return `tollgate:${JSON.stringify({ v: TRIGGER_VERSION, deny: rules })}`;
}

const FUNCTION_BODY = `
DECLARE
  note text;
  rules jsonb;
  r jsonb;
  tag text := pg_catalog.upper(tg_tag);
BEGIN
  SELECT d.description INTO note
    FROM pg_catalog.pg_shdescription d JOIN pg_catalog.pg_roles ro ON ro.oid = d.objoid
   WHERE ro.rolname = session_user AND d.classoid = 'pg_catalog.pg_authid'::pg_catalog.regclass;
  IF note IS NULL OR pg_catalog.left(note, 9) <> 'tollgate:' THEN
    RETURN;
  END IF;
  BEGIN
    rules := pg_catalog.substr(note, 10)::jsonb -> 'deny';
  EXCEPTION WHEN others THEN
    rules := NULL;
  END;
  IF rules IS NULL OR pg_catalog.jsonb_typeof(rules) <> 'array' THEN
    RAISE EXCEPTION USING ERRCODE = '42501', CONSTRAINT = '${REFUSED_CONSTRAINT}', SCHEMA = 'tollgate',
      MESSAGE = 'Tollgate: the rules of this session cannot be read in the database; DDL is refused',
      DETAIL = 'Tollgate refused ' || tg_tag || ' in the database server';
  END IF;
  FOR r IN SELECT * FROM pg_catalog.jsonb_array_elements(rules) LOOP
    IF tag = (r ->> 'k') OR pg_catalog.left(tag, pg_catalog.length(r ->> 'k') + 1) = (r ->> 'k') || ' ' THEN
      RAISE EXCEPTION USING ERRCODE = '42501', CONSTRAINT = '${REFUSED_CONSTRAINT}', SCHEMA = 'tollgate',
        MESSAGE = r ->> 'm',
        DETAIL = 'Tollgate refused ' || tg_tag || ' in the database server';
    END IF;
  END LOOP;
END`;

/** Whether this database has the current version of the trigger (cheap: two catalog lookups). */
async function installed(c: pg.Client): Promise<boolean> {
  const r = await c.query(
    `SELECT (SELECT pg_catalog.obj_description(p.oid, 'pg_proc') FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
              WHERE n.nspname = 'tollgate' AND p.proname = 'refuse_ddl') AS note,
            (SELECT evtenabled FROM pg_catalog.pg_event_trigger WHERE evtname = 'tollgate_refuse_ddl') AS enabled`);
  return r.rows[0]?.note === VERSION_NOTE && r.rows[0]?.enabled === 'A';
}

/**
 * Install (or upgrade) the event trigger in the database `c` is connected to, as the target's
 * admin (creating event triggers needs a superuser). Idempotent and safe against concurrent
 * sessions (an advisory lock). Returns whether anything was installed.
 */
export async function ensureEventTrigger(c: pg.Client): Promise<boolean> {
  if (await installed(c)) return false;
  await c.query('BEGIN');
  try {
    await c.query("SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('tollgate.refuse_ddl'))");
    if (await installed(c)) { await c.query('COMMIT'); return false; }
    await c.query('CREATE SCHEMA IF NOT EXISTS tollgate');
    await c.query('REVOKE ALL ON SCHEMA tollgate FROM PUBLIC');
    await c.query(`CREATE OR REPLACE FUNCTION tollgate.refuse_ddl() RETURNS event_trigger LANGUAGE plpgsql
      SET search_path = pg_catalog, pg_temp AS $tollgate$${FUNCTION_BODY}$tollgate$`);
    await c.query('REVOKE ALL ON FUNCTION tollgate.refuse_ddl() FROM PUBLIC');
    await c.query(`COMMENT ON FUNCTION tollgate.refuse_ddl() IS '${VERSION_NOTE}'`);
    await c.query('DROP EVENT TRIGGER IF EXISTS tollgate_refuse_ddl');
    // ENABLE ALWAYS: also when a session runs with session_replication_role = replica.
    await c.query('CREATE EVENT TRIGGER tollgate_refuse_ddl ON ddl_command_start EXECUTE FUNCTION tollgate.refuse_ddl()');
    await c.query('ALTER EVENT TRIGGER tollgate_refuse_ddl ENABLE ALWAYS');
    await c.query('COMMIT');
    return true;
  } catch (e) {
    await c.query('ROLLBACK').catch(() => undefined);
    throw e;
  }
}

/** A server ErrorResponse that is the trigger's refusal: the command tag and the rule's message. */
export function refusedInDatabase(fields: { constraint?: string; schema?: string; detail?: string; message: string }): { tag: string; message: string } | null {
  if (fields.constraint !== REFUSED_CONSTRAINT || fields.schema !== 'tollgate') return null;
  const m = /^Tollgate refused (.+) in the database server$/.exec(fields.detail ?? '');
  return { tag: m?.[1] ?? 'DDL', message: fields.message };
}
