/**
 * Which mysql-test cases the suite runs, in which modes, which run in `npm test`, and the
 * differences accepted with their reason.
 */
import type { AcceptedDifference } from './common.js';
import type { TestMode } from './harness.js';

export interface MysqltestCase { name: string; modes: TestMode[] }

const BOTH: TestMode[] = ['text', 'ps-protocol'];
const ALL: TestMode[] = ['text', 'ps-protocol', 'cursor-protocol'];

export const MYSQLTEST_CASES: MysqltestCase[] = [
  { name: 'sp-fib', modes: ALL },
];

export const FAST: string[] = ['sp-fib', 'insert-id-above-2^53', 'cursor-loop-procedure', 'signal-resignal', 'json-extended-metadata', 'change-user'];

export const ACCEPTED: AcceptedDifference[] = [
  {
    case: 'change-user',
    mode: 'mysql2',
    reason: 'by design: the gateway refuses COM_CHANGE_USER (the session user is the one minted for the grant; switching accounts on a connection would bypass the grant) with ERR 1047 and keeps the connection as it was',
    lines: /^"changed"$|^\{"error":1047,"sqlState":"08S01","message":"Tollgate: COM_CHANGE_USER is not supported through the gateway; connect again with a new connection secret"\}$/,
  },
];
