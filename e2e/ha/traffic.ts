// Test harness: client traffic on both API servers while the scenario changes keys and providers. One
// sequential loop alternates direction: create a Secret through one server, read it back through the
// other, read an older Secret there too, and now and then LIST the namespace there (one undecryptable
// Secret fails the whole LIST). A server being restarted is paused first (its in-flight call finishes),
// so every error counted is an answer from a running server: a lost read, never a restart.

import assert from 'node:assert/strict';
import type { Cluster, NodeName } from './cluster.js';

export const TRAFFIC_NAMESPACE = 'ha';

export interface Failure {
  readonly node: NodeName;
  readonly op: 'create' | 'get' | 'list';
  readonly name: string;
  readonly status: number;
  readonly message: string;
}

export interface Counts {
  readonly creates: Record<NodeName, number>;
  /** Successful reads (GET or LIST) of Secrets another server wrote, per reading server. */
  readonly crossReads: Record<NodeName, number>;
  readonly lists: Record<NodeName, number>;
  readonly failures: Failure[];
}

const zero = (): Counts => ({
  creates: { a: 0, b: 0 },
  crossReads: { a: 0, b: 0 },
  lists: { a: 0, b: 0 },
  failures: [],
});

function messageOf(body: string): string {
  try {
    return String((JSON.parse(body) as { message?: unknown }).message ?? body);
  } catch {
    return body.slice(0, 300);
  }
}

export interface Traffic {
  /** Counts since the last resetCounts(). */
  counts(): Counts;
  resetCounts(): void;
  /** Stops sending to `node` and waits until no call to it is in flight. */
  pause(node: NodeName): Promise<void>;
  resume(node: NodeName): void;
  /** Resolves once `node` has read at least `n` Secrets written by the other server since the last reset. */
  waitForCrossReads(node: NodeName, n: number): Promise<void>;
  /** Resolves after the first loop iteration at whose end `done(counts)` holds. */
  waitFor(done: (c: Counts) => boolean): Promise<void>;
  /** Every Secret the loop created (and the server that wrote it). */
  written(): ReadonlyMap<string, { value: string; by: NodeName }>;
  stop(): Promise<void>;
}

export function startTraffic(cluster: Cluster): Traffic {
  const up: Record<NodeName, boolean> = { a: true, b: true };
  const written = new Map<string, { value: string; by: NodeName }>();
  const names: string[] = [];
  let counts = zero();
  let stopped = false;
  let iteration = 0;
  let current: Promise<void> = Promise.resolve();

  const fail = (node: NodeName, op: Failure['op'], name: string, status: number, body: string) =>
    counts.failures.push({ node, op, name, status, message: messageOf(body) });

  // A connection-level error (a kept-alive socket the server closed just as it was reused) is not an
  // answer: the call is sent once more. A second one fails the scenario as a harness problem; a lost
  // read is an error answer from a running server, counted in `failures`.
  const call = async (node: NodeName, method: string, path: string, body?: unknown) => {
    try {
      return await cluster.nodes[node].api(method, path, body);
    } catch {
      const again = await cluster.nodes[node].api(method, path, body);
      // The first POST may have arrived: AlreadyExists then means created.
      return method === 'POST' && again.status === 409 ? { ...again, status: 201 } : again;
    }
  };

  async function once(): Promise<void> {
    const i = iteration++;
    const writer: NodeName = i % 2 === 0 ? 'a' : 'b';
    const reader: NodeName = writer === 'a' ? 'b' : 'a';
    const base = `/api/v1/namespaces/${TRAFFIC_NAMESPACE}/secrets`;
    if (up[writer]) {
      const name = `t-${writer}-${i}`;
      const value = Buffer.from(`value ${i} written through ${writer}`).toString('base64');
      const res = await call(writer, 'POST', base, {
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: { name, labels: { 'atrest-ha': 'traffic' } },
        data: { v: value },
      });
      if (res.status === 201) {
        written.set(name, { value, by: writer });
        names.push(name);
        counts.creates[writer]++;
      } else {
        fail(writer, 'create', name, res.status, res.body);
      }
    }
    if (!up[reader] || names.length === 0) return;
    // The newest Secret and one older one, whoever wrote them.
    const picks = [names[names.length - 1]!, names[(i * 7919) % names.length]!];
    for (const name of picks) {
      const res = await call(reader, 'GET', `${base}/${name}`);
      if (res.status !== 200) {
        fail(reader, 'get', name, res.status, res.body);
        continue;
      }
      const got = (JSON.parse(res.body) as { data?: { v?: string } }).data?.v;
      assert.equal(got, written.get(name)!.value, `${name} read through ${reader}`);
      if (written.get(name)!.by !== reader) counts.crossReads[reader]++;
    }
    if (i % 8 === 1 || i % 8 === 4) {
      const res = await call(reader, 'GET', `${base}?labelSelector=atrest-ha%3Dtraffic`);
      if (res.status !== 200) fail(reader, 'list', '*', res.status, res.body);
      else counts.lists[reader]++;
    }
  }

  let loopError: unknown;
  const afterIteration = new Set<() => void>();
  const loop = (async () => {
    while (!stopped) {
      current = once();
      try {
        await current;
      } catch (err) {
        loopError = err;
        stopped = true;
      }
      for (const wake of afterIteration) wake();
      afterIteration.clear();
      if (stopped) break;
      // Pacing, not a timing assertion: leaves CPU to the servers being restarted.
      await new Promise((r) => setTimeout(r, 40));
    }
  })();

  const check = (): void => {
    if (loopError !== undefined) throw loopError;
  };

  return {
    counts: () => {
      check();
      return counts;
    },
    resetCounts: () => {
      counts = zero();
    },
    async pause(node) {
      up[node] = false;
      await current.catch(() => undefined);
      check();
    },
    resume(node) {
      up[node] = true;
    },
    async waitFor(done) {
      while (!done(counts)) {
        check();
        if (stopped) throw new Error('traffic stopped');
        await new Promise<void>((wake) => afterIteration.add(wake));
      }
    },
    waitForCrossReads(node, n) {
      return this.waitFor((c) => c.crossReads[node] >= n);
    },
    written: () => written,
    async stop() {
      stopped = true;
      await loop;
      check();
    },
  };
}
