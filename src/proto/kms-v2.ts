// Codecs for the KMS v2 messages (see kms-v2.proto beside this file).

import { defineMessage } from './wire.js';

export const V2_SERVICE = 'v2.KeyManagementService';
export const V2_METHODS = {
  status: `/${V2_SERVICE}/Status`,
  encrypt: `/${V2_SERVICE}/Encrypt`,
  decrypt: `/${V2_SERVICE}/Decrypt`,
} as const;
/** The KMS v2 API version; an API server >= 1.29 accepts it as Status version (1.27/1.28 do not). */
export const V2_API_VERSION = 'v2';
/** The Status version 1.27/1.28 API servers require exactly and 1.29+ still accept. */
export const V2BETA1_API_VERSION = 'v2beta1';
/** Status versions a plugin may answer; `atrest serve --status-version` picks one. */
export const V2_STATUS_VERSIONS = [V2BETA1_API_VERSION, V2_API_VERSION] as const;
export type V2StatusVersion = (typeof V2_STATUS_VERSIONS)[number];
/** What Status answers by default: the one version every API server from 1.27 on accepts. */
export const DEFAULT_V2_STATUS_VERSION: V2StatusVersion = V2BETA1_API_VERSION;
export const V2_HEALTHZ_OK = 'ok';
/** Limits the API server enforces on plugin answers (inclusive). */
export const V2_KEY_ID_MAX_BYTES = 1024;
export const V2_CIPHERTEXT_MAX_BYTES = 1024;
export const V2_ANNOTATIONS_MAX_BYTES = 32 * 1024;

export const StatusRequest = defineMessage('v2.StatusRequest', {});
export const StatusResponse = defineMessage('v2.StatusResponse', {
  version: { no: 1, kind: 'string' },
  healthz: { no: 2, kind: 'string' },
  key_id: { no: 3, kind: 'string' },
});
export const DecryptRequest = defineMessage('v2.DecryptRequest', {
  ciphertext: { no: 1, kind: 'bytes' },
  uid: { no: 2, kind: 'string' },
  key_id: { no: 3, kind: 'string' },
  annotations: { no: 4, kind: 'map<string,bytes>' },
});
export const DecryptResponse = defineMessage('v2.DecryptResponse', {
  plaintext: { no: 1, kind: 'bytes' },
});
export const EncryptRequest = defineMessage('v2.EncryptRequest', {
  plaintext: { no: 1, kind: 'bytes' },
  uid: { no: 2, kind: 'string' },
});
export const EncryptResponse = defineMessage('v2.EncryptResponse', {
  ciphertext: { no: 1, kind: 'bytes' },
  key_id: { no: 2, kind: 'string' },
  annotations: { no: 3, kind: 'map<string,bytes>' },
});
