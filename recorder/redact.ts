/**
 * Password literals in SQL statements are masked before a statement reaches the query log, the
 * live bus or the store: `ALTER ROLE x PASSWORD 'p'` (PostgreSQL), `IDENTIFIED BY 'p'` (MySQL /
 * MariaDB), `PASSWORD = N'p'` (SQL Server), `SET PASSWORD ... = PASSWORD('p')`.
 */

const MASK = "'***'";
// A quoted literal: '...' with '' or \' escapes, or "..." likewise, with an optional N/E/_charset prefix.
const LITERAL = String.raw`(?:[NnEe]|_[A-Za-z0-9]+)?(?:'(?:[^'\\]|''|\\.)*'|"(?:[^"\\]|""|\\.)*")`;

const PATTERNS: RegExp[] = [
  // PASSWORD 'x', PASSWORD = 'x', PASSWORD('x'), PASSWORD = N'x' (not the word inside a literal: 'password')
  new RegExp(String.raw`((?<!['"\w])PASSWORD(?:\s+|\s*=\s*|\s*\(\s*))${LITERAL}`, 'gi'),
  // IDENTIFIED BY 'x', IDENTIFIED WITH plugin BY 'x', IDENTIFIED BY PASSWORD 'hash', IDENTIFIED WITH plugin AS 'hash'
  new RegExp(String.raw`(\bIDENTIFIED\s+(?:WITH\s+\S+\s+)?(?:BY|AS)\s+(?:PASSWORD\s+)?)${LITERAL}`, 'gi'),
  // SQL Server: CREATE LOGIN ... WITH PASSWORD = 0x0200... HASHED
  /(\bPASSWORD\s*=\s*)0x[0-9a-f]+/gi,
  // PostgreSQL: ENCRYPTED PASSWORD handled above; also SCRAM/MD5 verifier strings anywhere.
  /(?<![A-Za-z0-9])(SCRAM-SHA-256\$)[^\s'"]+/g,
];

export function redactStatement(statement: string): string {
  let s = statement;
  for (const re of PATTERNS) s = s.replace(re, (_m, keep: string) => keep + (keep.endsWith('$') ? '***' : MASK));
  return s;
}
