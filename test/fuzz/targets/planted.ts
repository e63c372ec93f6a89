/**
 * Targets with planted bugs, one per kind of failure the fuzzer must report (test/fuzz/selftest.test.ts):
 * a non-protocol exception, an infinite loop, a slow input, a leak, a broken invariant; and one
 * correct parser that must pass. Not part of the real run (runner.ts MODULES does not list it).
 */
import { invariant, type FuzzTarget } from '../engine.js';

class PlantedProtocolError extends Error {}
const expected = (e: unknown) => e instanceof PlantedProtocolError;
const leaked: Buffer[] = [];
const seed = () => [Buffer.from('AAAA')];
const bytes = (fcl: typeof import('fast-check').default) => fcl.uint8Array({ maxLength: 8 });

export const targets: FuzzTarget[] = [
  {
    name: 'planted.throw', covers: 'a TypeError on inputs starting with B', expected, seeds: seed, arbitrary: bytes,
    run: (b) => {
      if (b[0] === 0x42) (null as unknown as { x: number }).x = 1;
      if (b[0] === 0x43) throw new PlantedProtocolError('refused');
    },
  },
  {
    name: 'planted.hang', covers: 'an endless loop on inputs starting with H', expected, seeds: seed, arbitrary: bytes,
    run: (b) => { if (b[0] === 0x48) for (;;) { /* planted */ } },
  },
  {
    name: 'planted.slow', covers: 'an input starting with S takes 400 ms', expected, seeds: seed, arbitrary: bytes,
    run: (b) => { if (b[0] === 0x53) { const until = performance.now() + 400; while (performance.now() < until) { /* planted */ } } },
  },
  {
    name: 'planted.leak', covers: 'keeps 64 KiB per input', expected, seeds: seed, arbitrary: bytes, memoryBound: 8 * 1024 * 1024,
    run: () => { leaked.push(Buffer.alloc(64 * 1024, 1)); },
  },
  {
    name: 'planted.invariant', covers: 'an invariant that breaks on inputs starting with I', expected, seeds: seed, arbitrary: bytes,
    run: (b) => invariant(b[0] !== 0x49, 'planted invariant broke'),
  },
  {
    name: 'planted.ok', covers: 'a correct parser', expected, seeds: seed, arbitrary: bytes,
    run: (b) => { if (b.length > 6) throw new PlantedProtocolError('too long'); },
  },
];
