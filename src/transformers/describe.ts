// Inspection of stored values without decrypting them (for `atrest scan`): which format, which key or
// plugin key id. Pure; never throws on garbage, it reports problems instead.

import { EncryptedObject } from '../proto/encrypted-object.js';
import { startsWithBytes } from '../bytes.js';
import { ENCRYPTED_PREFIX } from './identity.js';
import { validateEncryptedObject } from './kms-v2-validation.js';
import { PROVIDER_PREFIXES } from './prefix.js';
import { CBC_BLOCK_SIZE, CBC_IV_SIZE } from './aes-cbc.js';
import { GCM_NONCE_SIZE, GCM_TAG_SIZE } from './aes-gcm.js';
import { SECRETBOX_NONCE_SIZE, SECRETBOX_TAG_SIZE } from './secretbox.js';

export type StoredFormat =
  'identity' | 'aescbc' | 'aesgcm' | 'secretbox' | 'kms-v1' | 'kms-v2' | 'unknown-encrypted';

export interface StoredValueInfo {
  readonly format: StoredFormat;
  /** aescbc / aesgcm / secretbox: the key name after the provider prefix. */
  readonly keyName?: string;
  /** kms v1 / kms v2: the provider name in the prefix. */
  readonly kmsName?: string;
  /** kms v2: the plugin key id stored in the EncryptedObject. */
  readonly keyID?: string;
  /** kms v2: 0 = AES_GCM_KEY (1.25–1.28 writers), 1 = HKDF_SHA256_XNONCE_AES_GCM_SEED. */
  readonly dekSourceType?: number;
  readonly annotationKeys?: readonly string[];
  /** kms v1: length of the encrypted DEK. */
  readonly encryptedDEKLength?: number;
  /** identity: how the plaintext looks (Kubernetes protobuf starts with `k8s\0`, JSON with `{`). */
  readonly encoding?: 'protobuf' | 'json' | 'other';
  /** The full prefix (ASCII) before the format's own bytes, when one was recognised. */
  readonly prefix?: string;
  /** Why the value cannot be what it claims to be (truncated, malformed); empty or absent if none seen. */
  readonly problems?: readonly string[];
}

const K8S_PROTOBUF_MAGIC = Buffer.from([0x6b, 0x38, 0x73, 0x00]);

const KEYED: readonly [StoredFormat, string][] = [
  ['aescbc', PROVIDER_PREFIXES.aescbc],
  ['aesgcm', PROVIDER_PREFIXES.aesgcm],
  ['secretbox', PROVIDER_PREFIXES.secretbox],
];

/** What a kms value says before its own bytes: the format, the provider name, the whole prefix. */
interface KmsBase {
  readonly format: 'kms-v1' | 'kms-v2';
  readonly kmsName: string;
  readonly prefix: string;
}

/** kms v1 and kms v2: after the prefix, a provider name, then the format's own bytes. */
type DescribeKmsBody = (base: KmsBase, body: Buffer) => StoredValueInfo;
const KMS: readonly [KmsBase['format'], string, DescribeKmsBody][] = [
  ['kms-v1', PROVIDER_PREFIXES.kmsV1, describeKmsV1],
  ['kms-v2', PROVIDER_PREFIXES.kmsV2, describeKmsV2],
];

/** Splits `<name>:` off the front; names end at the first `:` (v2 names may not contain one). */
function splitName(rest: Buffer): { name: string; body: Buffer } | undefined {
  const colon = rest.indexOf(0x3a);
  if (colon <= 0) return undefined;
  return { name: rest.subarray(0, colon).toString('utf8'), body: rest.subarray(colon + 1) };
}

function minimumProblem(format: StoredFormat, body: Buffer): string | undefined {
  switch (format) {
    case 'aescbc':
      if (body.length < CBC_IV_SIZE + CBC_BLOCK_SIZE) return 'shorter than an IV and one block';
      if ((body.length - CBC_IV_SIZE) % CBC_BLOCK_SIZE !== 0)
        return 'not a multiple of the block size';
      return undefined;
    case 'aesgcm':
      return body.length < GCM_NONCE_SIZE + GCM_TAG_SIZE
        ? 'shorter than a nonce and a tag'
        : undefined;
    case 'secretbox':
      return body.length < SECRETBOX_NONCE_SIZE + SECRETBOX_TAG_SIZE
        ? 'shorter than a nonce and a tag'
        : undefined;
    default:
      return undefined;
  }
}

export function describeStoredValue(data: Uint8Array): StoredValueInfo {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (!startsWithBytes(buf, ENCRYPTED_PREFIX)) return describeIdentity(buf);
  for (const [format, prefix] of KEYED) {
    if (startsWithBytes(buf, Buffer.from(prefix, 'latin1'))) {
      return describeKeyed(buf, format, prefix);
    }
  }
  for (const [format, prefix, describeBody] of KMS) {
    if (!startsWithBytes(buf, Buffer.from(prefix, 'latin1'))) continue;
    const split = splitName(buf.subarray(prefix.length));
    if (!split) return { format, prefix, problems: ['no provider name after the prefix'] };
    const base = { format, kmsName: split.name, prefix: `${prefix}${split.name}:` };
    return describeBody(base, split.body);
  }
  return describeUnknown(buf);
}

function describeIdentity(buf: Buffer): StoredValueInfo {
  const encoding = startsWithBytes(buf, K8S_PROTOBUF_MAGIC)
    ? 'protobuf'
    : buf[0] === 0x7b
      ? 'json'
      : 'other';
  return { format: 'identity', encoding };
}

function describeKeyed(buf: Buffer, format: StoredFormat, prefix: string): StoredValueInfo {
  const split = splitName(buf.subarray(prefix.length));
  if (!split) return { format, prefix, problems: ['no key name after the provider prefix'] };
  const problem = minimumProblem(format, split.body);
  return {
    format,
    keyName: split.name,
    prefix: `${prefix}${split.name}:`,
    ...(problem ? { problems: [problem] } : {}),
  };
}

/** kms v1 body: [L u16be][EDEK L][payload]. */
function describeKmsV1(base: KmsBase, body: Buffer): StoredValueInfo {
  if (body.length < 2) return { ...base, problems: ['no encrypted DEK length'] };
  const len = body.readUInt16BE(0);
  if (body.length < 2 + len) {
    const problems = ['shorter than its encrypted DEK length'];
    return { ...base, encryptedDEKLength: len, problems };
  }
  const payload = body.length - 2 - len;
  const problems: string[] = [];
  if (len === 0) problems.push('empty encrypted DEK');
  if (payload < GCM_NONCE_SIZE + GCM_TAG_SIZE && payload < CBC_IV_SIZE + CBC_BLOCK_SIZE) {
    problems.push('payload shorter than any cipher allows');
  }
  return { ...base, encryptedDEKLength: len, ...(problems.length ? { problems } : {}) };
}

/** kms v2 body: a protobuf EncryptedObject. */
function describeKmsV2(base: KmsBase, body: Buffer): StoredValueInfo {
  try {
    const obj = EncryptedObject.decode(body);
    const problems = validateEncryptedObject(obj);
    return {
      ...base,
      keyID: obj.keyID,
      dekSourceType: obj.encryptedDEKSourceType,
      annotationKeys: Object.keys(obj.annotations).sort(),
      ...(problems.length ? { problems } : {}),
    };
  } catch (err) {
    const reason = err instanceof Error ? err.message : 'error';
    return { ...base, problems: [`EncryptedObject does not decode: ${reason}`] };
  }
}

function describeUnknown(buf: Buffer): StoredValueInfo {
  const end = buf.indexOf(0x3a, ENCRYPTED_PREFIX.length);
  const shown =
    end > 0 && end - ENCRYPTED_PREFIX.length <= 32 ? buf.subarray(0, end + 1) : ENCRYPTED_PREFIX;
  return {
    format: 'unknown-encrypted',
    prefix: shown.toString('latin1').replace(/[^\x20-\x7e]/g, '?'),
    problems: ['no known provider prefix after k8s:enc:'],
  };
}
