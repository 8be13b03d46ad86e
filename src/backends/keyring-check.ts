// Checks on a parsed keyring that reveal nothing about its keys: the keyring fingerprint (the same on
// every node holding the same keys) and the wrap/unwrap probe run before a key becomes active. Pure:
// no I/O, randomness injected.
//
// Fingerprint (format "kf1-" + 24 hex digits, 96 bits):
//   tag(k) = HMAC-SHA-256(key = k.secret, data = DOMAIN ‖ 0x00 ‖ k.id)
//   fp     = SHA-256(DOMAIN ‖ 0x00 ‖ for each key sorted by id: u8(len id) ‖ id ‖ tag(k))[0..12)
// The per-key HMAC is keyed by the key itself, so the fingerprint cannot be computed, or a key
// guessed from it, without the key material; the domain string keeps these values apart from any other
// HMAC of the same key. Which key is active is not part of it (atrest_active_key_id_info shows that):
// two nodes with the same fingerprint can unwrap exactly the same DEKs.

import { createHash, createHmac } from 'node:crypto';
import { AtrestError } from '../errors.js';
import { bytesEqual } from '../bytes.js';
import type { Keyring, RandomBytes } from './keyring-file.js';
import { WRAP_NONCE_BYTES, openWrapped, parseWrapped, sealWrapped } from './keyring-wrap.js';

const FINGERPRINT_DOMAIN = Buffer.from('atrest keyring fingerprint v1\u0000', 'utf8');
export const FINGERPRINT_PREFIX = 'kf1-';
const FINGERPRINT_BYTES = 12;
const PROBE_BYTES = 32;

export function keyringFingerprint(keyring: Pick<Keyring, 'keys'>): string {
  const sorted = [...keyring.keys].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const outer = createHash('sha256').update(FINGERPRINT_DOMAIN);
  for (const k of sorted) {
    const id = Buffer.from(k.id, 'utf8');
    const tag = createHmac('sha256', k.secret).update(FINGERPRINT_DOMAIN).update(id).digest();
    outer
      .update(Buffer.from([id.length]))
      .update(id)
      .update(tag);
  }
  return FINGERPRINT_PREFIX + outer.digest().subarray(0, FINGERPRINT_BYTES).toString('hex');
}

/**
 * Wraps random bytes with key `id` and unwraps them again through the keyring's own id lookup, as a
 * Decrypt would. Throws (naming the key, never its bytes) when that key cannot be used; a plugin runs it
 * before a key becomes active, so it never starts wrapping with a key it cannot unwrap with.
 */
export function probeKey(keyring: Pick<Keyring, 'keys'>, id: string, random: RandomBytes): void {
  const key = keyring.keys.find((k) => k.id === id);
  const fail = (reason: string, cause?: unknown): AtrestError =>
    new AtrestError(
      'ERR_KEYRING_INVALID',
      `key ${id} failed the wrap/unwrap self-test: ${reason}`,
      cause === undefined ? undefined : { cause },
    );
  if (key === undefined) throw fail('it is not in the keyring');
  const probe = random(PROBE_BYTES);
  const reasonOf = (err: unknown): string => (err instanceof Error ? err.message : String(err));
  let wrapped: ReturnType<typeof parseWrapped>;
  try {
    wrapped = parseWrapped(sealWrapped(id, key.secret, random(WRAP_NONCE_BYTES), probe));
  } catch (err) {
    throw fail(reasonOf(err), err);
  }
  const unwrapWith = keyring.keys.find((k) => k.id === wrapped.keyID);
  if (unwrapWith === undefined) throw fail(`the wrapped bytes name key ${wrapped.keyID}`);
  let back: Buffer;
  try {
    back = openWrapped(wrapped, unwrapWith.secret);
  } catch (err) {
    throw fail(reasonOf(err), err);
  }
  if (probe.length !== PROBE_BYTES || !bytesEqual(back, probe)) {
    throw fail('unwrap returned other bytes than were wrapped');
  }
}
