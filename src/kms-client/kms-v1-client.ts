// The KMS v1beta1 client as kube-apiserver uses it: a Version check before the first Encrypt or
// Decrypt (once per client after it succeeds, retried after a failure), requests carrying
// version "v1beta1", each call bounded by the provider timeout, as k8s.io/apiserver's envelope service does.

import { AtrestError } from '../errors.js';
import {
  DecryptRequest,
  DecryptResponse,
  EncryptRequest,
  EncryptResponse,
  V1BETA1_API_VERSION,
  V1BETA1_METHODS,
  VersionRequest,
  VersionResponse,
} from '../proto/kms-v1beta1.js';
import type { KmsV1Service } from '../transformers/kms-services.js';
import { callKms, dialKms } from './call.js';

export interface KmsClientOptions {
  /** unix:///path/to/socket or unix:///@abstract, parsed as kube-apiserver does. */
  readonly endpoint: string;
  /** Deadline of each call (the provider's `timeout`; kube-apiserver's default is 3 s). */
  readonly timeoutMs: number;
  /** :authority to send (default 'localhost'). */
  readonly authority?: string;
}

export interface KmsVersion {
  readonly version: string;
  readonly runtimeName: string;
  readonly runtimeVersion: string;
}

export interface KmsV1Client extends KmsV1Service {
  version(): Promise<KmsVersion>;
  close(): Promise<void>;
}

export function createKmsV1Client(options: KmsClientOptions): KmsV1Client {
  const grpc = dialKms(options.endpoint, options.authority);
  const { timeoutMs } = options;
  let checked = false;
  let checking: Promise<void> | undefined;

  async function version(): Promise<KmsVersion> {
    const r = await callKms(grpc, V1BETA1_METHODS.version, VersionRequest, { version: V1BETA1_API_VERSION }, VersionResponse, timeoutMs);
    return { version: r.version, runtimeName: r.runtime_name, runtimeVersion: r.runtime_version };
  }

  async function check(): Promise<void> {
    let got: KmsVersion;
    try {
      got = await version();
    } catch (err) {
      throw new AtrestError(
        'ERR_KMS_CALL_FAILED',
        `failed get version from remote KMS provider: ${(err as Error).message}`,
        { cause: err },
      );
    }
    if (got.version !== V1BETA1_API_VERSION) {
      throw new AtrestError(
        'ERR_KMS_VERSION',
        `KMS provider api version ${got.version} is not supported, only ${V1BETA1_API_VERSION} is supported now`,
      );
    }
    checked = true;
  }

  /** One Version check at a time; concurrent first calls share it. */
  function ensureVersion(): Promise<void> | undefined {
    if (checked) return undefined;
    checking ??= check().finally(() => {
      checking = undefined;
    });
    return checking;
  }

  return {
    version,
    async encrypt(plain) {
      await ensureVersion();
      const r = await callKms(grpc, V1BETA1_METHODS.encrypt, EncryptRequest, { version: V1BETA1_API_VERSION, plain }, EncryptResponse, timeoutMs);
      return r.cipher;
    },
    async decrypt(cipher) {
      await ensureVersion();
      const r = await callKms(grpc, V1BETA1_METHODS.decrypt, DecryptRequest, { version: V1BETA1_API_VERSION, cipher }, DecryptResponse, timeoutMs);
      return r.plain;
    },
    close: () => grpc.close(),
  };
}
