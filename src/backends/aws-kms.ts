// AWS KMS as a key manager (@aws-sdk/client-kms): Encrypt/Decrypt under a symmetric KMS key named
// by ARN, key id or alias, credentials from the SDK's default chain. Every SDK error becomes a
// BackendError here; no SDK type escapes this file.
//
// key_id = `aws-kms:<key ARN>`, where the ARN is what DescribeKey resolves the configured key to.
// Configure an alias (`alias/atrest`) and rotation is: create a new KMS key, point the alias at it
// (`aws kms update-alias`); the next background refresh sees a new ARN, so a new key_id, and old
// data keeps decrypting under the old ARN stored in its ciphertext. AWS's own yearly rotation keeps
// the ARN and every old backing key, so it is transparent and needs no key_id change.

import {
  DecryptCommand,
  DescribeKeyCommand,
  EncryptCommand,
  KMSClient,
  type KMSClientConfig,
} from '@aws-sdk/client-kms';
import { AtrestError, BackendError, type BackendErrorKind } from '../errors.js';
import { isNetworkError } from './network-error.js';
import type { KekService } from './remote.js';

export const AWS_KMS_BACKEND = 'aws-kms';
const KEY_ID_PREFIX = 'aws-kms:';
/** Encryption-context entry that binds the envelope header (see envelope.ts) to each KMS ciphertext. */
export const AWS_AAD_CONTEXT_KEY = 'atrest:aad';

export interface AwsKmsConfig {
  /** Key ARN, key id, alias name (`alias/x`) or alias ARN. */
  readonly keyId: string;
  readonly region?: string;
  /** Custom endpoint (FIPS, VPC endpoint, or a local emulator). */
  readonly endpoint?: string;
  /** Extra encryption context sent with every call; changing it makes existing data unreadable. */
  readonly encryptionContext?: Readonly<Record<string, string>>;
}

const USER_INDUCED = new Set([
  'AccessDeniedException',
  'DisabledException',
  'NotFoundException',
  'KMSInvalidStateException',
  'InvalidKeyUsageException',
  'UnrecognizedClientException',
  'InvalidSignatureException',
  'ExpiredTokenException',
  'IncompleteSignature',
  'InvalidClientTokenId',
  'CredentialsProviderError',
  'ValidationException',
  'InvalidGrantTokenException',
]);
const THROTTLED = new Set([
  'ThrottlingException',
  'Throttling',
  'LimitExceededException',
  'TooManyRequestsException',
  'RequestLimitExceeded',
]);
const UNAVAILABLE = new Set([
  'KeyUnavailableException',
  'DependencyTimeoutException',
  'KMSInternalException',
  'ServiceUnavailable',
  'InternalFailure',
  'TimeoutError',
  'AbortError',
]);
const CORRUPTION = new Set(['InvalidCiphertextException', 'IncorrectKeyException']);

/** Sorts an AWS SDK error into one of the five kinds. */
export function classifyAwsError(err: unknown): BackendErrorKind {
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
  const name = e?.name ?? '';
  if (CORRUPTION.has(name)) return 'corruption';
  if (THROTTLED.has(name)) return 'throttled';
  if (USER_INDUCED.has(name)) return 'user-induced';
  if (UNAVAILABLE.has(name)) return 'unavailable';
  if (isNetworkError(err)) return 'unavailable';
  const status = e?.$metadata?.httpStatusCode;
  if (status === 429) return 'throttled';
  if (status !== undefined && status >= 500) return 'unavailable';
  if (status === 400 || status === 403 || status === 404) return 'user-induced';
  return 'other';
}

const HINT: Record<BackendErrorKind, string> = {
  'user-induced':
    'check the key (enabled, not scheduled for deletion), its key policy and the credentials',
  throttled: 'AWS KMS is throttling requests; raise the quota or enable the local KEK tier',
  unavailable: 'AWS KMS could not be reached',
  corruption: 'AWS KMS rejected the ciphertext',
  other: 'unexpected AWS KMS error',
};

function toBackendError(op: string, err: unknown): BackendError {
  const kind = classifyAwsError(err);
  const name = (err as { name?: string })?.name ?? 'Error';
  return new BackendError(AWS_KMS_BACKEND, kind, `${op} failed (${name}): ${HINT[kind]}`, {
    cause: err,
  });
}

function arnOf(keyID: string): string {
  if (!keyID.startsWith(KEY_ID_PREFIX) || keyID.length === KEY_ID_PREFIX.length) {
    throw new AtrestError('ERR_KEY_UNKNOWN', `key id ${keyID} was not made by the aws-kms backend`);
  }
  return keyID.slice(KEY_ID_PREFIX.length);
}

export interface AwsKmsDeps {
  /** Extra client settings (tests: credentials, maxAttempts); merged over the defaults. */
  readonly clientConfig?: KMSClientConfig;
}

export function createAwsKmsService(config: AwsKmsConfig, deps: AwsKmsDeps = {}): KekService {
  const client = new KMSClient({
    ...(config.region !== undefined ? { region: config.region } : {}),
    ...(config.endpoint !== undefined ? { endpoint: config.endpoint } : {}),
    // Retries are ours (remote.ts over src/retry.ts), classified and inside the API server's timeout budget.
    maxAttempts: 1,
    ...deps.clientConfig,
  });

  function context(aad: Buffer): Record<string, string> {
    return { ...config.encryptionContext, [AWS_AAD_CONTEXT_KEY]: aad.toString('base64') };
  }

  return {
    name: AWS_KMS_BACKEND,

    async resolveKeyID(signal) {
      let out;
      try {
        out = await client.send(new DescribeKeyCommand({ KeyId: config.keyId }), {
          abortSignal: signal,
        });
      } catch (err) {
        throw toBackendError('DescribeKey', err);
      }
      const meta = out.KeyMetadata;
      if (meta?.Arn === undefined) {
        throw new BackendError(AWS_KMS_BACKEND, 'other', 'DescribeKey returned no key ARN');
      }
      if (meta.KeyState !== undefined && meta.KeyState !== 'Enabled') {
        throw new BackendError(
          AWS_KMS_BACKEND,
          'user-induced',
          `key ${meta.Arn} is ${meta.KeyState}; enable it or point the configuration at another key`,
        );
      }
      return KEY_ID_PREFIX + meta.Arn;
    },

    async encrypt(keyID, plaintext, aad, signal) {
      const arn = arnOf(keyID);
      try {
        const out = await client.send(
          new EncryptCommand({ KeyId: arn, Plaintext: plaintext, EncryptionContext: context(aad) }),
          { abortSignal: signal },
        );
        if (out.CiphertextBlob === undefined || out.CiphertextBlob.length === 0) {
          throw new BackendError(AWS_KMS_BACKEND, 'other', 'Encrypt returned no ciphertext');
        }
        return Buffer.from(out.CiphertextBlob);
      } catch (err) {
        if (err instanceof BackendError) throw err;
        throw toBackendError('Encrypt', err);
      }
    },

    async decrypt(keyID, ciphertext, aad, signal) {
      const arn = arnOf(keyID);
      try {
        const out = await client.send(
          new DecryptCommand({
            KeyId: arn,
            CiphertextBlob: ciphertext,
            EncryptionContext: context(aad),
          }),
          { abortSignal: signal },
        );
        if (out.Plaintext === undefined) {
          throw new BackendError(AWS_KMS_BACKEND, 'other', 'Decrypt returned no plaintext');
        }
        return Buffer.from(out.Plaintext);
      } catch (err) {
        if (err instanceof BackendError) throw err;
        throw toBackendError('Decrypt', err);
      }
    },

    async close() {
      client.destroy();
    },
  };
}
