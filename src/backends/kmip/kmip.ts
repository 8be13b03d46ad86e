// A KMIP key manager (KMIP 1.4 over TLS with a client certificate) as a KekService: AES-GCM
// Encrypt/Decrypt inside the server under the newest active symmetric key with a given Name, the
// envelope header as authenticated additional data. Result reasons become BackendError kinds here.
//
// key_id = `kmip:<Unique Identifier>` of the key that wrapped. The wrapping key is the first result
// of Locate(Object Type = Symmetric Key, State = Active, Name = keyName); servers return the most
// recently created object first. Rotation: create and activate a new AES key with the same Name; the
// next refresh reports its Unique Identifier as the new key_id. Keep older keys Active (PyKMIP and
// most servers refuse Decrypt with a Deactivated key) for as long as data wrapped by them exists.
//
// The remote ciphertext (the envelope's remote part, envelope.ts) is [iv 12][tag 16][ciphertext].
// The IV is random, chosen by us; the server computes the tag over the envelope header (AAD).

import { randomBytes } from 'node:crypto';
import {
  AtrestError,
  BackendError,
  DecryptionFailedError,
  type BackendErrorKind,
} from '../../errors.js';
import type { KekService } from '../remote.js';
import {
  KMIP_BACKEND,
  createKmipPool,
  type KmipConnectionConfig,
  type KmipPool,
} from './connection.js';
import {
  RESULT_REASON,
  TAG,
  bytesField,
  decryptRequest,
  encryptRequest,
  locateActiveKeys,
  parseResponse,
  textFields,
  type KmipResult,
} from './messages.js';
import type { TtlvItem } from './ttlv.js';

export { KMIP_BACKEND } from './connection.js';

const KEY_ID_PREFIX = 'kmip:';
export const KMIP_IV_BYTES = 12;
export const KMIP_TAG_BYTES = 16;

export interface KmipConfig extends KmipConnectionConfig {
  /** The Name attribute of the AES key(s). */
  readonly keyName: string;
}

export interface KmipDeps {
  readonly random?: (n: number) => Buffer;
  readonly pool?: KmipPool;
}

const REASON_NAME = new Map<number, string>(
  Object.entries(RESULT_REASON).map(([k, v]) => [v, k.toLowerCase().replace(/_/g, ' ')]),
);

export function classifyKmipReason(reason: number | undefined): BackendErrorKind {
  switch (reason) {
    case RESULT_REASON.ITEM_NOT_FOUND:
    case RESULT_REASON.AUTHENTICATION_NOT_SUCCESSFUL:
    case RESULT_REASON.PERMISSION_DENIED:
    case RESULT_REASON.OBJECT_ARCHIVED:
    case RESULT_REASON.OPERATION_NOT_SUPPORTED:
    case RESULT_REASON.FEATURE_NOT_SUPPORTED:
    case RESULT_REASON.ILLEGAL_OPERATION:
      return 'user-induced';
    case RESULT_REASON.CRYPTOGRAPHIC_FAILURE:
      return 'corruption';
    default:
      return 'other';
  }
}

function failure(op: string, r: Extract<KmipResult, { ok: false }>, hint: string): BackendError {
  const reason =
    r.reason === undefined
      ? 'no reason'
      : (REASON_NAME.get(r.reason) ?? `reason 0x${r.reason.toString(16)}`);
  return new BackendError(
    KMIP_BACKEND,
    classifyKmipReason(r.reason),
    `${op} failed (${reason}${r.message !== '' ? `: ${r.message}` : ''}): ${hint}`,
  );
}

function uidOf(keyID: string): string {
  if (!keyID.startsWith(KEY_ID_PREFIX) || keyID.length === KEY_ID_PREFIX.length) {
    throw new AtrestError('ERR_KEY_UNKNOWN', `key id ${keyID} was not made by the kmip backend`);
  }
  return keyID.slice(KEY_ID_PREFIX.length);
}

export function createKmipService(config: KmipConfig, deps: KmipDeps = {}): KekService {
  const pool = deps.pool ?? createKmipPool(config);
  const random = deps.random ?? randomBytes;

  async function call(request: TtlvItem, signal: AbortSignal): Promise<KmipResult> {
    return parseResponse(await pool.send(request, signal));
  }

  return {
    name: KMIP_BACKEND,

    async resolveKeyID(signal) {
      const r = await call(locateActiveKeys(config.keyName), signal);
      if (!r.ok) throw failure('Locate', r, 'check the client certificate and the key');
      const uids = textFields(r.payload, TAG.UNIQUE_IDENTIFIER);
      if (uids.length === 0) {
        throw new BackendError(
          KMIP_BACKEND,
          'user-induced',
          `no active AES key named "${config.keyName}" visible to this client certificate: create and activate one`,
        );
      }
      return KEY_ID_PREFIX + uids[0]!;
    },

    async encrypt(keyID, plaintext, aad, signal) {
      const uid = uidOf(keyID);
      const iv = random(KMIP_IV_BYTES);
      const r = await call(encryptRequest(uid, plaintext, iv, aad, KMIP_TAG_BYTES), signal);
      if (!r.ok) throw failure('Encrypt', r, `check that key ${uid} is an active AES key`);
      const data = bytesField(r.payload, TAG.DATA);
      const tag = bytesField(r.payload, TAG.AE_TAG);
      const echoedIV = bytesField(r.payload, TAG.IV_COUNTER_NONCE);
      if (
        data === undefined ||
        data.length !== plaintext.length ||
        tag?.length !== KMIP_TAG_BYTES ||
        (echoedIV !== undefined && !echoedIV.equals(iv))
      ) {
        throw new BackendError(
          KMIP_BACKEND,
          'other',
          'Encrypt returned no AES-GCM ciphertext with a 16-byte tag under our IV',
        );
      }
      return Buffer.concat([iv, tag, data]);
    },

    async decrypt(keyID, ciphertext, aad, signal) {
      const uid = uidOf(keyID);
      if (ciphertext.length <= KMIP_IV_BYTES + KMIP_TAG_BYTES) throw new DecryptionFailedError();
      const iv = ciphertext.subarray(0, KMIP_IV_BYTES);
      const tag = ciphertext.subarray(KMIP_IV_BYTES, KMIP_IV_BYTES + KMIP_TAG_BYTES);
      const data = ciphertext.subarray(KMIP_IV_BYTES + KMIP_TAG_BYTES);
      const r = await call(decryptRequest(uid, data, iv, aad, tag), signal);
      if (!r.ok) {
        if (r.reason === RESULT_REASON.ITEM_NOT_FOUND) {
          throw new AtrestError('ERR_KEY_UNKNOWN', `the KMIP server has no key ${uid}`);
        }
        // An authentication-tag mismatch: PyKMIP reports it as a cryptographic or general failure.
        if (
          r.reason === RESULT_REASON.CRYPTOGRAPHIC_FAILURE ||
          r.reason === RESULT_REASON.GENERAL_FAILURE
        ) {
          throw new DecryptionFailedError({ cause: failure('Decrypt', r, 'tampered ciphertext') });
        }
        throw failure(
          'Decrypt',
          r,
          `check that key ${uid} is still active and usable by this client`,
        );
      }
      const out = bytesField(r.payload, TAG.DATA);
      if (out === undefined || out.length !== data.length) {
        throw new BackendError(KMIP_BACKEND, 'other', 'Decrypt returned no plaintext');
      }
      return out;
    },

    async close() {
      pool.close();
    },
  };
}
