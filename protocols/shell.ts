/**
 * POSIX shell quoting, for the client command lines the gateway prints and the admin scripts it
 * runs on targets. One rule everywhere: a value made only of characters no shell treats specially
 * stays as it is (readable commands); anything else is single-quoted, with ' written as '\''.
 */

const PLAIN = /^[A-Za-z0-9_.:@%+=,/-]+$/;

/** The value as one shell word. The empty string is ''. */
export function shellQuote(v: string): string {
  return PLAIN.test(v) ? v : `'${v.replace(/'/g, `'\\''`)}'`;
}
