// KmsService: the plugin's behaviour on plain types (v1beta1 Version/Encrypt/Decrypt, v2
// Status/Encrypt/Decrypt) over one KeyBackend, plus the background wrap/unwrap self-test that makes
// Status cheap. No gRPC here: server.ts decodes requests, calls this and maps errors to statuses.

import { randomBytes } from 'node:crypto';
import {
  AtrestError,
  BackendError,
  DecryptionFailedError,
  FormatInvalidError,
  type BackendErrorKind,
} from '../errors.js';
import { bytesEqual } from '../bytes.js';
import type { KeyBackend, UnwrapRequest, WrapRequest, Wrapped } from '../backends/backend.js';
import { isFullyQualifiedDomainName, validateAnnotations } from '../transformers/kms-v2-validation.js';
import type {
  KmsV2DecryptRequest,
  KmsV2EncryptResult,
  KmsV2Status,
} from '../transformers/kms-services.js';
import { V1BETA1_API_VERSION } from '../proto/kms-v1beta1.js';
import {
  DEFAULT_V2_STATUS_VERSION,
  V2_CIPHERTEXT_MAX_BYTES,
  V2_HEALTHZ_OK,
  V2_KEY_ID_MAX_BYTES,
  type V2StatusVersion,
} from '../proto/kms-v2.js';
import type { Logger } from '../logger.js';

export const RUNTIME_NAME = 'atrest';

export type BackendOperation = 'wrap' | 'unwrap';
/** ok, or the kind of failure: bounded, so it can be a metrics label. */
export type BackendOutcome = 'ok' | BackendErrorKind;

/** What the service reports to metrics; the CLI wires it to src/health/. */
export interface KmsObserver {
  backendOperation(operation: BackendOperation, outcome: BackendOutcome, seconds: number): void;
  selfTest(ok: boolean, atMs: number): void;
  activeKeyID(keyID: string): void;
}

export interface KmsServiceOptions {
  readonly backend: KeyBackend;
  /** Package version, answered as v1beta1 runtime_version. */
  readonly version: string;
  readonly logger: Logger;
  readonly observer?: KmsObserver;
  /** The version v2 Status answers (default "v2beta1": accepted by every API server from 1.27 on). */
  readonly statusVersion?: V2StatusVersion;
  /** Milliseconds since the epoch (injected for tests). */
  readonly now?: () => number;
  readonly random?: (n: number) => Buffer;
  /** Self-test period while healthy (default 30 s: twice per kube-apiserver Status poll). */
  readonly selfTestIntervalMs?: number;
  /** Self-test period after a failure (default 5 s). */
  readonly selfTestRetryMs?: number;
  /** A passing self-test older than this no longer counts (default 2 × interval + 10 s). */
  readonly selfTestMaxAgeMs?: number;
}

export interface VersionResult {
  readonly version: string;
  readonly runtimeName: string;
  readonly runtimeVersion: string;
}

// v2 answers and requests have the shapes the kms v2 format uses (one definition of each).
export type StatusResult = KmsV2Status;
export type EncryptResult = KmsV2EncryptResult;
export type DecryptInput = KmsV2DecryptRequest;

export interface SelfTestState {
  /** True when the latest self-test passed and is younger than the max age. */
  readonly healthy: boolean;
  readonly lastRunMs: number | undefined;
  readonly lastSuccessMs: number | undefined;
  /** Why it is not healthy (no secrets; echoed in Status healthz and /readyz). */
  readonly reason: string;
}

/**
 * Per-call context: `signal` is aborted when the caller gives up, and handed to the backend. Pass an
 * object whose `signal` is a getter (the gRPC call is one) so it is only created if a backend reads it.
 */
export interface CallOptions {
  readonly signal?: AbortSignal;
}

export interface KmsService {
  version(requestVersion: string): VersionResult;
  encryptV1(requestVersion: string, plain: Uint8Array, call?: CallOptions): Promise<Buffer>;
  decryptV1(requestVersion: string, cipher: Uint8Array, call?: CallOptions): Promise<Buffer>;
  status(): Promise<StatusResult>;
  encrypt(plaintext: Uint8Array, uid: string, call?: CallOptions): Promise<EncryptResult>;
  decrypt(input: DecryptInput, call?: CallOptions): Promise<Buffer>;
  /** Runs one wrap/unwrap round trip now and records the result. */
  selfTest(): Promise<SelfTestState>;
  selfTestState(): SelfTestState;
  /** Re-reads the backend's keys (SIGHUP); on failure the old keys stay. Then self-tests. */
  reload(): Promise<void>;
  /** Starts the background self-test loop (first run immediately). */
  start(): Promise<void>;
  stop(): void;
}

// The requests handed to the backend on every RPC. Classes, not object literals with a `get signal()`:
// a literal's getter is a new closure (and accessor pair) per call; here the getter lives once on the
// prototype and the AbortSignal is still only created when a backend reads it. (Nothing spreads a
// request: spreading would drop a prototype getter.)
class ServiceWrapRequest implements WrapRequest {
  readonly plaintext: Uint8Array;
  readonly uid: string | undefined;
  readonly annotationsAllowed: boolean;
  readonly #call: CallOptions | undefined;
  constructor(
    plaintext: Uint8Array,
    uid: string | undefined,
    annotationsAllowed: boolean,
    call: CallOptions | undefined,
  ) {
    this.plaintext = plaintext;
    this.uid = uid;
    this.annotationsAllowed = annotationsAllowed;
    this.#call = call;
  }
  get signal(): AbortSignal | undefined {
    return this.#call?.signal;
  }
}

class ServiceUnwrapRequest implements UnwrapRequest {
  readonly ciphertext: Uint8Array;
  readonly keyID: string | undefined;
  readonly annotations: Readonly<Record<string, Uint8Array>> | undefined;
  readonly uid: string | undefined;
  readonly #call: CallOptions | undefined;
  constructor(
    ciphertext: Uint8Array,
    keyID: string | undefined,
    annotations: Readonly<Record<string, Uint8Array>> | undefined,
    uid: string | undefined,
    call: CallOptions | undefined,
  ) {
    this.ciphertext = ciphertext;
    this.keyID = keyID;
    this.annotations = annotations;
    this.uid = uid;
    this.#call = call;
  }
  get signal(): AbortSignal | undefined {
    return this.#call?.signal;
  }
}

function requestInvalid(message: string): AtrestError {
  return new AtrestError('ERR_REQUEST_INVALID', message);
}

// The plugin refuses to answer what kube-apiserver would refuse: the same checks as the kms v2 format.
export { isFullyQualifiedDomainName, validateAnnotations };

export function classifyBackendError(err: unknown): BackendErrorKind {
  if (err instanceof BackendError) return err.kind;
  if (err instanceof DecryptionFailedError) return 'corruption';
  if (err instanceof FormatInvalidError) return 'user-induced';
  if (
    err instanceof AtrestError &&
    (err.code === 'ERR_KEY_UNKNOWN' || err.code === 'ERR_KEY_ID_MISMATCH')
  ) {
    return 'user-induced';
  }
  return 'other';
}

function shortReason(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  return msg.length > 200 ? msg.slice(0, 200) + '…' : msg;
}

export function createKmsService(options: KmsServiceOptions): KmsService {
  const { backend, logger, observer } = options;
  const now = options.now ?? Date.now;
  const random = options.random ?? randomBytes;
  const statusVersion = options.statusVersion ?? DEFAULT_V2_STATUS_VERSION;
  const intervalMs = options.selfTestIntervalMs ?? 30_000;
  const retryMs = options.selfTestRetryMs ?? 5_000;
  const maxAgeMs = options.selfTestMaxAgeMs ?? 2 * intervalMs + 10_000;

  let lastRunMs: number | undefined;
  let lastSuccessMs: number | undefined;
  let lastOk = false;
  let lastReason = 'self-test has not run yet';
  let lastKeyID: string | undefined;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<SelfTestState> | undefined;
  let stopped = false;

  // Every backend call is timed; a backend that throws instead of rejecting is caught and counted the
  // same way. The v2 Encrypt (wrapChecked) and Decrypt time inline, in their own async function (no
  // extra async layer per call on the API server's v2 path); every other caller uses timedWrap or
  // timedUnwrap.
  function observed(operation: BackendOperation, started: number): void {
    observer?.backendOperation(operation, 'ok', (performance.now() - started) / 1000);
  }

  function observedFailure(operation: BackendOperation, started: number, err: unknown): void {
    observer?.backendOperation(operation, classifyBackendError(err), (performance.now() - started) / 1000);
  }

  async function timedWrap(request: WrapRequest): Promise<Wrapped> {
    const started = performance.now();
    try {
      const wrapped = await backend.wrap(request);
      observed('wrap', started);
      return wrapped;
    } catch (err) {
      observedFailure('wrap', started, err);
      throw err;
    }
  }

  async function timedUnwrap(request: UnwrapRequest): Promise<Buffer> {
    const started = performance.now();
    try {
      const plain = await backend.unwrap(request);
      observed('unwrap', started);
      return plain;
    } catch (err) {
      observedFailure('unwrap', started, err);
      throw err;
    }
  }

  function noteKeyID(keyID: string): void {
    if (keyID !== lastKeyID) {
      lastKeyID = keyID;
      observer?.activeKeyID(keyID);
    }
  }

  function state(): SelfTestState {
    const fresh = lastSuccessMs !== undefined && now() - lastSuccessMs <= maxAgeMs;
    // Remote backends also keep their own view of the key manager (refreshed in the background).
    const remote = backend.health?.();
    const healthy = lastOk && fresh && (remote?.ok ?? true);
    let reason = V2_HEALTHZ_OK;
    if (!lastOk) reason = lastReason;
    else if (!fresh)
      reason = `last successful self-test is older than ${Math.round(maxAgeMs / 1000)}s`;
    else if (remote !== undefined && !remote.ok) reason = `${backend.name}: ${remote.message}`;
    return { healthy, lastRunMs, lastSuccessMs, reason: healthy ? V2_HEALTHZ_OK : reason };
  }

  async function wrapChecked(
    plaintext: Uint8Array,
    uid: string,
    call?: CallOptions,
  ): Promise<EncryptResult> {
    // v2: annotations are stored next to the ciphertext and handed back on Decrypt.
    if (plaintext.length === 0) throw requestInvalid('plaintext is empty; nothing to encrypt');
    const started = performance.now();
    let wrapped: Wrapped;
    try {
      wrapped = await backend.wrap(new ServiceWrapRequest(plaintext, uid, true, call));
      observed('wrap', started);
    } catch (err) {
      observedFailure('wrap', started, err);
      throw err;
    }
    const annotations = wrapped.annotations ?? {};
    const keyIDBytes = Buffer.byteLength(wrapped.keyID, 'utf8');
    // The API server enforces these on every answer; an answer that breaks them is never sent.
    if (wrapped.ciphertext.length > V2_CIPHERTEXT_MAX_BYTES) {
      throw new AtrestError(
        'ERR_REQUEST_TOO_LARGE',
        `the wrapped plaintext would be ${wrapped.ciphertext.length} bytes, more than the ` +
          `${V2_CIPHERTEXT_MAX_BYTES} kube-apiserver accepts (plaintext is ${plaintext.length} bytes)`,
      );
    }
    const problems: string[] = [];
    if (wrapped.ciphertext.length === 0) problems.push('empty ciphertext');
    if (keyIDBytes === 0 || keyIDBytes > V2_KEY_ID_MAX_BYTES) {
      problems.push(`key id is ${keyIDBytes} bytes (must be 1..${V2_KEY_ID_MAX_BYTES})`);
    }
    problems.push(...validateAnnotations(annotations));
    if (problems.length > 0) {
      throw new BackendError(backend.name, 'other', `invalid wrap result: ${problems.join('; ')}`);
    }
    noteKeyID(wrapped.keyID);
    return { ciphertext: wrapped.ciphertext, keyID: wrapped.keyID, annotations };
  }

  async function runSelfTest(): Promise<SelfTestState> {
    const at = now();
    try {
      const probe = random(32);
      const wrapped = await wrapChecked(probe, 'atrest-self-test');
      const back = await timedUnwrap({
        ciphertext: wrapped.ciphertext,
        keyID: wrapped.keyID,
        annotations: wrapped.annotations,
        uid: 'atrest-self-test',
      });
      if (!bytesEqual(back, probe))
        throw new Error('unwrap returned different bytes than were wrapped');
      lastOk = true;
      lastSuccessMs = at;
      if (lastReason !== V2_HEALTHZ_OK) logger.info('self-test passed', { keyID: wrapped.keyID });
      lastReason = V2_HEALTHZ_OK;
    } catch (err) {
      const reason = `self-test failed: ${shortReason(err)}`;
      if (lastOk || reason !== lastReason) {
        logger.error('self-test failed', { backend: backend.name, error: shortReason(err) });
      }
      lastOk = false;
      lastReason = reason;
    }
    lastRunMs = at;
    observer?.selfTest(lastOk, at);
    return state();
  }

  function selfTest(): Promise<SelfTestState> {
    // One run at a time; callers arriving meanwhile share it.
    running ??= runSelfTest().finally(() => {
      running = undefined;
    });
    return running;
  }

  function schedule(): void {
    if (stopped) return;
    timer = setTimeout(
      () => {
        void selfTest().then(schedule);
      },
      lastOk ? intervalMs : retryMs,
    );
    timer.unref();
  }

  function checkV1Version(requestVersion: string): void {
    if (requestVersion !== V1BETA1_API_VERSION) {
      throw requestInvalid(
        `unsupported KMS API version "${requestVersion}"; this plugin speaks ${V1BETA1_API_VERSION}`,
      );
    }
  }

  return {
    version(requestVersion) {
      checkV1Version(requestVersion);
      return {
        version: V1BETA1_API_VERSION,
        runtimeName: RUNTIME_NAME,
        runtimeVersion: options.version,
      };
    },

    async encryptV1(requestVersion, plain, call) {
      checkV1Version(requestVersion);
      if (plain.length === 0) throw requestInvalid('plain is empty; nothing to encrypt');
      const wrapped = await timedWrap(new ServiceWrapRequest(plain, undefined, false, call));
      noteKeyID(wrapped.keyID);
      return wrapped.ciphertext;
    },

    async decryptV1(requestVersion, cipher, call) {
      checkV1Version(requestVersion);
      if (cipher.length === 0) throw requestInvalid('cipher is empty; nothing to decrypt');
      return timedUnwrap(new ServiceUnwrapRequest(cipher, undefined, undefined, undefined, call));
    },

    async status() {
      const keyID = await backend.currentKeyID();
      noteKeyID(keyID);
      return { version: statusVersion, healthz: state().reason, keyID };
    },

    // wrapChecked refuses an empty plaintext itself: one async layer less per Encrypt.
    encrypt: wrapChecked,

    async decrypt(input, call) {
      if (input.ciphertext.length === 0)
        throw requestInvalid('ciphertext is empty; nothing to decrypt');
      if (input.keyID.length === 0) throw requestInvalid('key_id is empty');
      const started = performance.now();
      try {
        const plain = await backend.unwrap(
          new ServiceUnwrapRequest(input.ciphertext, input.keyID, input.annotations, input.uid, call),
        );
        observed('unwrap', started);
        return plain;
      } catch (err) {
        observedFailure('unwrap', started, err);
        throw err;
      }
    },

    selfTest,
    selfTestState: state,

    async reload() {
      await backend.reload();
      const keyID = await backend.currentKeyID();
      noteKeyID(keyID);
      await selfTest();
    },

    async start() {
      stopped = false;
      await selfTest();
      schedule();
    },

    stop() {
      stopped = true;
      if (timer !== undefined) clearTimeout(timer);
    },
  };
}
