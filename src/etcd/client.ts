// An etcd v3 client over etcd's native gRPC API (etcdserverpb.KV Range/Put/DeleteRange/Txn,
// Maintenance Status: protobuf over HTTP/2, see transport.ts and proto/etcd-rpc.ts), with several
// endpoints and failover. Only what scan, rewrite and decrypt need: paged ranges, conditional writes
// (compare mod_revision) and status. No watch, no leases.
//
// Why gRPC and not etcd's JSON gateway: the gateway costs base64 and JSON on both sides and HTTP/1.1
// round trips; scan read at a fifth of etcdctl's rate through it. The protobuf messages are small
// enough to write by hand (only the fields used), so there is still no generated code.

import { AtrestError } from '../errors.js';
import { GRPC_CODE, GrpcStatusError, grpcCodeName } from '../grpc/status.js';
import {
  ETCD_METHOD,
  decodeDeleteRangeResponse,
  decodePutResponse,
  decodeRangeResponse,
  decodeStatusResponse,
  decodeTxnResponse,
  encodeDeleteRangeRequest,
  encodePutRequest,
  encodeRangeRequest,
  encodeStatusRequest,
  encodeTxnRequest,
  type EtcdRangeResponse,
  type EtcdRequestOp,
  type EtcdTxnResponse,
} from '../proto/etcd-rpc.js';
import { CallDeadlineError, EndpointUnreachableError, ResponseTooLargeError, UnaryTransport } from './transport.js';

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
  /**
   * Calls in flight at once (the rewrite concurrency): HTTP/2 streams on the one connection per
   * endpoint; further calls wait their turn. Default 16.
   */
  readonly connections?: number;
  /** Largest response message accepted (default 64 MiB); a page larger than this is re-read in halves. */
  readonly maxResponseBytes?: number;
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
  readonly rangeEnd?: Uint8Array;
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

export interface CompareAndPutItem { readonly key: Uint8Array; readonly value: Uint8Array; readonly modRevision: number }

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


const DEFAULT_TIMEOUT_MS = 5000;
const DEFAULT_CALLS_IN_FLIGHT = 16;
/**
 * Largest response accepted. etcd refuses requests over --max-request-bytes (1.5 MiB by default), so
 * one value is at most that; a 500-value page of ordinary Secrets is 1-3 MiB. A page over the limit
 * is read again in halves (pages()), down to one value a page.
 */
const DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024;

/** The first page when pages are sized by bytes: value sizes are not known yet (the old fixed size). */
const FIRST_PAGE_VALUES = 500;

/** What etcd's own messages mean for the user, added to them (grpc-message text -> hint). */
const ETCD_ERROR_HINTS: readonly (readonly [RegExp, string])[] = [
  [/too many operations in txn request/, "more keys than etcd's --max-txn-ops allows in one transaction (default 128)"],
  [/request is too large/, "larger than etcd's --max-request-bytes (default 1.5 MiB)"],
  [/required revision has been compacted/, 'that revision was compacted away: read again at the latest revision'],
  [/duplicate key given in txn request/, 'a key may appear only once in a transaction'],
];

const METHOD_NAMES: Readonly<Record<string, string>> = {
  [ETCD_METHOD.range]: 'Range',
  [ETCD_METHOD.put]: 'Put',
  [ETCD_METHOD.deleteRange]: 'DeleteRange',
  [ETCD_METHOD.txn]: 'Txn',
  [ETCD_METHOD.status]: 'Status',
};

function etcdError(endpoint: string, method: string, err: GrpcStatusError): AtrestError {
  const text = err.message === '' ? grpcCodeName(err.code) : err.message;
  const hint = ETCD_ERROR_HINTS.find(([re]) => re.test(text))?.[1];
  return new AtrestError('ERR_ETCD', `etcd ${endpoint} ${METHOD_NAMES[method] ?? method}: ${text}${hint ? ` (${hint})` : ''}`, {
    cause: err,
  });
}

/** Our views of etcd's KeyValue are already the public shape. */
function toRangeResult(r: EtcdRangeResponse): RangeResult {
  return { kvs: r.kvs, more: r.more, count: r.count, revision: r.revision };
}

/** The kvs[0] of the n-th range response of a transaction, or undefined (no such key). */
function rangeKv(txn: EtcdTxnResponse, index: number): KeyValue | undefined {
  const op = txn.responses[index];
  return op?.kind === 'range' ? op.range.kvs[0] : undefined;
}

export class EtcdClient {
  readonly endpoints: readonly string[];
  private readonly transport: UnaryTransport;
  private readonly timeoutMs: number;
  private current = 0;

  constructor(options: EtcdClientOptions) {
    if (options.endpoints.length === 0) throw new AtrestError('ERR_ETCD', 'no etcd endpoints given');
    this.endpoints = options.endpoints.map(normaliseEndpoint);
    for (const e of this.endpoints) {
      if (!/^https?:\/\//i.test(e)) {
        throw new AtrestError('ERR_ETCD', `etcd endpoint ${e}: only http:// and https:// are supported`);
      }
    }
    this.timeoutMs = options.requestTimeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.transport = new UnaryTransport({
      tls: options.tls,
      maxStreams: options.connections ?? DEFAULT_CALLS_IN_FLIGHT,
      maxResponseBytes: options.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES,
    });
  }

  async close(): Promise<void> {
    await this.transport.close();
  }

  /** Calls the current endpoint; when it cannot be reached (or has no leader) moves on, once around. */
  private async call<T>(method: string, message: Uint8Array, decode: (data: Buffer) => T): Promise<T> {
    let lastErr: unknown;
    const n = this.endpoints.length;
    for (let attempt = 0; attempt < n; attempt++) {
      const index = (this.current + attempt) % n;
      const endpoint = this.endpoints[index]!;
      let data: Buffer;
      try {
        data = await this.transport.unary(endpoint, method, message, this.timeoutMs);
      } catch (err) {
        if (err instanceof EndpointUnreachableError || err instanceof CallDeadlineError) {
          lastErr = new Error(`${endpoint}: ${err.message}`, { cause: err });
          continue;
        }
        // "etcdserver: no leader", "too many requests": another member may do better.
        if (err instanceof GrpcStatusError && err.code === GRPC_CODE.UNAVAILABLE && attempt < n - 1) {
          lastErr = err;
          continue;
        }
        if (err instanceof GrpcStatusError) throw etcdError(endpoint, method, err);
        throw err;
      }
      this.current = index;
      try {
        return decode(data);
      } catch (err) {
        throw new AtrestError('ERR_ETCD', `etcd ${endpoint} ${METHOD_NAMES[method] ?? method}: ${(err as Error).message}`, {
          cause: err,
        });
      }
    }
    const reason = (lastErr as Error | undefined)?.message ?? 'unknown error';
    throw new AtrestError('ERR_ETCD', `no etcd endpoint reachable (${this.endpoints.join(', ')}): ${reason}`, {
      cause: lastErr,
    });
  }

  async range(key: Uint8Array, options: RangeOptions = {}): Promise<RangeResult> {
    const message = encodeRangeRequest({
      key,
      rangeEnd: options.rangeEnd,
      limit: options.limit,
      revision: options.revision,
      keysOnly: options.keysOnly,
      countOnly: options.countOnly,
    });
    return toRangeResult(await this.call(ETCD_METHOD.range, message, decodeRangeResponse));
  }

  async get(key: Uint8Array): Promise<KeyValue | undefined> {
    return (await this.range(key)).kvs[0];
  }

  async put(key: Uint8Array, value: Uint8Array): Promise<number> {
    return (await this.call(ETCD_METHOD.put, encodePutRequest(key, value), decodePutResponse)).revision;
  }

  async delete(key: Uint8Array, rangeEnd?: Uint8Array): Promise<number> {
    const message = encodeDeleteRangeRequest(key, rangeEnd);
    return (await this.call(ETCD_METHOD.deleteRange, message, decodeDeleteRangeResponse)).deleted;
  }

  /**
   * Writes `value` only if the key's mod_revision is still `modRevision`, in one transaction that also
   * reads the key back: on success `current` is what etcd stored, on failure what is there now.
   */
  async compareAndPut(key: Uint8Array, value: Uint8Array, modRevision: number): Promise<CompareAndPutResult> {
    const txn = await this.txn({
      compare: [{ key, modRevision }],
      success: [{ put: { key, value } }, { range: { key } }],
      failure: [{ range: { key } }],
    });
    return { succeeded: txn.succeeded, current: rangeKv(txn, txn.succeeded ? 1 : 0), revision: txn.revision };
  }

  /**
   * One etcd transaction: compare each key's mod_revision; success = put each value and range each
   * key; failure = range each key. etcd caps each of the three lists at --max-txn-ops (default 128),
   * so success (two operations an item) allows at most 64 items by default.
   */
  async compareAndPutBatch(items: readonly CompareAndPutItem[]): Promise<CompareAndPutBatchResult> {
    const puts: EtcdRequestOp[] = items.map(({ key, value }) => ({ put: { key, value } }));
    const ranges: EtcdRequestOp[] = items.map(({ key }) => ({ range: { key } }));
    const txn = await this.txn({
      compare: items.map(({ key, modRevision }) => ({ key, modRevision })),
      success: [...puts, ...ranges],
      failure: ranges,
    });
    const first = txn.succeeded ? items.length : 0;
    return {
      succeeded: txn.succeeded,
      current: items.map((_, i) => rangeKv(txn, first + i)),
      revision: txn.revision,
    };
  }

  private txn(request: Parameters<typeof encodeTxnRequest>[0]): Promise<EtcdTxnResponse> {
    return this.call(ETCD_METHOD.txn, encodeTxnRequest(request), decodeTxnResponse);
  }

  async status(): Promise<EtcdStatus> {
    const raw = await this.call(ETCD_METHOD.status, encodeStatusRequest(), decodeStatusResponse);
    return { version: raw.version, dbSize: raw.dbSize, revision: raw.revision, endpoint: this.endpoints[this.current]! };
  }

  /**
   * Every key-value under [start, end) in pages, in key order, each page read at the latest revision
   * (not pinned: a long scan must survive the API server's periodic compaction).
   *
   * `pageSize` is the most values a page holds (default 500). With `pageBytes`, pages are sized by
   * bytes instead: the first holds at most FIRST_PAGE_VALUES, each next one as many values as fit
   * `pageBytes` at the previous page's average size (never more than pageSize). Fewer, larger pages
   * matter: etcd counts the whole rest of the range for every limited Range, so its cost grows with
   * the number of pages. A page whose response exceeds the size limit is read again with half the
   * limit, down to one value.
   */
  async *pages(
    start: Uint8Array,
    end: Uint8Array,
    options: { pageSize?: number; pageBytes?: number; keysOnly?: boolean } = {},
  ): AsyncGenerator<KeyValue[]> {
    const maxValues = options.pageSize ?? 500;
    const pageBytes = options.pageBytes;
    let limit = pageBytes === undefined ? maxValues : Math.min(maxValues, FIRST_PAGE_VALUES);
    let from: Uint8Array = start;
    for (;;) {
      let page: RangeResult;
      try {
        page = await this.range(from, { rangeEnd: end, limit, ...(options.keysOnly ? { keysOnly: true } : {}) });
      } catch (err) {
        if (limit > 1 && err instanceof AtrestError && err.cause instanceof ResponseTooLargeError) {
          limit = Math.ceil(limit / 2);
          continue;
        }
        throw err;
      }
      const kvs = page.kvs;
      if (kvs.length === 0) return;
      yield kvs;
      if (!page.more) return;
      from = keyAfter(kvs[kvs.length - 1]!.key);
      if (pageBytes !== undefined) {
        let bytes = 0;
        for (const kv of kvs) bytes += kv.key.length + kv.value.length;
        const average = Math.max(1, bytes / kvs.length);
        limit = Math.max(1, Math.min(maxValues, Math.floor(pageBytes / average)));
      }
    }
  }
}
