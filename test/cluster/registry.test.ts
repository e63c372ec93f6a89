/**
 * The node registry on a real store (SQLite file shared by three registries, one per "node"):
 * a node whose store stops answering refuses new sessions after two heartbeat periods and ends its
 * live sessions after storeLossTimeout, once; the survivors claim it lost exactly once between them
 * (one reap); when its store answers again it finds its row claimed, ends its own sessions (fenced)
 * and registers a new incarnation, which the others watch again instead of reaping it twice.
 */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { NodeRegistry } from '../../proxy/cluster/nodes.js';
import { openSqliteStore } from '../../proxy/store/sqlite.js';
import type { Store } from '../../proxy/store/types.js';
import { waitFor } from '../support/pg.js';

const log = pino({ level: 'silent' });
const timings = { heartbeatMs: 100, nodeTimeoutMs: 400, storeLossTimeoutMs: 900, drainTimeoutMs: 1_000 };

/** A store that, while cut, never answers (a partition: calls hang, as a dead TCP peer's would). */
function cuttable(store: Store): { store: Store; cut(on: boolean): void } {
  let cut = false;
  const wrapped = new Proxy(store, {
    get(target, prop, recv) {
      const v = Reflect.get(target, prop, recv) as unknown;
      if (typeof v !== 'function') return v;
      return (...args: unknown[]) => (cut ? new Promise(() => undefined) : (v as (...a: unknown[]) => unknown).apply(target, args));
    },
  });
  return { store: wrapped, cut: (on) => { cut = on; } };
}

t.test('store loss, fail closed, one reaper, fencing and re-registration', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tg-registry-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const events: string[] = [];
  const reaps: { by: string; node: string }[] = [];
  const nodes: NodeRegistry[] = [];
  const cuts = new Map<string, (on: boolean) => void>();
  for (const id of ['a', 'b', 'c']) {
    const raw = await openSqliteStore(join(dir, 'tg.db'));
    t.teardown(() => raw.close());
    const c = cuttable(raw);
    cuts.set(id, c.cut);
    const r = new NodeRegistry({
      store: c.store, id, host: 'test', internalAddr: () => null, timings, log,
      reap: async (n) => { reaps.push({ by: id, node: n.id }); },
      onStoreLost: () => events.push(`${id}:store_lost`),
      onStoreBack: () => events.push(`${id}:store_back`),
      onStoreLossTimeout: () => events.push(`${id}:store_loss_timeout`),
      onFenced: (by) => events.push(`${id}:fenced by ${by}`),
    });
    await r.start();
    nodes.push(r);
  }
  t.teardown(async () => { for (const id of cuts.keys()) cuts.get(id)!(false); for (const r of nodes) await r.stop(); });
  const [a, b, c] = nodes as [NodeRegistry, NodeRegistry, NodeRegistry];
  // Let every node see the others' heartbeats move for a while: nobody is reaped.
  await new Promise((r) => setTimeout(r, 700));
  t.same(reaps, [], 'live nodes are not reaped');
  t.notOk(b.storeLost);

  const firstIncarnation = b.incarnation;
  const cutAt = performance.now();
  cuts.get('b')!(true);
  await waitFor(() => b.storeLost, 5_000, 'b to notice its store is gone');
  const noticed = performance.now() - cutAt;
  t.ok(noticed >= timings.heartbeatMs - 20 && noticed < 1_500, `b refuses new sessions ${noticed.toFixed(0)} ms after the cut (two heartbeat periods)`);
  t.same(events, ['b:store_lost'], 'store_lost, not yet the timeout');
  await waitFor(() => reaps.length > 0, 5_000, 'a survivor to reap b');
  await waitFor(() => events.includes('b:store_loss_timeout'), 5_000, 'b to end its sessions');
  const ended = performance.now() - cutAt;
  // Counted from its last heartbeat that the store took (up to one period before the cut).
  t.ok(ended >= timings.storeLossTimeoutMs - timings.heartbeatMs - 20 && ended < 3_000, `b ends its live sessions ${ended.toFixed(0)} ms after the cut (storeLossTimeout ${timings.storeLossTimeoutMs})`);
  await new Promise((r) => setTimeout(r, 500));
  t.equal(events.filter((e) => e === 'b:store_loss_timeout').length, 1, 'once');
  t.equal(reaps.length, 1, `exactly one survivor reaped b: ${JSON.stringify(reaps)}`);
  t.equal(reaps[0]!.node, 'b');
  t.ok(['a', 'c'].includes(reaps[0]!.by));
  t.same([...a.reaped, ...c.reaped], ['b'], 'the registries agree');

  cuts.get('b')!(false);
  await waitFor(() => events.some((e) => e.startsWith('b:fenced')), 5_000, 'b to find itself fenced');
  t.match(events, ['b:store_lost', 'b:store_loss_timeout', 'b:store_back', `b:fenced by ${reaps[0]!.by}`]);
  t.notOk(b.storeLost, 'b takes sessions again');
  t.not(b.incarnation, firstIncarnation, 'b registered a new incarnation');
  await new Promise((r) => setTimeout(r, timings.nodeTimeoutMs * 2));
  t.equal(reaps.length, 1, 'the new incarnation heartbeats and is not reaped');
});
