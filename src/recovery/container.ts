// Where a recovery seal travels with the plugin's answer to kube-apiserver. Pure: no I/O.
//
// kms v2: in the annotation `recovery.atrest.io` (kube-apiserver stores annotations in the
// EncryptedObject and hands them back on Decrypt); the ciphertext stays the backend's.
// kms v1 (no annotations): a container around the backend's ciphertext:
//
//   [magic "ATC" 3][format 0x01 1][innerLen u16be 2][inner innerLen][seal]
//
// Stored data depends on this layout: kube-apiserver keeps these bytes in etcd next to every kms v1
// object. Changing it makes stored data unreadable. "ATC" cannot begin a backend's own ciphertext
// (the keyring writes "ATK", the remote backends "ATR").

import { FormatInvalidError } from '../errors.js';
import { startsWithBytes } from '../bytes.js';
import type { StoredValueInfo } from '../transformers/describe.js';
import { looksLikeSeal } from './seal.js';

export const CONTAINER_MAGIC = Buffer.from('ATC', 'ascii');
export const CONTAINER_FORMAT_V1 = 0x01;
const CONTAINER_HEADER_BYTES = CONTAINER_MAGIC.length + 1 + 2;
/** The v2 annotation that carries the recovery seal of the seed. */
export const RECOVERY_ANNOTATION = 'recovery.atrest.io';

export function looksLikeContainer(data: Uint8Array): boolean {
  return startsWithBytes(data, CONTAINER_MAGIC);
}

export function encodeContainer(inner: Uint8Array, seal: Uint8Array): Buffer {
  if (inner.length === 0 || inner.length > 0xffff) throw new RangeError('inner ciphertext must be 1..65535 bytes');
  const head = Buffer.alloc(CONTAINER_HEADER_BYTES);
  CONTAINER_MAGIC.copy(head, 0);
  head[3] = CONTAINER_FORMAT_V1;
  head.writeUInt16BE(inner.length, 4);
  return Buffer.concat([head, inner, seal]);
}

export interface Container {
  /** The backend's ciphertext. */
  readonly inner: Buffer;
  readonly seal: Buffer;
}

export function parseContainer(data: Uint8Array): Container {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (!looksLikeContainer(buf)) {
    throw new FormatInvalidError('ERR_FORMAT_PREFIX', 'not an atrest recovery container (bad magic)');
  }
  if (buf.length < CONTAINER_HEADER_BYTES) {
    throw new FormatInvalidError('ERR_FORMAT_TRUNCATED', 'recovery container is truncated (header)');
  }
  if (buf[3] !== CONTAINER_FORMAT_V1) {
    throw new FormatInvalidError(
      'ERR_FORMAT_MALFORMED',
      `unsupported recovery container format ${buf[3]} (this build reads ${CONTAINER_FORMAT_V1})`,
    );
  }
  const innerLen = buf.readUInt16BE(4);
  const end = CONTAINER_HEADER_BYTES + innerLen;
  if (innerLen === 0 || buf.length <= end) {
    throw new FormatInvalidError('ERR_FORMAT_TRUNCATED', 'recovery container is truncated');
  }
  return { inner: buf.subarray(CONTAINER_HEADER_BYTES, end), seal: buf.subarray(end) };
}

/** Annotations without the recovery seal: what the backend itself wrote. */
export function withoutRecoveryAnnotation<T>(
  annotations: Readonly<Record<string, T>> | undefined,
): Readonly<Record<string, T>> | undefined {
  if (annotations === undefined || !(RECOVERY_ANNOTATION in annotations)) return annotations;
  const { [RECOVERY_ANNOTATION]: _seal, ...rest } = annotations;
  return rest;
}

/**
 * Whether a plugin answer carries a recovery seal: a kms v1 encrypted DEK (the plugin's ciphertext)
 * or a kms v2 value's annotation keys. For `atrest scan`.
 */
export function v1CarriesSeal(encryptedDEK: Uint8Array): boolean {
  if (!looksLikeContainer(encryptedDEK)) return false;
  try {
    return looksLikeSeal(parseContainer(encryptedDEK).seal);
  } catch {
    return false;
  }
}

export function v2CarriesSeal(annotationKeys: readonly string[] | undefined): boolean {
  return annotationKeys?.includes(RECOVERY_ANNOTATION) ?? false;
}

/**
 * Whether a stored kms value carries a recovery seal (undefined: not a kms value). For `atrest scan`:
 * the kms v1 encrypted DEK follows the prefix as [len u16be][EDEK]; kms v2 names its annotations.
 */
export function storedValueCarriesSeal(value: Uint8Array, info: StoredValueInfo): boolean | undefined {
  if (info.format === 'kms-v2') return v2CarriesSeal(info.annotationKeys);
  if (info.format !== 'kms-v1' || info.prefix === undefined) return undefined;
  const at = Buffer.byteLength(info.prefix, 'latin1');
  if (value.length < at + 2) return false;
  const len = (value[at]! << 8) | value[at + 1]!;
  return v1CarriesSeal(value.subarray(at + 2, at + 2 + len));
}
