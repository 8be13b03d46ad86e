// The transformer contract shared by every storage format: what kube-apiserver calls
// TransformToStorage / TransformFromStorage. Pure: implementations do no I/O of their own (the kms
// formats reach their plugin only through the injected services in kms-services.ts).

/** Per-value context: the exact etcd key bytes, used as AES-GCM authenticated data. */
export interface TransformContext {
  readonly authenticatedData: Uint8Array;
}

export interface FromStorageResult {
  readonly data: Buffer;
  /** True when a rewrite would store it differently (not the first provider/key, old key id, ...). */
  readonly stale: boolean;
}

export interface Transformer {
  transformFromStorage(data: Uint8Array, context: TransformContext): Promise<FromStorageResult>;
  transformToStorage(data: Uint8Array, context: TransformContext): Promise<Buffer>;
}
