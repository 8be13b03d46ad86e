// An etcd v3 client over etcd's JSON gRPC-gateway (`POST /v3/kv/range|put|txn|deleterange`,
// base64 keys and values), with several endpoints and failover. Only what scan, rewrite and decrypt
// need: paged ranges, conditional writes (compare mod_revision) and status. No watch, no leases.
//
// Why the gateway and not gRPC: etcd serves it on the same client port by default, undici speaks
// HTTP/1.1 with keep-alive pools and client certificates, and JSON keeps the client a few hundred
// lines with no generated code. int64 fields arrive as decimal strings (grpc-gateway's JSON mapping).

import { Agent, type Dispatcher } from 'undici';
import { AtrestError } from '../errors.js';

export interface EtcdTlsOptions {
  /** PEM of the CA that signed the server certificate (etcdctl --cacert). */
  readonly ca?: Buffer;
  /** PEM client certificate and key (etcdctl --cert/--key). */
  readonly cert?: Buffer;
  readonly key?: Buffer;
}

export interface EtcdClientOptions {
  /** e.g. ["https://10.0.0.1:2379", "127.0.0.1:2379"]; no scheme means http. */
  readonly endpoints: readonly string[];
  readonly tls?: EtcdTlsOptions;
  /** Per-request timeout; etcdctl's --command-timeout defaults to 5s. */
  readonly requestTimeoutMs?: number;
  /** Parallel HTTP connections per endpoint (the rewrite concurrency). */
  readonly connections?: number;
}

export interface KeyValue {
  readonly key: Buffer;
  readonly value: Buffer;
  readonly createRevision: number;
  readonly modRevision: number;
  readonly version: number;
}

export interface RangeOptions {
  /** Exclusive end of the range; omit for a single key. */
  readonly rangeEnd?: Buffer;
  readonly limit?: number;
  readonly keysOnly?: boolean;
  readonly countOnly?: boolean;
  /** Read at this revision (0 = latest). */
  readonly revision?: number;
}

export interface RangeResult {
  readonly kvs: KeyValue[];
  readonly more: boolean;
  readonly count: number;
  readonly revision: number;
}

export interface CompareAndPutResult {
  /** True when the key still had the expected mod_revision and the value was written. */
  readonly succeeded: boolean;
  /** After success: the value as stored by the same transaction (the read-back). On failure: the current value, or undefined when the key is gone. */
  readonly current: KeyValue | undefined;
  readonly revision: number;
}

export interface CompareAndPutItem {
  readonly key: Uint8Array;
  readonly value: Uint8Array;
  readonly modRevision: number;
}

export interface CompareAndPutBatchResult {
  /** True when every key still had its modRevision and every value was written, in one transaction. */
  readonly succeeded: boolean;
  /** One entry per item, in order: on success the value as stored (read back in the same transaction); on failure the current value, or undefined when the key is gone. */
  readonly current: (KeyValue | undefined)[];
  readonly revision: number;
}

export interface EtcdStatus {
  readonly version: string;
  readonly dbSize: number;
  readonly revision: number;
  readonly endpoint: string;
}

interface RawKv {
  key?: string;
  value?: string;
  create_revision?: string;
  mod_revision?: string;
  version?: string;
}

interface RawRange {
  header?: { revision?: string };
  kvs?: RawKv[];
  more?: boolean;
  count?: string;
}

interface RawTxn {
  header?: { revision?: string };
  succeeded?: boolean;
  responses?: { response_range?: RawRange }[];
}

const b64 = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64');
const num = (s: string | undefined): number => (s === undefined ? 0 : Number(s));

function toKv(raw: RawKv): KeyValue {
  return {
    key: Buffer.from(raw.key ?? '', 'base64'),
    value: Buffer.from(raw.value ?? '', 'base64'),
    createRevision: num(raw.create_revision),
    modRevision: num(raw.mod_revision),
    version: num(raw.version),
  };
}

function toRange(raw: RawRange): RangeResult {
  return {
    kvs: (raw.kvs ?? []).map(toKv),
    more: raw.more === true,
    count: num(raw.count),
    revision: num(raw.header?.revision),
  };
}

/** The smallest key greater than every key starting with `prefix` (etcd's `--prefix` range end). */
export function prefixRangeEnd(prefix: Uint8Array): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i] = end[i]! + 1;
      return end.subarray(0, i + 1);
    }
  }
  // all 0xff: to the end of the keyspace
  return Buffer.from([0]);
}

/** The key right after `key` in byte order: the next page of a range starts there. */
export function keyAfter(key: Uint8Array): Buffer {
  return Buffer.concat([key, Buffer.from([0])]);
}

export function normaliseEndpoint(endpoint: string): string {
  const e = endpoint.trim().replace(/\/+$/, '');
  if (e === '') throw new AtrestError('ERR_ETCD', 'empty etcd endpoint');
  return /^[a-z]+:\/\//i.test(e) ? e : `http://${e}`;
}

/** Errors that mean "this endpoint is unreachable, try the next one" rather than "etcd said no". */
function isConnectionError(err: unknown): boolean {
  const code = (err as { code?: string } | undefined)?.code ?? '';
  const causeCode = (err as { cause?: { code?: string } } | undefined)?.cause?.code ?? '';
  return /^(ECONNREFUSED|ECONNRESET|EHOSTUNREACH|ENETUNREACH|ENOTFOUND|EAI_AGAIN|EPIPE|ETIMEDOUT|UND_ERR_CONNECT_TIMEOUT|UND_ERR_SOCKET|UND_ERR_CLOSED|UND_ERR_HEADERS_TIMEOUT|UND_ERR_BODY_TIMEOUT)$/.test(
    code || causeCode,
  );
}

export class EtcdClient {
  readonly endpoints: readonly string[];
  private readonly dispatcher: Dispatcher;
  private readonly timeoutMs: number;
  private current = 0;

  constructor(options: EtcdClientOptions) {
    if (options.endpoints.length === 0) throw new AtrestError('ERR_ETCD', 'no etcd endpoints given');
    this.endpoints = options.endpoints.map(normaliseEndpoint);
    this.timeoutMs = options.requestTimeoutMs ?? 5000;
    const tls = options.tls;
    this.dispatcher = new Agent({
      connections: options.connections ?? 16,
      keepAliveTimeout: 30_000,
      connect: {
        ...(tls?.ca ? { ca: tls.ca } : {}),
        ...(tls?.cert ? { cert: tls.cert } : {}),
        ...(tls?.key ? { key: tls.key } : {}),
      },
    });
  }

  async close(): Promise<void> {
    await this.dispatcher.close();
  }

  /** POSTs to the current endpoint; on a connection failure moves on to the next, once around. */
  private async call<T>(path: string, body: unknown): Promise<T> {
    const payload = JSON.stringify(body);
    let lastErr: unknown;
    for (let attempt = 0; attempt < this.endpoints.length; attempt++) {
      const index = (this.current + attempt) % this.endpoints.length;
      const endpoint = this.endpoints[index]!;
      let res: Dispatcher.ResponseData;
      try {
        res = await this.dispatcher.request({
          origin: endpoint,
          path,
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: payload,
          headersTimeout: this.timeoutMs,
          bodyTimeout: this.timeoutMs,
        });
      } catch (err) {
        lastErr = err;
        if (isConnectionError(err)) continue;
        throw new AtrestError('ERR_ETCD', `etcd ${endpoint}${path}: ${(err as Error).message}`, {
          cause: err,
        });
      }
      this.current = index;
      const text = await res.body.text();
      if (res.statusCode !== 200) {
        let message = text.slice(0, 300);
        try {
          const parsed = JSON.parse(text) as { message?: string; error?: string };
          message = parsed.message ?? parsed.error ?? message;
        } catch {
          // not JSON: keep the raw start of the body
        }
        // etcd answers "no leader" / "too many requests" with 503: another member may do better.
        if (res.statusCode === 503 && attempt < this.endpoints.length - 1) {
          lastErr = new Error(message);
          continue;
        }
        throw new AtrestError('ERR_ETCD', `etcd ${endpoint}${path}: HTTP ${res.statusCode}: ${message}`);
      }
      return JSON.parse(text) as T;
    }
    const reason = (lastErr as Error | undefined)?.message ?? 'unknown error';
    throw new AtrestError(
      'ERR_ETCD',
      `no etcd endpoint reachable (${this.endpoints.join(', ')}): ${reason}`,
      { cause: lastErr },
    );
  }

  async range(key: Uint8Array, options: RangeOptions = {}): Promise<RangeResult> {
    const raw = await this.call<RawRange>('/v3/kv/range', {
      key: b64(key),
      ...(options.rangeEnd ? { range_end: b64(options.rangeEnd) } : {}),
      ...(options.limit ? { limit: String(options.limit) } : {}),
      ...(options.keysOnly ? { keys_only: true } : {}),
      ...(options.countOnly ? { count_only: true } : {}),
      ...(options.revision ? { revision: String(options.revision) } : {}),
    });
    return toRange(raw);
  }

  async get(key: Uint8Array): Promise<KeyValue | undefined> {
    return (await this.range(key)).kvs[0];
  }

  async put(key: Uint8Array, value: Uint8Array): Promise<number> {
    const raw = await this.call<{ header?: { revision?: string } }>('/v3/kv/put', {
      key: b64(key),
      value: b64(value),
    });
    return num(raw.header?.revision);
  }

  async delete(key: Uint8Array, rangeEnd?: Uint8Array): Promise<number> {
    const raw = await this.call<{ deleted?: string }>('/v3/kv/deleterange', {
      key: b64(key),
      ...(rangeEnd ? { range_end: b64(rangeEnd) } : {}),
    });
    return num(raw.deleted);
  }

  /**
   * Writes `value` only if the key's mod_revision is still `modRevision`, in one transaction that also
   * reads the key back: on success `current` is what etcd stored, on failure what is there now.
   */
  async compareAndPut(
    key: Uint8Array,
    value: Uint8Array,
    modRevision: number,
  ): Promise<CompareAndPutResult> {
    const k = b64(key);
    const raw = await this.call<RawTxn>('/v3/kv/txn', {
      compare: [{ target: 'MOD', result: 'EQUAL', key: k, mod_revision: String(modRevision) }],
      success: [{ request_put: { key: k, value: b64(value) } }, { request_range: { key: k } }],
      failure: [{ request_range: { key: k } }],
    });
    const succeeded = raw.succeeded === true;
    const ranges = (raw.responses ?? []).map((r) => r.response_range).filter((r) => r !== undefined);
    const last = ranges[ranges.length - 1];
    const kv = last?.kvs?.[0];
    return { succeeded, current: kv ? toKv(kv) : undefined, revision: num(raw.header?.revision) };
  }

  /** One etcd transaction: compare each key's mod_revision; success = put each value and range each key; failure = range each key. */
  async compareAndPutBatch(items: readonly CompareAndPutItem[]): Promise<CompareAndPutBatchResult> {
    const keys = items.map((item) => b64(item.key));
    const raw = await this.call<RawTxn>('/v3/kv/txn', {
      compare: items.map((item, i) => ({
        target: 'MOD',
        result: 'EQUAL',
        key: keys[i],
        mod_revision: String(item.modRevision),
      })),
      success: [
        ...items.map((item, i) => ({ request_put: { key: keys[i], value: b64(item.value) } })),
        ...keys.map((key) => ({ request_range: { key } })),
      ],
      failure: keys.map((key) => ({ request_range: { key } })),
    });
    // Responses follow the branch's ops: on success the puts come first, then one range per item.
    const succeeded = raw.succeeded === true;
    const first = succeeded ? items.length : 0;
    const responses = raw.responses ?? [];
    const current = items.map((_, i) => {
      const kv = responses[first + i]?.response_range?.kvs?.[0];
      return kv ? toKv(kv) : undefined;
    });
    return { succeeded, current, revision: num(raw.header?.revision) };
  }

  async status(): Promise<EtcdStatus> {
    const raw = await this.call<{ version?: string; dbSize?: string; header?: { revision?: string } }>(
      '/v3/maintenance/status',
      {},
    );
    return {
      version: raw.version ?? '',
      dbSize: num(raw.dbSize),
      revision: num(raw.header?.revision),
      endpoint: this.endpoints[this.current]!,
    };
  }

  /**
   * Every key-value under [start, end) in pages of `pageSize`, in key order, each page read at the
   * latest revision (not pinned: a long scan must survive the API server's periodic compaction).
   */
  async *pages(
    start: Uint8Array,
    end: Uint8Array,
    options: { pageSize?: number; keysOnly?: boolean } = {},
  ): AsyncGenerator<KeyValue[]> {
    const limit = options.pageSize ?? 500;
    let from = Buffer.from(start);
    for (;;) {
      const page = await this.range(from, {
        rangeEnd: Buffer.from(end),
        limit,
        ...(options.keysOnly ? { keysOnly: true } : {}),
      });
      if (page.kvs.length === 0) return;
      yield page.kvs;
      if (!page.more) return;
      from = Buffer.from(keyAfter(page.kvs[page.kvs.length - 1]!.key));
    }
  }
}
