/**
 * Values that reach an LDAP distinguished name or search filter are escaped here, whatever they
 * are: attribute values in a DN by RFC 4514 (section 2.4), assertion values in a filter by RFC 4515
 * (section 3, through ldapts' `Filter.escape`). Identity names come from the IdP and are never
 * trusted to be free of `,`, `=`, `*`, `(`, `)`, `\` or NUL.
 */
import { Filter } from 'ldapts';

const hex = (c: string) => [...Buffer.from(c, 'utf8')].map((b) => `\\${b.toString(16).padStart(2, '0')}`).join('');

/**
 * One attribute value of an RDN, escaped per RFC 4514 2.4: `"`, `+`, `,`, `;`, `<`, `>`, `\` (and `=`)
 * with a backslash; a leading `#` or space and a trailing space with a backslash; NUL and other
 * control characters as hex pairs. `dnValue('a,b')` is `a\,b`.
 */
export function dnValue(value: string): string {
  let out = '';
  const chars = [...value];
  chars.forEach((c, i) => {
    const code = c.codePointAt(0)!;
    if (code < 0x20 || code === 0x7f) out += hex(c);
    else if ('"+,;<>\\='.includes(c)) out += `\\${c}`;
    else if ((i === 0 && (c === ' ' || c === '#')) || (i === chars.length - 1 && c === ' ')) out += `\\${c}`;
    else out += c;
  });
  return out;
}

/** `attr=value` with the value escaped (attribute names are ours: letters, digits, `-`). */
export function rdn(attr: string, value: string): string {
  if (!/^[A-Za-z][A-Za-z0-9-]*$/.test(attr)) throw new Error(`not an attribute name: ${attr}`);
  return `${attr}=${dnValue(value)}`;
}

/** An assertion value for a search filter, escaped per RFC 4515: `*` `(` `)` `\` NUL as `\2a` `\28` `\29` `\5c` `\00`. */
export function filterValue(value: string): string {
  return Filter.escape(value);
}

/** `(attr=value)` with the value escaped. */
export function eq(attr: string, value: string): string {
  if (!/^[A-Za-z][A-Za-z0-9-]*$/.test(attr)) throw new Error(`not an attribute name: ${attr}`);
  return `(${attr}=${filterValue(value)})`;
}

/**
 * Whether a configured DN is well formed as RFC 4514 reads it (attribute=value pairs separated by
 * unescaped commas, escapes complete): what the gateway writes into a group or uses as a base.
 */
export function isDn(dn: string): boolean {
  if (!dn || dn.length > 2048 || /[\0\n\r]/.test(dn)) return false;
  return splitDn(dn) !== null;
}

/** The RDNs of a DN (raw, still escaped), or null when it does not parse. */
export function splitDn(dn: string): string[] | null {
  const parts: string[] = [];
  let cur = '';
  for (let i = 0; i < dn.length; i++) {
    const c = dn[i]!;
    if (c === '\\') {
      const next = dn[i + 1];
      if (next === undefined) return null;
      if (/[0-9a-fA-F]/.test(next)) {
        if (!/[0-9a-fA-F]/.test(dn[i + 2] ?? '')) return null;
        cur += dn.slice(i, i + 3);
        i += 2;
      } else {
        cur += c + next;
        i += 1;
      }
      continue;
    }
    if (c === ',') { parts.push(cur); cur = ''; continue; }
    cur += c;
  }
  parts.push(cur);
  for (const p of parts) if (!/^\s*[A-Za-z][A-Za-z0-9-]*\s*=/.test(p) && !/^\s*\d+(\.\d+)+\s*=/.test(p)) return null;
  return parts.map((p) => p.trim());
}

/** DNs compare case-insensitively in attribute names and (for the directories we talk to) values. */
export function sameDn(a: string, b: string): boolean {
  const x = splitDn(a);
  const y = splitDn(b);
  if (!x || !y || x.length !== y.length) return false;
  return x.every((r, i) => r.replace(/\s*=\s*/, '=').toLowerCase() === y[i]!.replace(/\s*=\s*/, '=').toLowerCase());
}

/** Whether `dn` is directly below `parent` (one more RDN). */
export function isChildOf(dn: string, parent: string): boolean {
  const x = splitDn(dn);
  const p = splitDn(parent);
  if (!x || !p || x.length !== p.length + 1) return false;
  return sameDn(x.slice(1).join(','), p.join(','));
}
