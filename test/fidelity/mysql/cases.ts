/**
 * Which mysql-test cases the suite runs, in which modes, which run in `npm test`, and the
 * differences accepted with their reason.
 */
import type { AcceptedDifference } from '../common.js';
import type { TestMode } from './harness.js';

export interface MysqltestCase { name: string; modes: TestMode[] }

const BOTH: TestMode[] = ['text', 'ps-protocol'];
const ALL: TestMode[] = ['text', 'ps-protocol', 'cursor-protocol'];

export const MYSQLTEST_CASES: MysqltestCase[] = [
  // also with cursors (--cursor-protocol)
  { name: 'sp-fib', modes: ALL },
  { name: 'sp-cursor', modes: ALL },
  { name: 'sp-row', modes: ALL },
  { name: 'sp-inout', modes: ALL },
  { name: 'signal', modes: ALL },
  { name: 'auto_increment', modes: ALL },
  { name: 'type_json', modes: ALL },
  { name: 'type_newdecimal', modes: ALL },
  { name: 'ps_11bugs', modes: ALL },
  { name: 'ps_2myisam', modes: ALL },
  { name: 'ps_10nestset', modes: ALL },
  { name: 'fetch_first', modes: ALL },
  { name: 'select_found', modes: ALL },
  { name: 'table_value_constr', modes: ALL },
  { name: 'func_if', modes: ALL },
  { name: 'win_rank', modes: ALL },
  { name: 'type_uint', modes: ALL },
  { name: 'json_equals', modes: ALL },
  // text and prepared statements
  { name: 'signal_sqlmode', modes: BOTH },
  { name: 'sp-vars', modes: BOTH },
  { name: 'sp-dynamic', modes: BOTH },
  { name: 'sp-big', modes: BOTH },
  { name: 'sp-for-loop', modes: BOTH },
  { name: 'sp-group', modes: BOTH },
  { name: 'sp-condition-handler', modes: BOTH },
  { name: 'sp-expr', modes: BOTH },
  { name: 'sp-memory-leak', modes: BOTH },
  { name: 'ps_4heap', modes: BOTH },
  { name: 'ps_5merge', modes: BOTH },
  { name: 'ps_innodb', modes: BOTH },
  { name: 'json_normalize', modes: BOTH },
  { name: 'type_num', modes: BOTH },
  { name: 'type_bit', modes: BOTH },
  { name: 'type_set', modes: BOTH },
  { name: 'type_binary', modes: BOTH },
  { name: 'type_char', modes: BOTH },
  { name: 'type_nchar', modes: BOTH },
  { name: 'type_varbinary', modes: BOTH },
  { name: 'type_interval', modes: BOTH },
  { name: 'type_row', modes: BOTH },
  { name: 'type_temporal_innodb', modes: BOTH },
  { name: 'type_bool', modes: BOTH },
  { name: 'func_extract', modes: BOTH },
  { name: 'func_regexp', modes: BOTH },
  { name: 'func_test', modes: BOTH },
  { name: 'func_bit', modes: BOTH },
  { name: 'func_op', modes: BOTH },
  { name: 'func_replace', modes: BOTH },
  { name: 'func_sapdb', modes: BOTH },
  { name: 'case', modes: BOTH },
  { name: 'xml', modes: BOTH },
  { name: 'olap', modes: BOTH },
  { name: 'intersect', modes: BOTH },
  { name: 'except', modes: BOTH },
  { name: 'cte_cycle', modes: BOTH },
  { name: 'win_lead_lag', modes: BOTH },
  { name: 'win_percentile', modes: BOTH },
  { name: 'explain_json', modes: BOTH },
  { name: 'join_nested', modes: BOTH },
  { name: 'subselect_exists2in', modes: BOTH },
  { name: 'having_cond_pushdown', modes: BOTH },
  { name: 'foreign_key', modes: BOTH },
  { name: 'insert_innodb', modes: BOTH },
  { name: 'delete_returning', modes: BOTH },
  { name: 'replace_returning', modes: BOTH },
  { name: 'insert_returning_datatypes', modes: BOTH },
  { name: 'multi_update_innodb', modes: BOTH },
  { name: 'truncate', modes: BOTH },
  { name: 'tablelock', modes: BOTH },
  { name: 'rollback', modes: BOTH },
  { name: 'alter_table_trans', modes: BOTH },
  { name: 'partition_list', modes: BOTH },
  { name: 'fulltext_order_by', modes: BOTH },
  { name: 'comments', modes: BOTH },
  { name: 'ansi', modes: BOTH },
  { name: 'odbc', modes: BOTH },
  { name: 'statement-expr', modes: BOTH },
  { name: 'binary', modes: BOTH },
  { name: 'endspace', modes: BOTH },
  { name: 'round', modes: BOTH },
  { name: 'count_distinct', modes: BOTH },
  { name: 'sum_distinct', modes: BOTH },
  { name: 'view_alias', modes: BOTH },
  { name: 'create_drop_view', modes: BOTH },
  { name: 'trigger-33083', modes: BOTH },
  { name: 'information_schema2', modes: BOTH },
  { name: 'bulk_replace', modes: BOTH },
  { name: 'str_to_datetime_457', modes: BOTH },
];

/** What `npm test` runs (about half a minute): the four workloads, SIGNAL, cursors, JSON, 64-bit auto-increment, both drivers. */
export const FAST: string[] = [
  'sp-fib', 'signal', 'type_json', 'auto_increment', 'ps_11bugs',
  'insert-id-above-2^53', 'cursor-loop-procedure', 'signal-resignal', 'json-extended-metadata', 'change-user', 'multi-statements', 'mariadb-connector',
];

export const ACCEPTED: AcceptedDifference[] = [
  {
    case: 'change-user',
    mode: 'mysql2',
    reason: 'by design: the gateway refuses COM_CHANGE_USER (the session user is the one minted for the grant; switching accounts on a connection would bypass the grant) with ERR 1047 and keeps the connection as it was',
    lines: /^"changed"$|^\{"error":1047,"sqlState":"08S01","message":"Tollgate: COM_CHANGE_USER is not supported through the gateway; connect again with a new connection secret"\}$/,
  },
];
