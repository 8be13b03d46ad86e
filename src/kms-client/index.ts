// KMS clients as kube-apiserver uses them (v1beta1 and v2), over a UNIX socket.

export { createKmsV1Client, type KmsClientOptions, type KmsV1Client, type KmsVersion } from './kms-v1-client.js';
export { createKmsV2Client, newUID, type KmsV2Client } from './kms-v2-client.js';
