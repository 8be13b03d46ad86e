// The one interface every key-encryption-key backend implements (keyring, PKCS#11, AWS KMS, Vault
// Transit). The plugin (src/kms/) sees only this; each backend turns its SDK's errors into a
// BackendError (src/errors.ts) at its own edge.

/** What a wrap produced: everything needed to unwrap it later, none of it secret. */
export interface Wrapped {
  /** Opaque bytes; for v1beta1 this alone must be enough to unwrap (v1 Decrypt has no key id). */
  readonly ciphertext: Buffer;
  /** The id of the key that wrapped; stable, never reused for other key material, no secret in it. */
  readonly keyID: string;
  /** Extra non-secret data the backend needs back on unwrap (v2 annotations; FQDN keys). */
  readonly annotations?: Readonly<Record<string, Buffer>>;
}

export interface UnwrapRequest {
  readonly ciphertext: Uint8Array;
  /** From the v2 DecryptRequest; absent for v1beta1. A backend refuses one that disagrees. */
  readonly keyID?: string;
  readonly annotations?: Readonly<Record<string, Uint8Array>>;
  /** Request id for logs only; never trusted. */
  readonly uid?: string;
  /** See WrapRequest.signal. */
  readonly signal?: AbortSignal;
}

export interface WrapRequest {
  readonly plaintext: Uint8Array;
  readonly uid?: string;
  /**
   * True for v2 Encrypt (whose annotations are stored and given back on Decrypt): the backend may
   * then carry non-secret data in annotations rather than in the ciphertext. Absent/false for v1beta1.
   */
  readonly annotationsAllowed?: boolean;
  /**
   * Aborted when the caller gives up (the gRPC client cancelled, its deadline passed, the connection
   * closed): a remote backend stops its call to the key manager; a local one may ignore it. Read it
   * only when it is used: the plugin creates the AbortSignal on first read.
   */
  readonly signal?: AbortSignal;
}

/** A remote backend's latest view of its key manager, for /healthz, /readyz and v2 Status. */
export interface BackendHealth {
  readonly ok: boolean;
  /** Set when not ok: decides liveness (never for user-induced/throttled), metrics and the message. */
  readonly kind?: 'user-induced' | 'throttled' | 'unavailable' | 'corruption' | 'other';
  /** Something an operator can act on; never a secret. */
  readonly message: string;
  /** When the key manager last answered (ms since the epoch), if ever. */
  readonly lastSuccessMs?: number;
  readonly checkedAtMs?: number;
}

export interface KeyBackend {
  /** Short stable name used in logs and metrics labels: `keyring`, `pkcs11`, `aws-kms`, `vault-transit`. */
  readonly name: string;
  /** The key id a wrap would use now. Cheap enough for every Status call (may be cached). */
  currentKeyID(): Promise<string>;
  wrap(request: WrapRequest): Promise<Wrapped>;
  unwrap(request: UnwrapRequest): Promise<Buffer>;
  /** Re-read keys or configuration (SIGHUP). A failure leaves the previous keys in service. */
  reload(): Promise<void>;
  close(): Promise<void>;
  /** Remote backends: the key manager's latest state, kept by a background refresh. Cheap, no I/O. */
  health?(): BackendHealth;
  /**
   * The loaded key set, for /metrics: a fingerprint that is equal on every node holding the same keys
   * and reveals none of them (keyring: keyring-check.ts), and how many keys it holds. Cheap, no I/O.
   */
  keySet?(): { readonly fingerprint: string; readonly keys: number };
}
