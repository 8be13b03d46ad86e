#!/usr/bin/env node
// Summarises a V8 .cpuprofile (node --cpu-prof) of `atrest serve` under load: the share of busy JS time
// per source file and per function (inclusive), counted from the first served call on, so that module
// loading at start-up does not dominate. Used by bench/conformance.bench.sh with BENCH_CPU_PROF=1.
//   node conformance/profile-summary.mjs FILE.cpuprofile [TOP]
import { readFileSync } from 'node:fs';

const [file, topArg] = process.argv.slice(2);
const top = Number(topArg ?? 25);
const profile = JSON.parse(readFileSync(file, 'utf8'));
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const parent = new Map();
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const where = (n) => n.callFrame.url.split('/').slice(-2).join('/') || n.callFrame.functionName;

// Steady state starts at the first sample inside lean-server.ts's succeeded(): the first answered call
// (from the start of the profile if that function is not found).
const first = Math.max(0, profile.samples.findIndex((id) => byId.get(id).callFrame.functionName === 'succeeded'));
const byFile = new Map();
const byFn = new Map();
let busy = 0;
let idle = 0;
for (let i = first; i < profile.samples.length; i++) {
  const d = profile.timeDeltas[i] ?? 0;
  let id = profile.samples[i];
  if (byId.get(id).callFrame.functionName === '(idle)') {
    idle += d;
    continue;
  }
  busy += d;
  const files = new Set();
  const fns = new Set();
  while (id !== undefined) {
    const n = byId.get(id);
    const f = where(n);
    const fn = `${n.callFrame.functionName || '(anonymous)'} ${f}`;
    if (!files.has(f)) files.add(f), byFile.set(f, (byFile.get(f) ?? 0) + d);
    if (!fns.has(fn)) fns.add(fn), byFn.set(fn, (byFn.get(fn) ?? 0) + d);
    id = parent.get(id);
  }
}
const pct = (v) => `${((100 * v) / busy).toFixed(1).padStart(5)}%`;
console.log(`JS thread after the first call: busy ${(busy / 1e6).toFixed(2)} s, idle ${(idle / 1e6).toFixed(2)} s`);
console.log('(native HTTP/2, libuv and kernel time outside the JS thread is not in this profile)');
console.log('\ninclusive share of busy JS time by file:');
for (const [k, v] of [...byFile].sort((a, b) => b[1] - a[1]).slice(1, top + 1)) console.log(`  ${pct(v)}  ${k}`);
console.log('\ninclusive share of busy JS time by function:');
for (const [k, v] of [...byFn].sort((a, b) => b[1] - a[1]).slice(1, top + 1)) console.log(`  ${pct(v)}  ${k}`);
