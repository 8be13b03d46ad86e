// The recovery seal: a DEK (kms v1) or DEK seed (kms v2) sealed to an offline X25519 recovery public
// key, so that stored data stays readable when the key manager is gone. Pure: node:crypto only, no I/O.
//
// Stored data depends on this layout: the seal travels with every kms v1 value and every kms v2 seed
// in etcd and in every backup. Changing it makes those seals unopenable.
//
//   [magic "ATS" 3][format 0x01 1][recipient 8][ephemeral public key 32][nonce 12][ciphertext n][tag 16]
//   \________ header _________/
//
//   recipient = SHA-256(recipient public key, 32 raw bytes)[0..8]   which recovery key can open it
//   shared    = X25519(ephemeral private key, recipient public key)
//   key       = HKDF-SHA256(ikm = shared, salt = ephemeral public ‖ recipient public,
//                           info = "atrest recovery seal v1", 32 bytes)
//   AES-256-GCM(key, nonce, plaintext), AAD = header ‖ context
//
// The context binds a seal to the KEK wrap it accompanies: the key id and a digest of the
// backend's wrapped bytes (sealContext below), the same facts the KEK wrap authenticates. A seal
// moved onto another value, or a value whose wrapped DEK was swapped, fails to open.
//
// A fresh ephemeral key per seal, so the derived key is never reused and the nonce may be random.

import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  hkdfSync,
  randomBytes,
  type KeyObject,
} from 'node:crypto';
import { DecryptionFailedError, FormatInvalidError } from '../errors.js';
import { startsWithBytes } from '../bytes.js';

export const SEAL_MAGIC = Buffer.from('ATS', 'ascii');
export const SEAL_FORMAT_V1 = 0x01;
export const SEAL_RECIPIENT_BYTES = 8;
export const X25519_KEY_BYTES = 32;
export const SEAL_NONCE_BYTES = 12;
export const SEAL_TAG_BYTES = 16;
export const SEAL_HEADER_BYTES = SEAL_MAGIC.length + 1 + SEAL_RECIPIENT_BYTES;
/** Bytes a seal adds to what it seals. */
export const SEAL_OVERHEAD_BYTES =
  SEAL_HEADER_BYTES + X25519_KEY_BYTES + SEAL_NONCE_BYTES + SEAL_TAG_BYTES;
const HKDF_INFO = Buffer.from('atrest recovery seal v1', 'ascii');
const CONTEXT_LABEL = Buffer.from('atrest recovery context v1', 'ascii');
/** Fixed DER prefixes of X25519 keys (RFC 8410): SPKI and PKCS#8 with the 32 raw bytes appended. */
const SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');
const PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');

export interface RecoveryPublicKey {
  readonly raw: Buffer;
  /** SHA-256(raw)[0..8]: names the key in seals, shares and messages; reveals nothing. */
  readonly recipient: Buffer;
  readonly key: KeyObject;
}

export interface RecoveryPrivateKey extends RecoveryPublicKey {
  readonly privateKey: KeyObject;
}

export function recipientOf(raw: Uint8Array): Buffer {
  return createHash('sha256').update(raw).digest().subarray(0, SEAL_RECIPIENT_BYTES);
}

export function publicKeyFromRaw(raw: Uint8Array): RecoveryPublicKey {
  if (raw.length !== X25519_KEY_BYTES) throw new RangeError('an X25519 public key is 32 bytes');
  const der = Buffer.concat([SPKI_PREFIX, raw]);
  return {
    raw: Buffer.from(raw),
    recipient: recipientOf(raw),
    key: createPublicKey({ key: der, format: 'der', type: 'spki' }),
  };
}

function rawPublic(key: KeyObject): Buffer {
  const der = key.export({ format: 'der', type: 'spki' });
  if (der.length !== SPKI_PREFIX.length + X25519_KEY_BYTES || !startsWithBytes(der, SPKI_PREFIX)) {
    throw new FormatInvalidError('ERR_FORMAT_MALFORMED', 'not an X25519 public key');
  }
  return der.subarray(SPKI_PREFIX.length);
}

export function publicKeyFromKeyObject(key: KeyObject): RecoveryPublicKey {
  return publicKeyFromRaw(rawPublic(key));
}

/** The 32 secret bytes of an X25519 private key (what Shamir shares split). */
export function rawPrivate(key: RecoveryPrivateKey): Buffer {
  const der = key.privateKey.export({ format: 'der', type: 'pkcs8' });
  return Buffer.from(der.subarray(der.length - X25519_KEY_BYTES));
}

export function privateKeyFromRaw(raw: Uint8Array): RecoveryPrivateKey {
  if (raw.length !== X25519_KEY_BYTES) throw new RangeError('an X25519 private key is 32 bytes');
  const privateKey = createPrivateKey({
    key: Buffer.concat([PKCS8_PREFIX, raw]),
    format: 'der',
    type: 'pkcs8',
  });
  return { ...publicKeyFromKeyObject(createPublicKey(privateKey)), privateKey };
}

export function privateKeyFromKeyObject(privateKey: KeyObject): RecoveryPrivateKey {
  if (privateKey.asymmetricKeyType !== 'x25519') {
    throw new FormatInvalidError('ERR_FORMAT_MALFORMED', 'not an X25519 private key');
  }
  return { ...publicKeyFromKeyObject(createPublicKey(privateKey)), privateKey };
}

export function generateRecoveryKey(): RecoveryPrivateKey {
  return privateKeyFromKeyObject(generateKeyPairSync('x25519').privateKey);
}

/**
 * The key id in a kms v1 seal's context: v1 Decrypt carries no key id, and the backend's wrapped
 * bytes (whose digest the context holds) already authenticate theirs.
 */
export const V1_KEY_ID = '';

/**
 * What a seal is bound to: the key id of the KEK wrap it accompanies and a digest of the backend's
 * wrapped bytes (the v1 inner ciphertext or the v2 encryptedDEKSource).
 *   label ‖ [idLen u16be][keyID] ‖ SHA-256(wrapped)
 */
export function sealContext(keyID: string, wrapped: Uint8Array): Buffer {
  const id = Buffer.from(keyID, 'utf8');
  if (id.length > 0xffff) throw new RangeError('key id is too long');
  const len = Buffer.alloc(2);
  len.writeUInt16BE(id.length, 0);
  return Buffer.concat([
    CONTEXT_LABEL,
    len,
    id,
    createHash('sha256').update(wrapped).digest(),
  ]);
}

function deriveKey(shared: Buffer, ephemeralRaw: Buffer, recipientRaw: Buffer): Buffer {
  return Buffer.from(
    hkdfSync('sha256', shared, Buffer.concat([ephemeralRaw, recipientRaw]), HKDF_INFO, 32),
  );
}

function header(recipient: Buffer): Buffer {
  return Buffer.concat([SEAL_MAGIC, Buffer.from([SEAL_FORMAT_V1]), recipient]);
}

export interface SealOptions {
  /** Injected for tests; random in production. */
  readonly random?: (n: number) => Buffer;
  readonly ephemeral?: { readonly raw: Buffer; readonly privateKey: KeyObject };
}

/** A fresh ephemeral key pair; the raw public key is read straight from its DER (the hot path of seal). */
function ephemeralKey(): { raw: Buffer; privateKey: KeyObject } {
  const { publicKey, privateKey } = generateKeyPairSync('x25519');
  return { raw: publicKey.export({ type: 'spki', format: 'der' }).subarray(SPKI_PREFIX.length), privateKey };
}

export function seal(
  to: RecoveryPublicKey,
  plaintext: Uint8Array,
  context: Uint8Array,
  options: SealOptions = {},
): Buffer {
  const ephemeral = options.ephemeral ?? ephemeralKey();
  const nonce = (options.random ?? randomBytes)(SEAL_NONCE_BYTES);
  const shared = diffieHellman({ privateKey: ephemeral.privateKey, publicKey: to.key });
  const key = deriveKey(shared, ephemeral.raw, to.raw);
  const head = header(to.recipient);
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  cipher.setAAD(Buffer.concat([head, context]));
  const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return Buffer.concat([head, ephemeral.raw, nonce, body, cipher.getAuthTag()]);
}

export interface ParsedSeal {
  readonly recipient: Buffer;
  readonly ephemeralRaw: Buffer;
  readonly nonce: Buffer;
  readonly body: Buffer;
  readonly tag: Buffer;
}

export function looksLikeSeal(data: Uint8Array): boolean {
  return startsWithBytes(data, SEAL_MAGIC);
}

export function parseSeal(data: Uint8Array): ParsedSeal {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (!looksLikeSeal(buf)) {
    throw new FormatInvalidError('ERR_FORMAT_PREFIX', 'not an atrest recovery seal (bad magic)');
  }
  if (buf.length < SEAL_MAGIC.length + 1) {
    throw new FormatInvalidError('ERR_FORMAT_TRUNCATED', 'recovery seal is truncated (header)');
  }
  if (buf[3] !== SEAL_FORMAT_V1) {
    throw new FormatInvalidError(
      'ERR_FORMAT_MALFORMED',
      `unsupported recovery seal format ${buf[3]} (this build reads ${SEAL_FORMAT_V1})`,
    );
  }
  if (buf.length < SEAL_OVERHEAD_BYTES) {
    throw new FormatInvalidError('ERR_FORMAT_TRUNCATED', 'recovery seal is truncated');
  }
  let o = SEAL_MAGIC.length + 1;
  const recipient = buf.subarray(o, (o += SEAL_RECIPIENT_BYTES));
  const ephemeralRaw = buf.subarray(o, (o += X25519_KEY_BYTES));
  const nonce = buf.subarray(o, (o += SEAL_NONCE_BYTES));
  return {
    recipient,
    ephemeralRaw,
    nonce,
    body: buf.subarray(o, buf.length - SEAL_TAG_BYTES),
    tag: buf.subarray(buf.length - SEAL_TAG_BYTES),
  };
}

/** The recipient id a seal names (hex), for messages; undefined for bytes that are not a seal. */
export function sealRecipient(data: Uint8Array): string | undefined {
  try {
    return parseSeal(data).recipient.toString('hex');
  } catch {
    return undefined;
  }
}

/**
 * Opens a seal with one of `keys`. FormatInvalidError for a malformed seal or one sealed to a key not
 * given (named by its recipient id); DecryptionFailedError when tampered or bound to other context.
 */
export function openSeal(
  keys: readonly RecoveryPrivateKey[],
  data: Uint8Array,
  context: Uint8Array,
): Buffer {
  const parsed = parseSeal(data);
  const key = keys.find((k) => k.recipient.equals(parsed.recipient));
  if (key === undefined) {
    throw new FormatInvalidError(
      'ERR_FORMAT_MALFORMED',
      `sealed to recovery key ${parsed.recipient.toString('hex')}, which was not given ` +
        `(given: ${keys.map((k) => k.recipient.toString('hex')).join(', ') || 'none'})`,
    );
  }
  try {
    const ephemeral = publicKeyFromRaw(parsed.ephemeralRaw);
    const shared = diffieHellman({ privateKey: key.privateKey, publicKey: ephemeral.key });
    const aesKey = deriveKey(shared, parsed.ephemeralRaw, key.raw);
    const decipher = createDecipheriv('aes-256-gcm', aesKey, parsed.nonce);
    decipher.setAAD(Buffer.concat([header(parsed.recipient), context]));
    decipher.setAuthTag(parsed.tag);
    return Buffer.concat([decipher.update(parsed.body), decipher.final()]);
  } catch (err) {
    throw new DecryptionFailedError({ cause: err });
  }
}
