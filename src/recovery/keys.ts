// Recovery key files: the public key (PEM, SPKI) that `atrest serve --recovery-public-key` seals to,
// the private key (PEM, PKCS#8, mode 0600) that never goes to a control-plane node, and share files
// (any K of N give the private key back). Reading and writing only; the cryptography is in seal.ts
// and shamir.ts.
//
// A share is one line, so it can be printed, typed back or kept in a password manager:
//   atrest-recovery-share:v1:<recipient hex 16>:<K>:<x>:<y base64>:<check hex 8>
// check = SHA-256(everything before ":<check>")[0..4]: catches a typo before it is combined.

import { createHash, createPrivateKey, createPublicKey, randomBytes } from 'node:crypto';
import { AtrestError, FormatInvalidError } from '../errors.js';
import {
  privateKeyFromKeyObject,
  privateKeyFromRaw,
  publicKeyFromKeyObject,
  rawPrivate,
  type RecoveryPrivateKey,
  type RecoveryPublicKey,
} from './seal.js';
import { combineShares, splitSecret, type Share } from './shamir.js';

const SHARE_TAG = 'atrest-recovery-share:v1';

export function publicKeyPem(key: RecoveryPublicKey): string {
  return key.key.export({ format: 'pem', type: 'spki' }).toString();
}

export function privateKeyPem(key: RecoveryPrivateKey): string {
  return key.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
}

export function parsePublicKeyPem(text: string, source: string): RecoveryPublicKey {
  try {
    return publicKeyFromKeyObject(createPublicKey(text));
  } catch (err) {
    throw new AtrestError(
      'ERR_CONFIG_INVALID',
      `${source}: not an X25519 recovery public key (make one with "atrest recovery init")`,
      { cause: err },
    );
  }
}

export function parsePrivateKeyPem(text: string, source: string): RecoveryPrivateKey {
  try {
    return privateKeyFromKeyObject(createPrivateKey(text));
  } catch (err) {
    throw new AtrestError(
      'ERR_CONFIG_INVALID',
      `${source}: not an X25519 recovery private key`,
      { cause: err },
    );
  }
}

function check(body: string): string {
  return createHash('sha256').update(body).digest('hex').slice(0, 8);
}

export function encodeShare(key: RecoveryPrivateKey, k: number, share: Share): string {
  const body = `${SHARE_TAG}:${key.recipient.toString('hex')}:${k}:${share.x}:${share.y.toString('base64')}`;
  return `${body}:${check(body)}`;
}

export interface ParsedShare extends Share {
  readonly recipient: string;
  readonly k: number;
}

/** Finds the share line in a share file's text (other lines are the human explanation). */
export function parseShare(text: string, source: string): ParsedShare {
  const line = text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .find((l) => l.startsWith(SHARE_TAG + ':'));
  if (line === undefined) {
    throw new FormatInvalidError('ERR_FORMAT_PREFIX', `${source}: no "${SHARE_TAG}:" line found`);
  }
  const parts = line.slice(SHARE_TAG.length + 1).split(':');
  const [recipient, kText, xText, yText, sum] = parts;
  const body = line.slice(0, line.lastIndexOf(':'));
  if (parts.length !== 5 || sum !== check(body)) {
    throw new FormatInvalidError(
      'ERR_FORMAT_MALFORMED',
      `${source}: the share line is damaged (its check digits do not match: a typo?)`,
    );
  }
  const k = Number(kText);
  const x = Number(xText);
  const y = Buffer.from(yText!, 'base64');
  if (!/^[0-9a-f]{16}$/.test(recipient!) || !(k >= 2) || !(x >= 1 && x <= 255) || y.length !== 32) {
    throw new FormatInvalidError('ERR_FORMAT_MALFORMED', `${source}: the share line is malformed`);
  }
  return { recipient: recipient!, k, x, y };
}

export interface ShareFile {
  readonly x: number;
  readonly text: string;
}

/** Splits the private key into n share files, any k of which recover it. */
export function splitPrivateKey(
  key: RecoveryPrivateKey,
  k: number,
  n: number,
  random: (n: number) => Uint8Array = randomBytes,
): ShareFile[] {
  const secret = rawPrivate(key);
  try {
    return splitSecret(secret, k, n, random).map((share) => ({
      x: share.x,
      text:
        `# atrest recovery key share ${share.x} of ${n}: any ${k} shares recover the recovery key\n` +
        `# recovery key ${key.recipient.toString('hex')}; keep this share away from the others\n` +
        `${encodeShare(key, k, share)}\n`,
    }));
  } finally {
    secret.fill(0);
  }
}

/**
 * Combines shares into the private key, and proves it: the result's public key must be the one the
 * shares name. Too few shares, or shares of different keys, fail here with a clear message.
 */
export function combinePrivateKey(shares: readonly ParsedShare[]): RecoveryPrivateKey {
  if (shares.length === 0) throw new AtrestError('ERR_CONFIG_INVALID', 'no recovery shares given');
  const recipients = new Set(shares.map((s) => s.recipient));
  if (recipients.size > 1) {
    throw new AtrestError(
      'ERR_CONFIG_INVALID',
      `the shares belong to different recovery keys (${[...recipients].join(', ')})`,
    );
  }
  const recipient = shares[0]!.recipient;
  const k = Math.max(...shares.map((s) => s.k));
  if (shares.length < k) {
    throw new AtrestError(
      'ERR_CONFIG_INVALID',
      `recovery key ${recipient} needs ${k} shares; ${shares.length} given`,
    );
  }
  let secret: Buffer | undefined;
  try {
    secret = combineShares(shares);
    const key = privateKeyFromRaw(secret);
    if (key.recipient.toString('hex') !== recipient) {
      throw new AtrestError(
        'ERR_CONFIG_INVALID',
        `the shares do not combine into recovery key ${recipient} (a wrong or altered share?)`,
      );
    }
    return key;
  } catch (err) {
    if (err instanceof AtrestError) throw err;
    throw new AtrestError('ERR_CONFIG_INVALID', `the shares cannot be combined: ${(err as Error).message}`);
  } finally {
    secret?.fill(0);
  }
}
