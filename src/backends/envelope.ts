// The wrapped-DEK byte format of the remote backends (PKCS#11, AWS KMS, Vault Transit): a small
// versioned envelope that makes the ciphertext self-describing, because a KMS v1beta1 Decrypt carries
// nothing but these bytes. Pure: no I/O.
//
// Stored data depends on this layout: kube-apiserver keeps these bytes in etcd next to every object
// (kms v1) or every seed (kms v2). Changing it makes stored data unreadable.
//
//   header  = [magic "ATR" 3][format 0x01 1][mode 1][idLen 1][keyID idLen]
//
//   mode 0x01 (direct)          header ‖ [remote ciphertext …]
//   mode 0x02 (local KEK)       header ‖ [kekLen u16be][wrapped KEK kekLen] ‖ [nonce 12][ct n][tag 16]
//   mode 0x03 (local KEK, ref)  header ‖ [kekDigest 16]                      ‖ [nonce 12][ct n][tag 16]
//
// keyID is the remote key's id (the v2 key_id). In mode 0x03 the wrapped KEK travels in the v2
// annotation `local-kek.atrest.io`, and kekDigest = SHA-256(wrapped KEK)[0..16] ties the two together.
//
// What is authenticated, and by whom:
// - direct: the remote wraps the DEK with associated data = header (the mode byte is 0x01).
// - local KEK: the remote wraps the 32-byte local KEK with associated data
//   kekAAD = [magic "ATR"][format 0x01][purpose 0x02][idLen][keyID]; the DEK is sealed locally with
//   AES-256-GCM under the local KEK with associated data localAAD = kekAAD ‖ kekDigest, so modes 0x02
//   and 0x03 of one DEK are interchangeable and neither the key id nor the KEK can be swapped.
// A remote that has no associated data (AWS KMS uses it as an encryption-context entry) binds it its
// own way; see each backend.

import { createHash } from 'node:crypto';
import { FormatInvalidError } from '../errors.js';
import { startsWithBytes } from '../bytes.js';

export const ENVELOPE_MAGIC = Buffer.from('ATR', 'ascii');
export const ENVELOPE_FORMAT_V1 = 0x01;
export const ENVELOPE_MODE_DIRECT = 0x01;
export const ENVELOPE_MODE_LOCAL_KEK = 0x02;
export const ENVELOPE_MODE_LOCAL_KEK_REF = 0x03;
export const ENVELOPE_KEY_ID_MAX_BYTES = 255;
export const LOCAL_NONCE_BYTES = 12;
export const LOCAL_TAG_BYTES = 16;
export const LOCAL_KEK_BYTES = 32;
export const KEK_DIGEST_BYTES = 16;
/** The v2 annotation that carries the remotely wrapped local KEK in mode 0x03. */
export const LOCAL_KEK_ANNOTATION = 'local-kek.atrest.io';

export type EnvelopeMode = 'direct' | 'local-kek' | 'local-kek-ref';

export type Envelope =
  | {
      readonly mode: 'direct';
      readonly keyID: string;
      readonly header: Buffer;
      readonly remote: Buffer;
    }
  | {
      readonly mode: 'local-kek' | 'local-kek-ref';
      readonly keyID: string;
      readonly header: Buffer;
      /** Present in mode local-kek; in local-kek-ref it comes from the annotation. */
      readonly wrappedKEK: Buffer | undefined;
      readonly kekDigest: Buffer;
      readonly nonce: Buffer;
      readonly sealed: Buffer;
      readonly tag: Buffer;
    };

const MODE_BYTE: Record<EnvelopeMode, number> = {
  direct: ENVELOPE_MODE_DIRECT,
  'local-kek': ENVELOPE_MODE_LOCAL_KEK,
  'local-kek-ref': ENVELOPE_MODE_LOCAL_KEK_REF,
};

function keyIDBytes(keyID: string): Buffer {
  const id = Buffer.from(keyID, 'utf8');
  if (id.length === 0 || id.length > ENVELOPE_KEY_ID_MAX_BYTES) {
    throw new RangeError(`key id must be 1..${ENVELOPE_KEY_ID_MAX_BYTES} bytes`);
  }
  return id;
}

/** [magic][format][modeOrPurpose][idLen][keyID] */
function prefixed(byte: number, keyID: string): Buffer {
  const id = keyIDBytes(keyID);
  return Buffer.concat([ENVELOPE_MAGIC, Buffer.from([ENVELOPE_FORMAT_V1, byte, id.length]), id]);
}

export function envelopeHeader(mode: EnvelopeMode, keyID: string): Buffer {
  return prefixed(MODE_BYTE[mode], keyID);
}

/** Associated data the remote binds to a wrapped local KEK. */
export function kekAAD(keyID: string): Buffer {
  return prefixed(0x02, keyID);
}

export function kekDigest(wrappedKEK: Uint8Array): Buffer {
  return createHash('sha256').update(wrappedKEK).digest().subarray(0, KEK_DIGEST_BYTES);
}

/** Associated data of the local AES-256-GCM seal of a DEK under a local KEK. */
export function localAAD(keyID: string, digest: Uint8Array): Buffer {
  return Buffer.concat([kekAAD(keyID), digest]);
}

export function encodeDirect(keyID: string, remote: Uint8Array): Buffer {
  if (remote.length === 0) throw new RangeError('remote ciphertext is empty');
  return Buffer.concat([envelopeHeader('direct', keyID), remote]);
}

export interface LocalSealParts {
  readonly keyID: string;
  readonly wrappedKEK: Uint8Array;
  readonly nonce: Uint8Array;
  /** ciphertext ‖ tag as produced by AES-256-GCM */
  readonly sealedWithTag: Uint8Array;
}

export function encodeLocal(parts: LocalSealParts, inline: boolean): Buffer {
  if (parts.nonce.length !== LOCAL_NONCE_BYTES) throw new RangeError('nonce must be 12 bytes');
  if (parts.wrappedKEK.length === 0 || parts.wrappedKEK.length > 0xffff) {
    throw new RangeError('wrapped KEK must be 1..65535 bytes');
  }
  const kekPart = inline
    ? Buffer.concat([
        Buffer.from([parts.wrappedKEK.length >> 8, parts.wrappedKEK.length & 0xff]),
        parts.wrappedKEK,
      ])
    : kekDigest(parts.wrappedKEK);
  return Buffer.concat([
    envelopeHeader(inline ? 'local-kek' : 'local-kek-ref', parts.keyID),
    kekPart,
    parts.nonce,
    parts.sealedWithTag,
  ]);
}

/** True when the bytes start like an envelope of this format (any version). */
export function looksLikeEnvelope(data: Uint8Array): boolean {
  return startsWithBytes(data, ENVELOPE_MAGIC);
}

function truncated(what: string): FormatInvalidError {
  return new FormatInvalidError('ERR_FORMAT_TRUNCATED', `ciphertext is truncated (${what})`);
}

/** Splits envelope bytes into their regions; FormatInvalidError for anything not in this format. */
export function parseEnvelope(data: Uint8Array): Envelope {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (!looksLikeEnvelope(buf)) {
    throw new FormatInvalidError(
      'ERR_FORMAT_PREFIX',
      'ciphertext was not produced by an atrest remote backend (bad magic)',
    );
  }
  if (buf.length < ENVELOPE_MAGIC.length + 3) throw truncated('header');
  const format = buf[3]!;
  if (format !== ENVELOPE_FORMAT_V1) {
    throw new FormatInvalidError(
      'ERR_FORMAT_MALFORMED',
      `unsupported envelope format ${format} (this build reads format ${ENVELOPE_FORMAT_V1})`,
    );
  }
  const modeByte = buf[4]!;
  const idLen = buf[5]!;
  if (idLen === 0)
    throw new FormatInvalidError('ERR_FORMAT_MALFORMED', 'ciphertext has an empty key id');
  const headerEnd = 6 + idLen;
  if (buf.length < headerEnd) throw truncated('key id');
  let keyID: string;
  try {
    keyID = new TextDecoder('utf-8', { fatal: true }).decode(buf.subarray(6, headerEnd));
  } catch (err) {
    throw new FormatInvalidError('ERR_FORMAT_MALFORMED', 'ciphertext key id is not UTF-8', {
      cause: err,
    });
  }
  const header = buf.subarray(0, headerEnd);
  if (modeByte === ENVELOPE_MODE_DIRECT) {
    if (buf.length === headerEnd) throw truncated('remote ciphertext');
    return { mode: 'direct', keyID, header, remote: buf.subarray(headerEnd) };
  }
  let offset = headerEnd;
  let wrappedKEK: Buffer | undefined;
  let digest: Buffer;
  if (modeByte === ENVELOPE_MODE_LOCAL_KEK) {
    if (buf.length < offset + 2) throw truncated('wrapped KEK length');
    const kekLen = buf.readUInt16BE(offset);
    offset += 2;
    if (kekLen === 0)
      throw new FormatInvalidError('ERR_FORMAT_MALFORMED', 'ciphertext has an empty wrapped KEK');
    if (buf.length < offset + kekLen) throw truncated('wrapped KEK');
    wrappedKEK = buf.subarray(offset, offset + kekLen);
    digest = kekDigest(wrappedKEK);
    offset += kekLen;
  } else if (modeByte === ENVELOPE_MODE_LOCAL_KEK_REF) {
    if (buf.length < offset + KEK_DIGEST_BYTES) throw truncated('KEK digest');
    digest = buf.subarray(offset, offset + KEK_DIGEST_BYTES);
    offset += KEK_DIGEST_BYTES;
  } else {
    throw new FormatInvalidError('ERR_FORMAT_MALFORMED', `unknown envelope mode ${modeByte}`);
  }
  if (buf.length < offset + LOCAL_NONCE_BYTES + LOCAL_TAG_BYTES) throw truncated('sealed DEK');
  return {
    mode: modeByte === ENVELOPE_MODE_LOCAL_KEK ? 'local-kek' : 'local-kek-ref',
    keyID,
    header,
    wrappedKEK,
    kekDigest: digest,
    nonce: buf.subarray(offset, offset + LOCAL_NONCE_BYTES),
    sealed: buf.subarray(offset + LOCAL_NONCE_BYTES, buf.length - LOCAL_TAG_BYTES),
    tag: buf.subarray(buf.length - LOCAL_TAG_BYTES),
  };
}
