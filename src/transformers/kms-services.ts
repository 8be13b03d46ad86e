// What the kms v1 and kms v2 formats need from a KMS plugin, as plain async functions, and how a
// failed call is reported. Implemented by src/kms-client/ over a UNIX socket (and by tests); the
// formats never see gRPC.

import { AtrestError } from '../errors.js';

/** KMS v1beta1: the plugin's Encrypt/Decrypt (the client does its Version check itself). */
export interface KmsV1Service {
  encrypt(plain: Uint8Array): Promise<Buffer>;
  decrypt(cipher: Uint8Array): Promise<Buffer>;
}

export interface KmsV2Status {
  readonly version: string;
  readonly healthz: string;
  readonly keyID: string;
}

export interface KmsV2EncryptResult {
  readonly ciphertext: Buffer;
  readonly keyID: string;
  readonly annotations: Readonly<Record<string, Buffer>>;
}

export interface KmsV2DecryptRequest {
  readonly ciphertext: Uint8Array;
  readonly uid: string;
  readonly keyID: string;
  readonly annotations: Readonly<Record<string, Uint8Array>>;
}

/** KMS v2: Status, Encrypt (of a 32-byte seed) and Decrypt, each with the caller's uid. */
export interface KmsV2Service {
  status(): Promise<KmsV2Status>;
  encrypt(plaintext: Uint8Array, uid: string): Promise<KmsV2EncryptResult>;
  decrypt(request: KmsV2DecryptRequest): Promise<Buffer>;
}

/** A plugin call failed: `<what>, error: <reason>`, the wording kube-apiserver logs; cause kept. */
export function kmsCallFailed(what: string, cause: unknown): AtrestError {
  const reason = cause instanceof Error ? cause.message : String(cause);
  return new AtrestError('ERR_KMS_CALL_FAILED', `${what}, error: ${reason}`, { cause });
}
