// The plugin's metrics: RPCs by service/method/code, RPC latency, key backend operations by outcome,
// the self-test, the active key id as a sha256 hash only, the loaded key set's fingerprint (never a
// key), build and process info. Every label value
// comes from a fixed set; unknown gRPC methods are counted as service="unknown", method="unknown".

import { keyIDHash } from '../key-id.js';
import { createRegistry, LATENCY_BUCKETS, type Registry } from './metrics.js';

const KNOWN_METHOD =
  /^\/(v1beta1\.KeyManagementService|v2\.KeyManagementService)\/(Version|Status|Encrypt|Decrypt)$/;

export interface PluginMetrics {
  readonly registry: Registry;
  /** One finished RPC (the transport's onCall). `code` is the gRPC code name, e.g. "OK". */
  recordCall(method: string, code: string, durationSeconds: number): void;
  backendOperation(operation: string, outcome: string, seconds: number): void;
  selfTest(ok: boolean, atMs: number): void;
  activeKeyID(keyID: string): void;
  keyringReload(ok: boolean): void;
  /** The key set now loaded (after start-up and each successful reload); active key id hashed. */
  keySet(set: { fingerprint: string; keys: number; activeKeyID: string }): void;
}

export { keyIDHash };

export function createPluginMetrics(build: {
  readonly version: string;
  readonly backend: string;
  readonly startTimeMs?: number;
}): PluginMetrics {
  const registry = createRegistry();
  registry
    .gauge('atrest_build_info', 'atrest build information; always 1.', [
      'version',
      'node_version',
      'backend',
    ])
    .set(1, { version: build.version, node_version: process.version, backend: build.backend });
  const calls = timedOperations(registry, {
    total: 'atrest_grpc_requests_total',
    totalHelp: 'KMS gRPC calls handled, by service, method and gRPC status code.',
    duration: 'atrest_grpc_request_duration_seconds',
    durationHelp: 'Time to answer a KMS gRPC call, by service and method.',
    labels: ['service', 'method'],
    outcomeLabel: 'code',
  });
  const backendOps = timedOperations(registry, {
    total: 'atrest_backend_operations_total',
    totalHelp:
      'Key backend operations, by backend, operation (wrap, unwrap) and outcome (ok or the error kind).',
    duration: 'atrest_backend_operation_duration_seconds',
    durationHelp: 'Time taken by key backend operations.',
    labels: ['backend', 'operation'],
    outcomeLabel: 'outcome',
  });
  // The operations are wrap and unwrap: their label objects are made once.
  const opLabels = new Map<string, { backend: string; operation: string }>();
  const backendLabels = (operation: string): { backend: string; operation: string } => {
    let labels = opLabels.get(operation);
    if (labels === undefined) {
      labels = { backend: build.backend, operation };
      if (opLabels.size < 16) opLabels.set(operation, labels);
    }
    return labels;
  };
  const selfTest = selfTestMetrics(registry);
  const keys = keyMetrics(registry);
  processMetrics(registry, (build.startTimeMs ?? Date.now() - performance.now()) / 1000);
  const methodLabels = methodLabeller();
  return {
    registry,
    recordCall(method, code, durationSeconds) {
      calls(methodLabels(method), code, durationSeconds);
    },
    backendOperation(operation, outcome, seconds) {
      backendOps(backendLabels(operation), outcome, seconds);
    },
    selfTest,
    ...keys,
  };
}

/**
 * Operations counted by outcome, and their duration: a counter (labels + the outcome label) and a
 * histogram (labels), always recorded together.
 */
function timedOperations(
  registry: Registry,
  spec: {
    readonly total: string;
    readonly totalHelp: string;
    readonly duration: string;
    readonly durationHelp: string;
    readonly labels: readonly string[];
    readonly outcomeLabel: string;
  },
): (labels: Readonly<Record<string, string>>, outcome: string, seconds: number) => void {
  const total = registry.counter(spec.total, spec.totalHelp, [...spec.labels, spec.outcomeLabel]);
  const duration = registry.histogram(
    spec.duration,
    spec.durationHelp,
    LATENCY_BUCKETS,
    spec.labels,
  );
  // Every call records both: each label set's two series are looked up once and kept, so the hot path
  // builds no label object. Label values come from fixed sets (unknown gRPC methods are 'unknown'),
  // and the table is capped anyway: past MAX_KEPT_SERIES a label set is looked up every time.
  // Kept in nested maps, one level per label and one for the outcome: no key string is built per call.
  type Pair = { count: { inc(): void }; time: { observe(v: number): void } };
  const kept = new Map<string, unknown>();
  let keptCount = 0;
  return (labels, outcome, seconds) => {
    let level: Map<string, unknown> | undefined = kept;
    for (let i = 0; i < spec.labels.length && level !== undefined; i++) {
      level = level.get(labels[spec.labels[i]!]!) as Map<string, unknown> | undefined;
    }
    let pair = level?.get(outcome) as Pair | undefined;
    if (pair === undefined) {
      pair = {
        count: total.series({ ...labels, [spec.outcomeLabel]: outcome }),
        time: duration.series(labels),
      };
      if (keptCount < MAX_KEPT_SERIES) {
        keptCount++;
        let node = kept;
        for (const l of spec.labels) {
          const value = labels[l]!;
          let next = node.get(value) as Map<string, unknown> | undefined;
          if (next === undefined) node.set(value, (next = new Map()));
          node = next;
        }
        node.set(outcome, pair);
      }
    }
    pair.count.inc();
    pair.time.observe(seconds);
  };
}

const MAX_KEPT_SERIES = 1000;

function selfTestMetrics(registry: Registry): PluginMetrics['selfTest'] {
  const selfTestOk = registry.gauge(
    'atrest_self_test_healthy',
    '1 if the latest background wrap/unwrap self-test passed, else 0.',
  );
  const selfTestLast = registry.gauge(
    'atrest_self_test_last_success_timestamp_seconds',
    'Unix time of the latest passing self-test.',
  );
  const selfTests = registry.counter('atrest_self_tests_total', 'Self-tests run, by outcome.', [
    'outcome',
  ]);
  return (ok, atMs) => {
    selfTestOk.set(ok ? 1 : 0);
    selfTests.inc({ outcome: ok ? 'ok' : 'failed' });
    if (ok) selfTestLast.set(Math.floor(atMs / 1000));
  };
}

/** The active key id (hashed), key reloads and the loaded key set. */
function keyMetrics(
  registry: Registry,
): Pick<PluginMetrics, 'activeKeyID' | 'keyringReload' | 'keySet'> {
  const activeKey = registry.gauge(
    'atrest_active_key_id_info',
    'The active key id, only as "sha256:<hex>" of the id; always 1.',
    ['key_id_hash'],
  );
  const reloads = registry.counter(
    'atrest_keyring_reloads_total',
    'Key reloads (SIGHUP), by outcome.',
    ['outcome'],
  );
  // Compared across nodes before a new key is activated (docs/plugin.md, "Rotating keys"): every node
  // must show one and the same fingerprint, e.g. count(count by (fingerprint) (atrest_keyring_info)) == 1.
  const keyringInfo = registry.gauge(
    'atrest_keyring_info',
    'The loaded key set: fingerprint over key ids and key material (reveals neither) and the active ' +
      'key id as "sha256:<hex>"; always 1.',
    ['fingerprint', 'active_key_id_hash'],
  );
  const keyringKeys = registry.gauge('atrest_keyring_keys', 'Keys loaded (active or not).');
  return {
    activeKeyID(keyID) {
      activeKey.reset();
      activeKey.set(1, { key_id_hash: keyIDHash(keyID) });
    },
    keyringReload(ok) {
      reloads.inc({ outcome: ok ? 'ok' : 'failed' });
    },
    keySet(set) {
      keyringInfo.reset();
      keyringInfo.set(1, {
        fingerprint: set.fingerprint,
        active_key_id_hash: keyIDHash(set.activeKeyID),
      });
      keyringKeys.set(set.keys);
    },
  };
}

/** The standard process_* series, read at scrape time. */
function processMetrics(registry: Registry, startSeconds: number): void {
  registry.counterFunc(
    'process_cpu_seconds_total',
    'User and system CPU time spent, in seconds.',
    () => {
      const u = process.cpuUsage();
      return (u.user + u.system) / 1e6;
    },
  );
  registry.gaugeFunc('process_resident_memory_bytes', 'Resident memory size in bytes.', () =>
    process.memoryUsage.rss(),
  );
  registry.gaugeFunc(
    'process_start_time_seconds',
    'Start time of the process since the Unix epoch in seconds.',
    () => Math.round(startSeconds),
  );
}

/** gRPC method path -> service and method labels; anything unknown is "unknown". */
function methodLabeller(): (method: string) => { service: string; method: string } {
  // Parsed once per method path; the set is bounded (only known paths are kept).
  const cache = new Map<string, { service: string; method: string }>();
  return (method) => {
    let labels = cache.get(method);
    if (labels === undefined) {
      const m = KNOWN_METHOD.exec(method);
      labels = { service: m?.[1] ?? 'unknown', method: m?.[2] ?? 'unknown' };
      if (m !== null) cache.set(method, labels);
    }
    return labels;
  };
}
