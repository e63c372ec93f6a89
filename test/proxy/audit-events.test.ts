/**
 * The audit event catalogue (proxy/audit-events.ts) against the sources: every action any emitter
 * writes (`append(actor, action, …)`, `audit(…)` of sessions, modules, policies and auth, the SFTP
 * inspector's operations) is catalogued, every catalogued name is still emitted, names follow the
 * separator rule, and an old name is found through its new one. Emitters whose action is not a
 * literal are listed below with every name they can produce; a new one fails until listed.
 */
import t from 'tap';
import ts from 'typescript';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { AUDIT_EVENTS, isAuditAction, storedNames } from '../../proxy/audit-events.js';
import { AuditLog } from '../../proxy/audit.js';
import { openStore } from '../../proxy/store/index.js';
import { validateConfig } from '../../proxy/config.js';
import { ManualClock } from '../../policies/clock.js';
import { gatewayKey } from '../../auth/keys.js';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';

const root = join(import.meta.dirname, '..', '..');
const SOURCES = ['proxy', 'protocols', 'policies', 'auth', 'recorder'];

/**
 * Emitters whose action is computed, by file and the expression's text: the names it can be
 * (a choice between literals, x ? 'a' : 'b', is read as both). Pass-throughs (a function that
 * hands its caller's action on) produce nothing themselves.
 */
const DYNAMIC: Record<string, string[]> = {
  'proxy/sessions.ts `session.rule.${d.action}`': ['session.rule.deny', 'session.rule.kill', 'session.rule.alert'],
  'protocols/ssh/broker.ts `${protocol}.${t.direction}`': ['sftp.upload', 'sftp.download', 'scp.upload', 'scp.download'],
};
const PASS_THROUGH = new Set([
  'proxy/sessions.ts fromModule(action)', // LiveSession.audit(action, data)
  "proxy/gateway.ts fromModule(action)", // the engine's, the IdP links' and ctx.state.audit's callbacks
  'protocols/ssh/broker.ts op', // the SFTP inspector's operations (scanned below as onOp('…'))
]);

function sourceFiles(): string[] {
  const out: string[] = [];
  for (const top of SOURCES) {
    for (const e of readdirSync(join(root, top), { recursive: true, withFileTypes: true })) {
      if (e.isFile() && e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) out.push(relative(root, join(e.parentPath, e.name)).split('\\').join('/'));
    }
  }
  return out.sort();
}

interface Emit { file: string; line: number; names: string[]; expr: string }

/** Every call of append(…), audit(…) and onOp(…) with the expression naming its action. */
function emitters(): Emit[] {
  const out: Emit[] = [];
  for (const file of sourceFiles()) {
    if (file === 'proxy/audit-events.ts') continue;
    const src = ts.createSourceFile(file, readFileSync(join(root, file), 'utf8'), ts.ScriptTarget.ES2022, true);
    const visit = (n: ts.Node): void => {
      if (ts.isCallExpression(n)) {
        const callee = n.expression;
        const name = ts.isPropertyAccessExpression(callee) ? callee.name.text : ts.isIdentifier(callee) ? callee.text : '';
        const args = n.arguments;
        let action: ts.Expression | undefined;
        if (name === 'append' && args.length >= 3) action = args[1];
        else if (name === 'onOp' && args.length >= 1) action = args[0];
        else if (name === 'audit' && args.length >= 2) {
          // audit(actor, action, subject, data) of policies and auth, or audit(action, …) of sessions and modules.
          const a0 = args[0]!;
          const isActor = !(ts.isStringLiteral(a0) && a0.text.includes('.')) && args.length >= 3 && !ts.isObjectLiteralExpression(args[1]!)
            && !(ts.isStringLiteral(args[1]!) && !args[1]!.text.includes('.') && args[1]!.text !== 'signin' && args[1]!.text !== 'notify');
          action = isActor && !ts.isStringLiteral(a0) ? args[1] : isActor && ts.isStringLiteral(a0) && !a0.text.includes('.') ? args[1] : a0;
        }
        if (action) {
          const line = src.getLineAndCharacterOfPosition(n.getStart()).line + 1;
          out.push({ file, line, names: literals(action), expr: action.getText() });
        }
      }
      ts.forEachChild(n, visit);
    };
    visit(src);
  }
  return out;
}

/** The string literals an action expression can be ('a', x ? 'a' : 'b'); [] when it is computed. */
function literals(e: ts.Expression): string[] {
  if (ts.isStringLiteral(e) || ts.isNoSubstitutionTemplateLiteral(e)) return [e.text];
  if (ts.isParenthesizedExpression(e)) return literals(e.expression);
  if (ts.isConditionalExpression(e)) {
    const a = literals(e.whenTrue);
    const b = literals(e.whenFalse);
    return a.length && b.length ? [...a, ...b] : [];
  }
  return [];
}

t.test('every audit action the code emits is in the catalogue, and every catalogued one is emitted', async (t) => {
  const emitted = new Set<string>();
  const unknownDynamic: string[] = [];
  const seenDynamic = new Set<string>();
  const found = emitters();
  t.ok(found.length > 60, `found the emitters (${found.length})`);
  for (const e of found) {
    // Declarations of these functions themselves (parameters named action) are not emitters.
    if (e.file === 'proxy/audit.ts' || e.file === 'protocols/types.ts') continue;
    if (e.names.length) {
      for (const n of e.names) {
        emitted.add(n);
        t.ok(isAuditAction(n), `${e.file}:${e.line} emits "${n}", which is in proxy/audit-events.ts`);
      }
      continue;
    }
    const key = `${e.file} ${e.expr}`;
    if (PASS_THROUGH.has(key)) { seenDynamic.add(key); continue; }
    const names = DYNAMIC[key];
    if (!names) { unknownDynamic.push(`${e.file}:${e.line} ${e.expr}`); continue; }
    seenDynamic.add(key);
    for (const n of names) {
      emitted.add(n);
      t.ok(isAuditAction(n), `${key} can emit "${n}", which is catalogued`);
    }
  }
  t.same(unknownDynamic, [], 'no computed action that this test does not know (list it in DYNAMIC with the names it can be)');
  t.same([...Object.keys(DYNAMIC), ...PASS_THROUGH].filter((k) => !seenDynamic.has(k)), [], 'every listed computed emitter still exists');
  const stale = Object.keys(AUDIT_EVENTS).filter((n) => !emitted.has(n));
  t.same(stale, [], 'every catalogued action is still emitted somewhere');
  const aliases = Object.values(AUDIT_EVENTS).flatMap((s) => ('aliases' in s ? s.aliases : []) as readonly string[]);
  t.same(aliases.filter((a) => emitted.has(a)), [], 'no code writes an old name any more');
});

t.test('names: "." between the words of the hierarchy, "_" inside a word; every entry says what it means', async (t) => {
  for (const [name, spec] of Object.entries(AUDIT_EVENTS)) {
    t.match(name, /^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$/, `${name}: lower case words joined by "."`);
    t.ok(spec.meaning.length > 10 && /[.)]$/.test(spec.meaning), `${name}: a sentence says what it means`);
    for (const a of ('aliases' in spec ? spec.aliases : []) as readonly string[]) t.notOk(isAuditAction(a), `${a}: an alias is not also a name`);
  }
  t.same(storedNames('ssh.port_forward'), ['ssh.port_forward', 'ssh.port-forward']);
  t.same(storedNames('lease.revoked'), ['lease.revoked']);
});

t.test('an event stored under its old name is found through the new one', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tg-audit-names-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const cfg = validateConfig({ gateway: { dataDir: dir }, targets: [], policies: [] }, '<test>', new Map());
  const store = await openStore(cfg, { dataDir: dir });
  t.teardown(() => store.close());
  const log = new AuditLog(store, new ManualClock(1_000), { key: gatewayKey(randomBytes(32)).deriveKey('audit') });
  // What an older version wrote, then what this one writes.
  await log.append('alice', 'ssh.port-forward' as never, 's1', { host: 'db', port: 5432 });
  await log.append('alice', 'ssh.port_forward', 's2', { host: 'db', port: 5432 });
  await log.append('alice', 'ssh.exec', 's2', {});
  const both = await store.listAudit({ action: storedNames('ssh.port_forward') });
  t.same(both.map((e) => e.subject), ['s1', 's2'], 'the new name finds the event stored under the old one');
  t.equal((await store.listAudit({ action: 'ssh.port_forward' })).length, 1, 'a plain name alone matches only itself');
  t.equal((await log.verify()).ok, true, 'old names stay in the chain untouched');
  await log.close();
});
