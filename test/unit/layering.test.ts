/**
 * Dependencies point down (DESIGN.md, "Layout", the "may import" column): every relative import of
 * every .ts file outside test/ is checked against the folder rules below, and neither the folders
 * nor the files may import each other in a cycle. Today's remaining exceptions are listed with a
 * reason; an exception nothing needs any more fails the test too, so the list only shrinks.
 */
import t from 'tap';
import ts from 'typescript';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, posix } from 'node:path';

const root = join(import.meta.dirname, '..', '..');
const SOURCES = ['proxy', 'protocols', 'policies', 'auth', 'recorder', 'bench'];

type Graph = Map<string, string[]>;

/** What one file is part of, for the rules: a folder, one protocol's folder, or one of two special files. */
export function unitOf(file: string): string {
  // The store interfaces: importable by every folder (they import nothing).
  if (file === 'proxy/store/types.ts') return 'store interfaces';
  // The registry imports every protocol module; the modules import protocols/types.ts.
  if (file === 'protocols/index.ts') return 'protocol registry';
  const parts = file.split('/');
  if (parts[0] === 'protocols' && parts.length > 2) return `protocols/${parts[1]}`;
  return parts[0]!;
}

const PROTOCOL_DEPS = ['protocols', 'auth', 'recorder', 'policies', 'store interfaces'];

/** May import, per unit (besides itself). '*' is anything outside test/. */
function mayImport(from: string, to: string): boolean {
  if (from === to) return true;
  if (to === 'test') return false;
  if (from === 'proxy') return true;
  if (from === 'protocol registry') return to === 'protocols' || to.startsWith('protocols/');
  // A protocol module (and the shared protocol files): auth, recorder, policies types, the store
  // interfaces, protocols/types.ts and its neighbours; never another protocol's internals, never proxy.
  if (from === 'protocols' || from.startsWith('protocols/')) return PROTOCOL_DEPS.includes(to);
  // recorder: nothing protocol-specific; auth: the store interfaces only; policies: pure logic and the store interfaces.
  if (from === 'recorder' || from === 'auth' || from === 'policies') return to === 'store interfaces';
  // bench: the CLI and the public API only (it spawns proxy/bin/tollgate.js and speaks HTTP).
  if (from === 'bench') return false;
  return false;
}

interface Exception { from: string; to: string; why: string }

/** Forbidden edges that still exist, by importing unit and imported file. Shrink this list; never grow it. */
const EXCEPTIONS: Exception[] = [
  { from: 'auth', to: 'policies/clock.ts', why: 'the injected Clock lives in policies/; it imports nothing (moving it touches every folder)' },
  { from: 'recorder', to: 'policies/clock.ts', why: 'the injected Clock lives in policies/; it imports nothing' },
  { from: 'bench', to: 'protocols/net.ts', why: 'freePort: a stateless helper the bench needs for the anchors it starts (PgBouncer, nginx, upstream apps)' },
  { from: 'bench', to: 'protocols/vnc/client-messages.ts', why: 'no native VNC client measures updates per second: the bench\'s RFB client uses the pure RFB codec' },
  { from: 'bench', to: 'protocols/vnc/server-messages.ts', why: 'as above (the server message parser, rewritten in another branch now)' },
  { from: 'bench', to: 'protocols/vnc/pixel.ts', why: 'as above (the pixel format type)' },
  { from: 'bench', to: 'test/vnc/client.ts', why: 'the RFB login (VeNCrypt X509Plain and classic auth) lives with the VNC tests, which another branch is rewriting; it belongs beside the codec' },
];

function sourceFiles(): string[] {
  const out: string[] = [];
  for (const top of SOURCES) {
    for (const e of readdirSync(join(root, top), { recursive: true, withFileTypes: true })) {
      if (!e.isFile() || !e.name.endsWith('.ts')) continue;
      out.push(posix.join(posix.relative(root.split('\\').join('/'), e.parentPath.split('\\').join('/')), e.name));
    }
  }
  return out.sort();
}

/** Relative imports of a file (static, type-only, re-exports, dynamic import() and import types), as repository paths. */
export function importsOf(file: string, text: string): string[] {
  const seen = new Set<string>();
  for (const i of ts.preProcessFile(text, true, true).importedFiles) {
    if (!i.fileName.startsWith('.')) continue;
    seen.add(posix.normalize(posix.join(posix.dirname(file), i.fileName)).replace(/\.js$/, '.ts'));
  }
  return [...seen];
}

export function forbiddenEdges(graph: Graph, exceptions: Exception[]): { edges: string[]; used: Set<Exception> } {
  const edges: string[] = [];
  const used = new Set<Exception>();
  for (const [file, deps] of graph) {
    const from = unitOf(file);
    for (const dep of deps) {
      const to = unitOf(dep);
      if (mayImport(from, to)) continue;
      const ex = exceptions.find((x) => x.from === from && x.to === dep);
      if (ex) { used.add(ex); continue; }
      edges.push(`${file} -> ${dep} (${from} may not import ${to})`);
    }
  }
  return { edges, used };
}

/** Strongly connected components with more than one member (Tarjan). */
export function cycles(graph: Graph): string[][] {
  let next = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const out: string[][] = [];
  const visit = (v: string) => {
    index.set(v, next); low.set(v, next); next++;
    stack.push(v); onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!index.has(w)) { visit(w); low.set(v, Math.min(low.get(v)!, low.get(w)!)); } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) !== index.get(v)) return;
    const c: string[] = [];
    let w: string;
    do { w = stack.pop()!; onStack.delete(w); c.push(w); } while (w !== v);
    if (c.length > 1) out.push(c.sort());
  };
  for (const v of graph.keys()) if (!index.has(v)) visit(v);
  return out;
}

/** The unit-to-unit graph of a file graph, without the listed exceptions (they are known, and each says why). */
function unitGraph(graph: Graph, exceptions: Exception[]): Graph {
  const g = new Map<string, Set<string>>();
  for (const [file, deps] of graph) {
    const from = unitOf(file);
    const s = g.get(from) ?? g.set(from, new Set()).get(from)!;
    for (const d of deps) if (unitOf(d) !== from && !exceptions.some((x) => x.from === from && x.to === d)) s.add(unitOf(d));
  }
  return new Map([...g].map(([k, v]) => [k, [...v]]));
}

function tree(): Graph {
  return new Map(sourceFiles().map((f) => [f, importsOf(f, readFileSync(join(root, f), 'utf8'))]));
}

t.test('the checker itself: it sees every kind of import, a forbidden edge and a cycle', async (t) => {
  const src = [
    "import { a } from '../proxy/config.js';",
    "import type { B } from './rules.js';",
    "export { c } from '../protocols/types.js';",
    "const d = await import('../auth/oidc.js');",
    "let e: import('../recorder/types.js').X;",
    "import { z } from 'zod';",
  ].join('\n');
  t.same(importsOf('policies/engine.ts', src).sort(), ['auth/oidc.ts', 'policies/rules.ts', 'protocols/types.ts', 'proxy/config.ts', 'recorder/types.ts']);
  const g: Graph = new Map([
    ['policies/engine.ts', ['proxy/config.ts', 'proxy/store/types.ts', 'policies/rules.ts']],
    ['protocols/ssh/a.ts', ['protocols/vnc/b.ts', 'protocols/types.ts', 'auth/secret.ts']],
    ['auth/keys.ts', ['policies/clock.ts']],
  ]);
  const ex = { from: 'auth', to: 'policies/clock.ts', why: 'test' };
  const r = forbiddenEdges(g, [ex]);
  t.same(r.edges, [
    'policies/engine.ts -> proxy/config.ts (policies may not import proxy)',
    'protocols/ssh/a.ts -> protocols/vnc/b.ts (protocols/ssh may not import protocols/vnc)',
  ]);
  t.ok(r.used.has(ex), 'a listed exception is used, not reported');
  t.same(cycles(new Map([['a', ['b']], ['b', ['c']], ['c', ['a']], ['d', ['a']]])), [['a', 'b', 'c']]);
  t.same(cycles(new Map([['a', ['b']], ['b', []]])), []);
});

t.test('no folder imports what DESIGN.md says it may not (beyond the listed exceptions)', async (t) => {
  const g = tree();
  t.ok(g.size > 150, `read ${g.size} source files`);
  const { edges, used } = forbiddenEdges(g, EXCEPTIONS);
  t.same(edges, [], 'no forbidden import');
  const stale = EXCEPTIONS.filter((x) => !used.has(x)).map((x) => `${x.from} -> ${x.to}`);
  t.same(stale, [], 'every listed exception is still needed (remove the ones that are not)');
});

t.test('no folder cycle, and no file cycle', async (t) => {
  const g = tree();
  t.same(cycles(unitGraph(g, EXCEPTIONS)), [], 'folders (and the store interfaces, the protocol registry, each protocol) import each other in no cycle');
  t.same(cycles(g), [], 'files import each other in no cycle');
});
