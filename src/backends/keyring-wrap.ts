// The keyring backend's wrapped-DEK byte format: self-describing (format version + key id), so a
// KMS v1beta1 Decrypt, which carries nothing but these bytes, finds its key. Pure: no I/O.
//
// Stored data depends on this layout: kube-apiserver keeps these bytes in etcd next to every object
// (kms v1) or every seed (kms v2). Changing it makes stored data unreadable.
//
//   [magic "ATK" 3][format 0x01 1][idLen 1][keyID idLen][nonce 12][ciphertext n][tag 16]
//   \________________ header (AAD) ________________/
//
// AES-256-GCM with a random 96-bit nonce; the whole header (magic, format, id length, key id) is the
// additional authenticated data, so a ciphertext cannot be moved under another key id unnoticed.

import { createCipheriv, createDecipheriv } from 'node:crypto';
import { DecryptionFailedError, FormatInvalidError } from '../errors.js';
import { startsWithBytes } from '../bytes.js';

export const WRAP_MAGIC = Buffer.from('ATK', 'ascii');
export const WRAP_FORMAT_V1 = 0x01;
export const WRAP_NONCE_BYTES = 12;
export const WRAP_TAG_BYTES = 16;
export const WRAP_KEY_BYTES = 32;
export const WRAP_KEY_ID_MAX_BYTES = 255;
/** Bytes a wrap adds to the plaintext, besides the key id itself. */
export const WRAP_OVERHEAD_BYTES = WRAP_MAGIC.length + 1 + 1 + WRAP_NONCE_BYTES + WRAP_TAG_BYTES;

export interface WrappedHeader {
  readonly keyID: string;
  /** magic ‖ format ‖ idLen ‖ keyID: the AAD. */
  readonly header: Buffer;
  readonly nonce: Buffer;
  readonly sealed: Buffer;
  readonly tag: Buffer;
}

/** Wraps `plaintext` under `key` (32 bytes) with a caller-supplied 12-byte nonce (random in production). */
export function sealWrapped(
  keyID: string,
  key: Uint8Array,
  nonce: Uint8Array,
  plaintext: Uint8Array,
): Buffer {
  if (key.length !== WRAP_KEY_BYTES) throw new RangeError('key must be 32 bytes');
  if (nonce.length !== WRAP_NONCE_BYTES) throw new RangeError('nonce must be 12 bytes');
  // One output buffer, written in place (this runs for every Encrypt): header, nonce, sealed, tag.
  const idLen = Buffer.byteLength(keyID, 'utf8');
  if (idLen === 0 || idLen > WRAP_KEY_ID_MAX_BYTES) {
    throw new RangeError(`key id must be 1..${WRAP_KEY_ID_MAX_BYTES} bytes`);
  }
  const headerEnd = WRAP_MAGIC.length + 2 + idLen;
  const nonceEnd = headerEnd + WRAP_NONCE_BYTES;
  const out = Buffer.allocUnsafe(nonceEnd + plaintext.length + WRAP_TAG_BYTES);
  WRAP_MAGIC.copy(out, 0);
  out[WRAP_MAGIC.length] = WRAP_FORMAT_V1;
  out[WRAP_MAGIC.length + 1] = idLen;
  out.write(keyID, WRAP_MAGIC.length + 2, idLen, 'utf8');
  out.set(nonce, headerEnd);
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  cipher.setAAD(out.subarray(0, headerEnd));
  let pos = nonceEnd;
  const body = cipher.update(plaintext);
  out.set(body, pos);
  pos += body.length;
  const last = cipher.final();
  out.set(last, pos);
  pos += last.length;
  if (pos !== out.length - WRAP_TAG_BYTES) throw new Error('AES-GCM output has an unexpected length');
  out.set(cipher.getAuthTag(), pos);
  return out;
}

const keyIDDecoder = new TextDecoder('utf-8', { fatal: true });

/** Splits wrapped bytes into their regions; throws FormatInvalidError for anything not in this format. */
export function parseWrapped(data: Uint8Array): WrappedHeader {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (!startsWithBytes(buf, WRAP_MAGIC)) {
    throw new FormatInvalidError(
      'ERR_FORMAT_PREFIX',
      'ciphertext was not produced by the atrest keyring (bad magic)',
    );
  }
  if (buf.length < WRAP_MAGIC.length + 2) {
    throw new FormatInvalidError('ERR_FORMAT_TRUNCATED', 'ciphertext is truncated (header)');
  }
  const format = buf[WRAP_MAGIC.length]!;
  if (format !== WRAP_FORMAT_V1) {
    throw new FormatInvalidError(
      'ERR_FORMAT_MALFORMED',
      `unsupported keyring ciphertext format ${format} (this build reads format ${WRAP_FORMAT_V1})`,
    );
  }
  const idLen = buf[WRAP_MAGIC.length + 1]!;
  const headerEnd = WRAP_MAGIC.length + 2 + idLen;
  if (idLen === 0) {
    throw new FormatInvalidError('ERR_FORMAT_MALFORMED', 'ciphertext has an empty key id');
  }
  if (buf.length < headerEnd + WRAP_NONCE_BYTES + WRAP_TAG_BYTES) {
    throw new FormatInvalidError('ERR_FORMAT_TRUNCATED', 'ciphertext is truncated');
  }
  let keyID: string;
  try {
    keyID = keyIDDecoder.decode(
      buf.subarray(WRAP_MAGIC.length + 2, headerEnd),
    );
  } catch (err) {
    throw new FormatInvalidError('ERR_FORMAT_MALFORMED', 'ciphertext key id is not UTF-8', {
      cause: err,
    });
  }
  const nonceEnd = headerEnd + WRAP_NONCE_BYTES;
  return {
    keyID,
    header: buf.subarray(0, headerEnd),
    nonce: buf.subarray(headerEnd, nonceEnd),
    sealed: buf.subarray(nonceEnd, buf.length - WRAP_TAG_BYTES),
    tag: buf.subarray(buf.length - WRAP_TAG_BYTES),
  };
}

/** Opens parsed wrapped bytes with `key`; any authentication failure is a DecryptionFailedError. */
export function openWrapped(parsed: WrappedHeader, key: Uint8Array): Buffer {
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, parsed.nonce);
    decipher.setAAD(parsed.header);
    decipher.setAuthTag(parsed.tag);
    const body = decipher.update(parsed.sealed);
    const last = decipher.final(); // verifies the tag; empty for GCM
    return last.length === 0 ? body : Buffer.concat([body, last]);
  } catch (err) {
    throw new DecryptionFailedError({ cause: err });
  }
}
