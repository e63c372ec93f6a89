import { inspect } from 'node:util';

/**
 * A value that must never reach a log, a recording or an error message.
 * toString/toJSON/inspect all print "<secret>"; call reveal() where the value is really needed.
 */
export class Secret {
  readonly #value: string;
  constructor(value: string) { this.#value = value; }
  reveal(): string { return this.#value; }
  toString(): string { return '<secret>'; }
  toJSON(): string { return '<secret>'; }
  [inspect.custom](): string { return '<secret>'; }
  equals(other: string | Secret): boolean {
    const o = typeof other === 'string' ? other : other.reveal();
    if (o.length !== this.#value.length) return false;
    let diff = 0;
    for (let i = 0; i < o.length; i++) diff |= o.charCodeAt(i) ^ this.#value.charCodeAt(i);
    return diff === 0;
  }
}
