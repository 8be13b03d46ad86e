// Codecs for the KMS v1beta1 messages (see kms-v1beta1.proto beside this file).

import { defineMessage } from './wire.js';

export const V1BETA1_SERVICE = 'v1beta1.KeyManagementService';
export const V1BETA1_METHODS = {
  version: `/${V1BETA1_SERVICE}/Version`,
  encrypt: `/${V1BETA1_SERVICE}/Encrypt`,
  decrypt: `/${V1BETA1_SERVICE}/Decrypt`,
} as const;
/** The only API version a v1beta1 plugin speaks; the API server requires it in VersionResponse. */
export const V1BETA1_API_VERSION = 'v1beta1';

export const VersionRequest = defineMessage('v1beta1.VersionRequest', {
  version: { no: 1, kind: 'string' },
});
export const VersionResponse = defineMessage('v1beta1.VersionResponse', {
  version: { no: 1, kind: 'string' },
  runtime_name: { no: 2, kind: 'string' },
  runtime_version: { no: 3, kind: 'string' },
});
export const DecryptRequest = defineMessage('v1beta1.DecryptRequest', {
  version: { no: 1, kind: 'string' },
  cipher: { no: 2, kind: 'bytes' },
});
export const DecryptResponse = defineMessage('v1beta1.DecryptResponse', {
  plain: { no: 1, kind: 'bytes' },
});
export const EncryptRequest = defineMessage('v1beta1.EncryptRequest', {
  version: { no: 1, kind: 'string' },
  plain: { no: 2, kind: 'bytes' },
});
export const EncryptResponse = defineMessage('v1beta1.EncryptResponse', {
  cipher: { no: 1, kind: 'bytes' },
});
