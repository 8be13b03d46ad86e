// The public surface of the storage formats: every transformer, the prefix routing, inspection.

export type { FromStorageResult, TransformContext, Transformer } from './transformer.js';
export type {
  KmsV1Service,
  KmsV2DecryptRequest,
  KmsV2EncryptResult,
  KmsV2Service,
  KmsV2Status,
} from './kms-services.js';
export { createIdentityTransformer, ENCRYPTED_PREFIX } from './identity.js';
export {
  createAesGcmSeedTransformer,
  createAesGcmTransformer,
  deriveSeedKey,
  GCM_NONCE_SIZE,
  GCM_TAG_SIZE,
  HKDF_INFO_SIZE,
} from './aes-gcm.js';
export type { RandomOptions } from './aes-gcm.js';
export type { RandomSource } from '../random.js';
export { createAesCbcTransformer, CBC_IV_SIZE } from './aes-cbc.js';
export {
  createSecretboxTransformer,
  SECRETBOX_NONCE_SIZE,
  SECRETBOX_TAG_SIZE,
} from './secretbox.js';
export {
  createIdentityProvider,
  createKeyedProvider,
  createPrefixTransformers,
  PROVIDER_PREFIXES,
  ProvidersFailedError,
} from './prefix.js';
export type {
  KeyedProviderKey,
  KeyedProviderName,
  KeyedProviderOptions,
  PrefixEntry,
  TransformAttempt,
} from './prefix.js';
export { createKmsV1Transformer, KMS_V1_DEFAULT_CACHE_SIZE, splitKmsV1 } from './kms-v1.js';
export type { KmsV1Transformer, KmsV1TransformerOptions } from './kms-v1.js';
export type { KmsHealth } from './kms-health.js';
export {
  createKmsV2Transformer,
  decodeEncryptedObject,
  KMS_V2_ACCEPTED_VERSIONS,
  KMS_V2_POLL_HEALTHY_MS,
  KMS_V2_POLL_UNHEALTHY_MS,
  KMS_V2_WRITE_STATE_TTL_MS,
} from './kms-v2.js';
export type {
  DecodedEncryptedObject,
  KmsV2StateInfo,
  KmsV2Transformer,
  KmsV2TransformerOptions,
  PollingHandle,
  PollingOptions,
  Timers,
} from './kms-v2.js';
export {
  isFullyQualifiedDomainName,
  keyIDHash,
  validateAnnotations,
  validateEncryptedObject,
  validateKeyID,
} from './kms-v2-validation.js';
export { describeStoredValue } from './describe.js';
export type { StoredFormat, StoredValueInfo } from './describe.js';
