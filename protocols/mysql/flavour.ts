/**
 * What the gateway's greeting tells a client about "the server": the greeting goes out before the
 * client names its target, yet drivers choose behaviour from it (MariaDB or MySQL dialect of the
 * binary protocol, pipelining, MariaDB's extended capabilities). So the gateway learns each MySQL
 * target's own greeting - with the admin credential at listener start and whenever a connection
 * finds a target not known yet (ensure), then at every upstream login - and greets with what all
 * known targets have in common:
 *   - every known target is MariaDB: its version ("5.5.5-<lowest version>-MariaDB...-Tollgate") and
 *     the extended capabilities all of them have (of those the gateway relays);
 *   - every known target is MySQL: the lowest MySQL version, no extended capabilities;
 *   - none known, or both kinds: "8.0.0-Tollgate", no extended capabilities.
 * Format-changing flags (DEPRECATE_EOF, SESSION_TRACK) are offered only when every known target has them.
 */
import { CAP, FORMAT_CAPS, GATEWAY_CAPS, GATEWAY_EXT_CAPS, type Greeting } from './packets.js';

export const DEFAULT_VERSION = '8.0.0-Tollgate';

export interface ServerFacts { version: string; caps: number; extCaps: number }

export interface GreetingOffer {
  version: string;
  /** Capability flags to offer (TLS is added or removed by the handshake). */
  caps: number;
  extCaps: number;
}

const isMariadb = (v: string) => /mariadb/i.test(v);

/** "5.5.5-10.11.19-MariaDB-0+deb12u1" -> [10, 11, 19]; "8.0.36" -> [8, 0, 36]. */
export function versionNumbers(v: string): number[] {
  const m = /^(?:5\.5\.5-)?(\d+)\.(\d+)\.(\d+)/.exec(v);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : [0, 0, 0];
}

function lower(a: string, b: string): string {
  const x = versionNumbers(a);
  const y = versionNumbers(b);
  for (let i = 0; i < 3; i++) if (x[i] !== y[i]) return x[i]! < y[i]! ? a : b;
  return a;
}

export class Flavours {
  private facts = new Map<string, ServerFacts>();
  private attempts = new Map<string, { at: number; done: Promise<void> }>();

  /**
   * Learn each of these targets not known yet with learn() (which calls this.learn on the
   * greeting), at most once per retryMs per target; resolves when the attempts under way ended.
   * A target configured later is learnt by the first connection after it appears; one that cannot
   * be reached costs a connection the wait at most once per retryMs.
   */
  async ensure(targets: readonly string[], learn: (target: string) => Promise<void>, now: number, retryMs = 30_000): Promise<void> {
    const waits: Promise<void>[] = [];
    for (const t of targets) {
      if (this.facts.has(t)) continue;
      let a = this.attempts.get(t);
      if (!a || now - a.at >= retryMs) {
        a = { at: now, done: learn(t).catch(() => {}) };
        this.attempts.set(t, a);
      }
      waits.push(a.done);
    }
    await Promise.all(waits);
  }

  learn(target: string, g: Pick<Greeting, 'serverVersion' | 'caps' | 'extCaps'>): void {
    this.facts.set(target, { version: g.serverVersion.slice(0, 100), caps: g.caps, extCaps: g.extCaps });
  }

  known(target: string): ServerFacts | undefined {
    return this.facts.get(target);
  }

  /** The greeting for a listener in front of these targets. */
  offer(targets: readonly string[]): GreetingOffer {
    const known = targets.map((t) => this.facts.get(t)).filter((f): f is ServerFacts => !!f);
    let caps = GATEWAY_CAPS;
    for (const f of known) caps &= ~(FORMAT_CAPS & ~f.caps);
    caps |= CAP.PROTOCOL_41;
    if (!known.length) return { version: DEFAULT_VERSION, caps, extCaps: 0 };
    const maria = known.filter((f) => isMariadb(f.version));
    if (maria.length === known.length) {
      let ext = GATEWAY_EXT_CAPS;
      for (const f of maria) ext &= f.extCaps;
      const v = maria.map((f) => f.version).reduce(lower);
      return { version: `${v.startsWith('5.5.5-') ? '' : '5.5.5-'}${v}-Tollgate`, caps, extCaps: ext };
    }
    if (!maria.length) return { version: `${known.map((f) => f.version).reduce(lower)}-Tollgate`, caps, extCaps: 0 };
    return { version: DEFAULT_VERSION, caps, extCaps: 0 };
  }
}
