/**
 * Shared pieces of the database wire-fidelity suite (`test/fidelity/<db>/`), for every database:
 *  - which cases run: a fast subset inside `npm test`, every case with `TOLLGATE_FIDELITY=full`
 *    (what `npm run test:fidelity` sets); `TOLLGATE_FIDELITY_CASES=a,b` narrows a run to named cases;
 *  - normalising an output for what legitimately differs per session (session account names,
 *    backend pids, OIDs of objects the case created, timings), by explicit, named rules;
 *  - a unified diff of the direct run against the run through the gateway;
 *  - the accepted-differences list: a difference is accepted only with a reason and only when
 *    every changed line matches what the entry says may change (anything else still fails);
 *  - the summary `N/N identical` (each accepted difference with its reason), as tap comments and,
 *    when `TOLLGATE_FIDELITY_REPORT` names a file, as JSON lines the `test:fidelity` runner prints.
 */
import { appendFileSync } from 'node:fs';
import { createTwoFilesPatch, diffLines } from 'diff';

export type FidelityMode = 'fast' | 'full';

/** `TOLLGATE_FIDELITY`: unset or "fast" → the fast subset; "full" → every case. Anything else is an error. */
export function fidelityMode(env: NodeJS.ProcessEnv = process.env): FidelityMode {
  const v = (env['TOLLGATE_FIDELITY'] ?? '').trim().toLowerCase();
  if (v === '' || v === 'fast') return 'fast';
  if (v === 'full') return 'full';
  throw new Error(`TOLLGATE_FIDELITY: expected "fast" or "full", got ${JSON.stringify(env['TOLLGATE_FIDELITY'])}`);
}

/**
 * The cases of this run, in the order of `all`. Every name in `fast` (and in
 * `TOLLGATE_FIDELITY_CASES`) must be a case: a typo fails loudly instead of shrinking the run.
 */
export function selectCases<T>(all: readonly T[], nameOf: (c: T) => string, fast: readonly string[], env: NodeJS.ProcessEnv = process.env): T[] {
  const names = new Set(all.map(nameOf));
  const unknown = (list: readonly string[], where: string) => {
    const bad = list.filter((n) => !names.has(n));
    if (bad.length) throw new Error(`${where}: no such case ${bad.join(', ')}`);
  };
  unknown(fast, 'fast subset');
  const only = (env['TOLLGATE_FIDELITY_CASES'] ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  if (only.length) {
    unknown(only, 'TOLLGATE_FIDELITY_CASES');
    return all.filter((c) => only.includes(nameOf(c)));
  }
  if (fidelityMode(env) === 'full') return [...all];
  const keep = new Set(fast);
  return all.filter((c) => keep.has(nameOf(c)));
}

// ---- normalisation ----

/**
 * One normalisation rule. `with` replaces each match; `renumber` instead replaces each distinct
 * match by `<label#n>`, n counting distinct values in order of first appearance, so two outputs
 * that mention the same objects in the same order normalise alike while a wrong reference still
 * shows. `why` says what legitimately differs (it is part of the suite's documentation).
 */
export interface Rule {
  pattern: RegExp;
  with?: string | ((match: string, ...groups: string[]) => string);
  renumber?: string;
  why: string;
}

export function normalise(text: string, rules: readonly Rule[]): string {
  let out = text;
  for (const r of rules) {
    const re = r.pattern.global ? r.pattern : new RegExp(r.pattern.source, r.pattern.flags + 'g');
    if (r.renumber !== undefined) {
      const seen = new Map<string, string>();
      const label = r.renumber;
      out = out.replace(re, (m: string) => {
        let v = seen.get(m);
        if (v === undefined) { v = `<${label}#${seen.size + 1}>`; seen.set(m, v); }
        return v;
      });
    } else if (typeof r.with === 'function') {
      const fn = r.with;
      out = out.replace(re, (m: string, ...rest: unknown[]) => fn(m, ...rest.filter((x): x is string => typeof x === 'string')));
    } else {
      out = out.replace(re, r.with ?? '');
    }
  }
  return out;
}

const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** A literal name (a session account, a database) replaced by a placeholder wherever it appears. */
export function nameRule(name: string, placeholder: string, why: string): Rule {
  if (!name) throw new Error('nameRule: empty name');
  return { pattern: new RegExp(escapeRe(name), 'g'), with: placeholder, why };
}

// ---- diff ----

/** A unified diff of direct against gateway ('' when identical). */
export function unifiedDiff(name: string, direct: string, gateway: string, context = 3): string {
  if (direct === gateway) return '';
  return createTwoFilesPatch(`${name} (direct)`, `${name} (through the gateway)`, direct, gateway, '', '', { context });
}

/** The lines only one side has. */
export function changedLines(direct: string, gateway: string): { removed: string[]; added: string[] } {
  const removed: string[] = [];
  const added: string[] = [];
  for (const part of diffLines(direct, gateway)) {
    if (!part.added && !part.removed) continue;
    const lines = part.value.replace(/\n$/, '').split('\n');
    (part.added ? added : removed).push(...lines);
  }
  return { removed, added };
}

// ---- verdicts and accepted differences ----

/**
 * A difference the gateway cannot remove. `lines` must match every changed line (on either
 * side); a change it does not match still fails the case. An entry whose case comes out
 * identical is reported as stale (and fails), so the list never outlives its reason.
 */
export interface AcceptedDifference {
  case: string;
  /** The run mode it applies to (e.g. 'psql', 'extended', 'text', 'ps-protocol'); all modes when absent. */
  mode?: string;
  reason: string;
  lines: RegExp;
}

export type Status = 'identical' | 'accepted' | 'different' | 'failed';

export interface Verdict {
  case: string;
  mode: string;
  status: Status;
  /** The unified diff when not identical. */
  diff?: string;
  /** The accepted difference's reason, or why the run failed. */
  reason?: string;
  /** Size of the compared (normalised) direct output, to show a case did something. */
  bytes: number;
  ms?: number;
}

function acceptedFor(accepted: readonly AcceptedDifference[], name: string, mode: string): AcceptedDifference | undefined {
  return accepted.find((a) => a.case === name && (a.mode === undefined || a.mode === mode));
}

/** Compare two normalised outputs of one case. */
export function judge(name: string, mode: string, direct: string, gateway: string, accepted: readonly AcceptedDifference[] = [], ms?: number): Verdict {
  const base = { case: name, mode, bytes: Buffer.byteLength(direct), ms };
  if (direct === gateway) return { ...base, status: 'identical' };
  const diff = unifiedDiff(`${name} [${mode}]`, direct, gateway);
  const a = acceptedFor(accepted, name, mode);
  if (a) {
    const { removed, added } = changedLines(direct, gateway);
    const re = new RegExp(a.lines.source, a.lines.flags.replace('g', ''));
    if ([...removed, ...added].every((l) => re.test(l))) return { ...base, status: 'accepted', diff, reason: a.reason };
  }
  return { ...base, status: 'different', diff };
}

/** A case whose run itself failed (harness error, timeout): never counted as identical. */
export function failed(name: string, mode: string, error: unknown, ms?: number): Verdict {
  return { case: name, mode, status: 'failed', reason: error instanceof Error ? error.message : String(error), bytes: 0, ms };
}

export interface Summary {
  db: string;
  mode: string;
  total: number;
  identical: number;
  accepted: { case: string; reason: string }[];
  different: string[];
  failed: { case: string; reason: string }[];
  /** Accepted differences (for this mode) whose case ran and came out identical. */
  stale: string[];
  run: FidelityMode;
}

export function summarise(db: string, mode: string, verdicts: readonly Verdict[], accepted: readonly AcceptedDifference[] = []): Summary {
  const mine = verdicts.filter((v) => v.mode === mode);
  const ran = new Map(mine.map((v) => [v.case, v]));
  return {
    db, mode, total: mine.length, run: fidelityMode(),
    identical: mine.filter((v) => v.status === 'identical').length,
    accepted: mine.filter((v) => v.status === 'accepted').map((v) => ({ case: v.case, reason: v.reason ?? '' })),
    different: mine.filter((v) => v.status === 'different').map((v) => v.case),
    failed: mine.filter((v) => v.status === 'failed').map((v) => ({ case: v.case, reason: v.reason ?? '' })),
    stale: accepted.filter((a) => (a.mode === undefined || a.mode === mode) && ran.get(a.case)?.status === 'identical').map((a) => a.case),
  };
}

/** Human-readable lines: `postgres psql: 61/61 identical`, then each accepted difference with its reason. */
export function summaryLines(s: Summary): string[] {
  const ok = s.identical + s.accepted.length;
  const head = `${s.db} ${s.mode}: ${s.identical}/${s.total} identical` + (s.accepted.length ? `, ${s.accepted.length} accepted difference(s) (${ok}/${s.total} pass)` : '') + ` [${s.run}]`;
  const lines = [head];
  for (const a of s.accepted) lines.push(`  accepted: ${a.case}: ${a.reason}`);
  for (const d of s.different) lines.push(`  DIFFERENT: ${d}`);
  for (const f of s.failed) lines.push(`  FAILED: ${f.case}: ${f.reason}`);
  for (const st of s.stale) lines.push(`  STALE accepted difference (now identical): ${st}`);
  return lines;
}

export function passed(s: Summary): boolean {
  return s.total > 0 && s.different.length === 0 && s.failed.length === 0 && s.stale.length === 0;
}

interface Commenter { comment(...args: unknown[]): void }

/** Print the summary as tap comments and append it to TOLLGATE_FIDELITY_REPORT (JSON lines) when set. */
export function reportSummary(t: Commenter, s: Summary, env: NodeJS.ProcessEnv = process.env): void {
  for (const l of summaryLines(s)) t.comment(l);
  const file = env['TOLLGATE_FIDELITY_REPORT'];
  if (file) appendFileSync(file, JSON.stringify(s) + '\n');
}
