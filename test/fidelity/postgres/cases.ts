/**
 * Which of PostgreSQL 15.18's regression files (src/test/regress/sql) the fidelity suite runs, the
 * fast subset `npm test` runs, and why the others are left out. Every file in sql/ except
 * test_setup.sql (which fills the template database) is a case.
 */
import type { AcceptedDifference } from '../common.js';

export const CASES = [
  'advisory_lock', 'aggregates', 'arrays', 'async', 'bit', 'bitmapops', 'boolean', 'box', 'brin', 'case', 'char',
  'circle', 'collate', 'combocid', 'comments', 'compression', 'copy2', 'copydml', 'copyselect', 'create_misc',
  'create_procedure', 'create_table', 'create_table_like', 'date', 'dbsize', 'delete', 'domain', 'drop_operator',
  'enum', 'errors', 'functional_deps', 'gist', 'hash_func', 'identity', 'index_including', 'inet', 'infinite_recurse',
  'insert_conflict', 'int2', 'int4', 'int8', 'interval', 'json', 'json_encoding', 'jsonb', 'jsonb_jsonpath',
  'jsonpath', 'line', 'lseg', 'macaddr', 'macaddr8', 'money', 'mvcc', 'name', 'namespace', 'numeric', 'numerology', 'oid',
  'partition_info', 'path', 'pg_lsn', 'plancache', 'plpgsql', 'point', 'polygon', 'polymorphism', 'portals',
  'portals_p2', 'prepare', 'psql_crosstab', 'rangetypes', 'regex', 'reloptions', 'replica_identity', 'returning',
  'rules', 'select_distinct', 'select_distinct_on', 'select_having', 'select_implicit', 'strings', 'tablesample',
  'text', 'tid', 'tidscan', 'time', 'timetz', 'transactions', 'triggers', 'truncate', 'tsdicts', 'tsearch', 'tsrf',
  'tstypes', 'txid', 'type_sanity', 'typed_table', 'unicode', 'uuid', 'varchar', 'with', 'xid', 'xml', 'xmlmap',
] as const;

/**
 * The subset inside `npm test`: small cases that still cover COPY FROM STDIN, cursors and portals,
 * PREPARE/EXECUTE, savepoints and aborted transactions, errors with positions, LISTEN/NOTIFY.
 */
export const FAST = ['boolean', 'copy2', 'portals', 'transactions', 'errors', 'prepare', 'async'];

/**
 * Regression files not in the sample, and why. (Files that would run but are left out only to keep
 * the full run short are listed as such.)
 */
export const SKIPPED: Record<string, string> = {
  test_setup: 'fills the template database every run starts from (run once, as the group role)',
  tablespace: 'creates tablespaces (superuser)',
  create_role: 'creates roles (CREATEROLE)', roleattributes: 'creates roles with attributes (superuser)',
  password: 'creates roles and sets password_encryption', privileges: 'creates roles, SET SESSION AUTHORIZATION, reconnects',
  rowsecurity: 'creates roles, SET SESSION AUTHORIZATION', publication: 'creates roles and publications (superuser)',
  subscription: 'creates roles and subscriptions (superuser)', event_trigger: 'event triggers need a superuser',
  foreign_data: 'creates roles and foreign-data wrappers (superuser), reconnects',
  alter_generic: 'creates roles; C functions from regress.so', alter_operator: 'creates roles',
  alter_table: 'creates roles, SET ROLE', cluster: 'creates roles, SET ROLE', constraints: 'creates roles, SET ROLE',
  create_operator: 'creates roles, SET ROLE', create_schema: 'creates roles, SET ROLE',
  dependency: 'creates roles, REASSIGN OWNED', drop_if_exists: 'creates roles', equivclass: 'creates roles, SET ROLE',
  generated: 'creates roles, SET ROLE', guc: 'creates roles; superuser-only settings', insert: 'creates roles, SET ROLE',
  lock: 'creates roles; C functions from regress.so', matview: 'creates roles, SET ROLE', merge: 'creates roles, SET ROLE',
  multirangetypes: 'creates roles, SET ROLE', object_address: 'creates roles; superuser-only objects',
  select_into: 'creates roles, SET ROLE', select_parallel: 'creates roles, SET ROLE', select_views: 'creates roles, SET ROLE',
  updatable_views: 'creates roles, SET ROLE', vacuum: 'creates roles, SET ROLE', security_label: 'creates roles; needs a label provider',
  maintain_every: 'creates roles', regproc: 'creates roles', sequence: 'creates roles, SET ROLE', update: 'creates roles, SET ROLE',
  inherit: 'creates roles, SET ROLE', create_index: 'creates roles; reads server files and expects the superuser', create_function_sql: 'creates roles, SET ROLE',
  create_aggregate: 'part needs superuser (base types, internal language)',
  database: 'ALTER DATABASE and tablespaces (superuser)', create_am: 'access methods need a superuser',
  create_cast: 'casts WITHOUT FUNCTION need a superuser', create_type: 'base types need a superuser; regress.so',
  create_function_c: 'C functions from regress.so (not in Debian\'s postgresql-15)',
  conversion: 'C conversion functions from regress.so; superuser', encoding: 'C functions from regress.so',
  indirect_toast: 'C functions from regress.so', misc: 'C functions from regress.so; writes server files',
  misc_functions: 'C functions from regress.so; superuser-only functions', compression_pglz: 'C functions from regress.so',
  copy: 'writes files on the server (pg_write_server_files)', largeobject: 'server-side lo_import/lo_export of files; creates roles',
  prepared_xacts: 'needs max_prepared_transactions > 0, reconnects', temp: 'reconnects (a new session is a new minted role)',
  stats: 'cumulative statistics differ between any two runs; reconnects', stats_ext: 'creates roles, SET ROLE',
  random: 'random() output (left out of pg_regress\'s own pass/fail as well)',
  sanity_check: 'VACUUM of catalogs the session role may not vacuum; depends on the whole schedule',
  reindex_catalog: 'REINDEX of shared catalogs (superuser)', init_privs: 'pg_init_privs of extensions (superuser)',
  oidjoins: 'catalog checks that assume the whole schedule ran', opr_sanity: 'uses binary_coercible() from regress.so',
  amutils: 'expects indexes of earlier tests in the schedule',
  'collate.icu.utf8': 'needs an ICU UTF8 database', 'collate.linux.utf8': 'needs a UTF8 database with glibc locales',
  euc_kr: 'needs an EUC_KR database', psql: 'creates roles; tablespaces',
  btree_index: 'reads server files and expects indexes of earlier tests', hash_index: 'reads server files and expects the schedule\'s tables',
  create_view: 'C functions from regress.so; reads server files',
  // They would run as the session role; left out only to keep the full run short.
  brin_bloom: 'not sampled (time)', brin_multi: 'not sampled (time)', create_index_spgist: 'not sampled (time)',
  indexing: 'not sampled (time)', partition_join: 'not sampled (time)', partition_aggregate: 'not sampled (time)',
  partition_prune: 'not sampled (time)', tuplesort: 'not sampled (time)', tidrangescan: 'not sampled (time)',
  write_parallel: 'not sampled (time)', vacuum_parallel: 'not sampled (time)', spgist: 'not sampled (time)',
  index_including_gist: 'not sampled (time)', jsonpath_encoding: 'not sampled (time)', gin: 'not sampled (time)',
  foreign_key: 'not sampled (time)', join: 'not sampled (time)', join_hash: 'not sampled (time)',
  subselect: 'not sampled (time)', union: 'not sampled (time)', window: 'not sampled (time)', groupingsets: 'not sampled (time)',
  memoize: 'not sampled (time)', incremental_sort: 'not sampled (time)', hash_part: 'not sampled (time)',
  fast_default: 'not sampled (time)', explain: 'not sampled (time)', expressions: 'not sampled (time)',
  float4: 'not sampled (time)', float8: 'not sampled (time)', geometry: 'not sampled (time)', horology: 'not sampled (time)',
  timestamp: 'not sampled (time)', timestamptz: 'not sampled (time)', numeric_big: 'not sampled (time)',
  limit: 'not sampled (time)', rangefuncs: 'not sampled (time)', rowtypes: 'not sampled (time)', select: 'not sampled (time)',
  sysviews: 'not sampled (time)', misc_sanity: 'not sampled (time)',
};

/**
 * Differences the gateway cannot remove, each with its reason. Empty: every case comes out identical.
 * An entry must cover every changed line of its case (anything else still fails), and an entry
 * whose case comes out identical fails as stale.
 */
export const ACCEPTED: AcceptedDifference[] = [];
