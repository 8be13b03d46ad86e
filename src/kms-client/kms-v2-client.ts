// The KMS v2 client as kube-apiserver uses it: Status, Encrypt and Decrypt with the caller's uid.
// It returns what the plugin said; validating key_id, ciphertext and annotation limits is the kms v2
// format's job (src/transformers/), as it is in kube-apiserver.

import { randomUUID } from 'node:crypto';
import {
  DecryptRequest,
  DecryptResponse,
  EncryptRequest,
  EncryptResponse,
  StatusRequest,
  StatusResponse,
  V2_METHODS,
} from '../proto/kms-v2.js';
import type { KmsV2Service } from '../transformers/kms-services.js';
import { callKms, dialKms } from './call.js';
import type { KmsClientOptions } from './kms-v1-client.js';

export interface KmsV2Client extends KmsV2Service {
  close(): Promise<void>;
}

/** A request id for a v2 call: a random (version 4) UUID, lowercase and hyphenated, as upstream. */
export function newUID(): string {
  return randomUUID();
}

export function createKmsV2Client(options: KmsClientOptions): KmsV2Client {
  const grpc = dialKms(options.endpoint, options.authority);
  const { timeoutMs } = options;

  return {
    async status() {
      const r = await callKms(grpc, V2_METHODS.status, StatusRequest, {}, StatusResponse, timeoutMs);
      return { version: r.version, healthz: r.healthz, keyID: r.key_id };
    },
    async encrypt(plaintext, uid) {
      const r = await callKms(grpc, V2_METHODS.encrypt, EncryptRequest, { plaintext, uid }, EncryptResponse, timeoutMs);
      return { ciphertext: r.ciphertext, keyID: r.key_id, annotations: r.annotations };
    },
    async decrypt({ ciphertext, uid, keyID, annotations }) {
      const r = await callKms(
        grpc,
        V2_METHODS.decrypt,
        DecryptRequest,
        { ciphertext, uid, key_id: keyID, annotations },
        DecryptResponse,
        timeoutMs,
      );
      return r.plaintext;
    },
    close: () => grpc.close(),
  };
}
