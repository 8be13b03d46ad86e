// The one error catalog: every error atrest raises on purpose carries a stable ERR_* code.
// Errors become gRPC statuses only in src/kms/server.ts and exit codes only in src/cli/.
// No message built here may carry key material, a DEK, plaintext or a whole ciphertext.

export type ErrorCode =
  // configuration files and flags
  | 'ERR_CONFIG_INVALID'
  | 'ERR_CONFIG_UNREADABLE'
  // stored values and wire messages
  | 'ERR_FORMAT_PREFIX'
  | 'ERR_FORMAT_TRUNCATED'
  | 'ERR_FORMAT_MALFORMED'
  | 'ERR_FORMAT_NO_MATCHING_PROVIDER'
  | 'ERR_PROTO_MALFORMED'
  // cryptography
  | 'ERR_DECRYPTION_FAILED'
  | 'ERR_KEY_UNKNOWN'
  | 'ERR_KEY_ID_MISMATCH'
  | 'ERR_RECOVERY_NO_SEAL'
  // the plugin's request validation
  | 'ERR_REQUEST_INVALID'
  | 'ERR_REQUEST_TOO_LARGE'
  | 'ERR_UNHEALTHY'
  // key backends
  | 'ERR_BACKEND'
  // keyrings
  | 'ERR_KEYRING_INVALID'
  | 'ERR_KEYRING_PERMISSIONS'
  | 'ERR_KEYRING_EXISTS'
  | 'ERR_KEYRING_MISSING'
  // the unix socket
  | 'ERR_SOCKET_IN_USE'
  | 'ERR_SOCKET_NOT_A_SOCKET'
  | 'ERR_SOCKET_ENDPOINT'
  // KMS clients (the API server side)
  | 'ERR_KMS_CALL_FAILED'
  | 'ERR_KMS_VERSION'
  | 'ERR_KMS_STATE'
  | 'ERR_KMS_RESPONSE_INVALID'
  // etcd and the API
  | 'ERR_ETCD'
  | 'ERR_ETCD_CONFLICT'
  | 'ERR_API'
  | 'ERR_CHECKPOINT_INVALID'
  | 'ERR_SELECTION_EMPTY'
  | 'ERR_APISERVER_KEY_ID'
  // anything we chose not to do
  | 'ERR_NOT_SUPPORTED';

export class AtrestError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** One problem in a configuration file, with the field path it is about. */
export interface ConfigProblem {
  /** e.g. `resources[0].providers[1].aescbc.keys[0].secret` */
  readonly path: string;
  readonly message: string;
}

/** A configuration that failed validation: carries every problem found, not just the first. */
export class ConfigInvalidError extends AtrestError {
  readonly problems: readonly ConfigProblem[];

  constructor(source: string, problems: readonly ConfigProblem[]) {
    super(
      'ERR_CONFIG_INVALID',
      `${source} is invalid:\n` + problems.map((p) => `  ${p.path}: ${p.message}`).join('\n'),
    );
    this.problems = problems;
  }
}

/** A stored value or wire message that does not have the expected shape (prefix, length, fields). */
export class FormatInvalidError extends AtrestError {
  constructor(
    code: Extract<
      ErrorCode,
      | 'ERR_FORMAT_PREFIX'
      | 'ERR_FORMAT_TRUNCATED'
      | 'ERR_FORMAT_MALFORMED'
      | 'ERR_FORMAT_NO_MATCHING_PROVIDER'
      | 'ERR_PROTO_MALFORMED'
    >,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
  }
}

/**
 * Authenticated decryption failed. The message is deliberately generic: whether the key, the nonce,
 * the tag or the body was wrong is not revealed. The cause is kept for logs only.
 */
export class DecryptionFailedError extends AtrestError {
  constructor(options?: { cause?: unknown }) {
    super('ERR_DECRYPTION_FAILED', 'decryption failed', options);
  }
}

/** What went wrong at a key backend; the kind decides the gRPC code, retries, metrics and health. */
export type BackendErrorKind = 'user-induced' | 'throttled' | 'unavailable' | 'corruption' | 'other';

export class BackendError extends AtrestError {
  readonly kind: BackendErrorKind;
  readonly backend: string;

  constructor(
    backend: string,
    kind: BackendErrorKind,
    message: string,
    options?: { cause?: unknown },
  ) {
    super('ERR_BACKEND', `${backend}: ${message}`, options);
    this.kind = kind;
    this.backend = backend;
  }
}

export class NotSupportedError extends AtrestError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_NOT_SUPPORTED', message, options);
  }
}

export function isAtrestError(err: unknown): err is AtrestError {
  return err instanceof AtrestError;
}
