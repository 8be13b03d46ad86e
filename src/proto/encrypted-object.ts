// Codec for the kms v2 EncryptedObject stored in etcd (see encrypted-object.proto beside this file).
// Changing field numbers or kinds here makes stored data unreadable.

import { defineMessage } from './wire.js';

export const DEK_SOURCE_AES_GCM_KEY = 0;
export const DEK_SOURCE_HKDF_SHA256_XNONCE_AES_GCM_SEED = 1;

export const EncryptedObject = defineMessage('v2.EncryptedObject', {
  encryptedData: { no: 1, kind: 'bytes' },
  keyID: { no: 2, kind: 'string' },
  encryptedDEKSource: { no: 3, kind: 'bytes' },
  annotations: { no: 4, kind: 'map<string,bytes>' },
  encryptedDEKSourceType: { no: 5, kind: 'enum' },
});
