// The plugin's metrics: RPCs by service/method/code, RPC latency, key backend operations by outcome,
// the self-test, the active key id as a sha256 hash only, the loaded key set's fingerprint (never a
// key), build and process info. Every label value
// comes from a fixed set; unknown gRPC methods are counted as service="unknown", method="unknown".

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

import { keyIDHash } from '../key-id.js';

export { keyIDHash };

export function createPluginMetrics(build: {
  readonly version: string;
  readonly backend: string;
  readonly startTimeMs?: number;
}): PluginMetrics {
  const registry = createRegistry();
  const startSeconds = (build.startTimeMs ?? Date.now() - performance.now()) / 1000;
  registry
    .gauge('atrest_build_info', 'atrest build information; always 1.', [
      'version',
      'node_version',
      'backend',
    ])
    .set(1, { version: build.version, node_version: process.version, backend: build.backend });
  const requests = registry.counter(
    'atrest_grpc_requests_total',
    'KMS gRPC calls handled, by service, method and gRPC status code.',
    ['service', 'method', 'code'],
  );
  const latency = registry.histogram(
    'atrest_grpc_request_duration_seconds',
    'Time to answer a KMS gRPC call, by service and method.',
    LATENCY_BUCKETS,
    ['service', 'method'],
  );
  const backendOps = registry.counter(
    'atrest_backend_operations_total',
    'Key backend operations, by backend, operation (wrap, unwrap) and outcome (ok or the error kind).',
    ['backend', 'operation', 'outcome'],
  );
  const backendLatency = registry.histogram(
    'atrest_backend_operation_duration_seconds',
    'Time taken by key backend operations.',
    LATENCY_BUCKETS,
    ['backend', 'operation'],
  );
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

  // Parsed once per method path; the set is bounded (the transport reports unknown paths as 'unknown').
  const methodLabelCache = new Map<string, { service: string; method: string }>();
  const methodLabels = (method: string): { service: string; method: string } => {
    let labels = methodLabelCache.get(method);
    if (labels === undefined) {
      const m = KNOWN_METHOD.exec(method);
      labels = { service: m?.[1] ?? 'unknown', method: m?.[2] ?? 'unknown' };
      if (m !== null) methodLabelCache.set(method, labels);
    }
    return labels;
  };

  // Every call records two series and so does every backend operation: each label set is looked up
  // once and its series kept (label values are bounded: known methods x gRPC codes, two operations x
  // a few outcomes), so the hot path builds no label object and no series key.
  interface Pair {
    readonly count: { inc(by?: number): void };
    readonly time: { observe(value: number): void };
  }
  const callSeries = new Map<string, Map<string, Pair>>();
  const backendSeries = new Map<string, Map<string, Pair>>();
  const cached = (
    table: Map<string, Map<string, Pair>>,
    a: string,
    b: string,
    make: () => Pair,
    keep: boolean,
  ): Pair => {
    let inner = table.get(a);
    let pair = inner?.get(b);
    if (pair === undefined) {
      pair = make();
      if (keep) {
        if (inner === undefined) table.set(a, (inner = new Map()));
        inner.set(b, pair);
      }
    }
    return pair;
  };

  return {
    registry,
    recordCall(method, code, durationSeconds) {
      const pair = cached(
        callSeries,
        method,
        code,
        () => {
          const labels = methodLabels(method);
          return { count: requests.series({ ...labels, code }), time: latency.series(labels) };
        },
        // Unknown paths all share the 'unknown' series: not cached per path (that set is unbounded).
        KNOWN_METHOD.test(method),
      );
      pair.count.inc();
      pair.time.observe(durationSeconds);
    },
    backendOperation(operation, outcome, seconds) {
      const pair = cached(
        backendSeries,
        operation,
        outcome,
        () => ({
          count: backendOps.series({ backend: build.backend, operation, outcome }),
          time: backendLatency.series({ backend: build.backend, operation }),
        }),
        true,
      );
      pair.count.inc();
      pair.time.observe(seconds);
    },
    selfTest(ok, atMs) {
      selfTestOk.set(ok ? 1 : 0);
      selfTests.inc({ outcome: ok ? 'ok' : 'failed' });
      if (ok) selfTestLast.set(Math.floor(atMs / 1000));
    },
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
