// Test helpers for the transformer suites: contexts, deterministic randomness, and in-process KMS services
// (the injected dependency of the kms formats; the real plugin is tested over its socket elsewhere).

import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import type {
  KmsV1Service,
  KmsV2DecryptRequest,
  KmsV2EncryptResult,
  KmsV2Service,
  KmsV2Status,
} from '../../src/transformers/kms-services.js';
import type { TransformContext } from '../../src/transformers/transformer.js';

export function ctx(etcdKey = '/registry/secrets/default/secret1'): TransformContext {
  return { authenticatedData: Buffer.from(etcdKey, 'utf8') };
}

/** Reproducible "randomness": SHA-256(label || counter) blocks. Each call returns a fresh buffer. */
export function deterministicRandom(label: string): (n: number) => Buffer {
  let counter = 0;
  return (n: number) => {
    const out: Buffer[] = [];
    let have = 0;
    while (have < n) {
      const block = createHash('sha256').update(`${label}/${counter++}`).digest();
      out.push(block);
      have += block.length;
    }
    return Buffer.concat(out).subarray(0, n);
  };
}

/** Wraps with AES-256-GCM under a KEK: [nonce 12][ct][tag 16]; unwrap refuses anything it did not wrap. */
export function kekWrap(kek: Buffer, plain: Uint8Array, aad: Uint8Array, nonce: Buffer): Buffer {
  const c = createCipheriv('aes-256-gcm', kek, nonce);
  c.setAAD(aad);
  return Buffer.concat([nonce, c.update(plain), c.final(), c.getAuthTag()]);
}

export function kekUnwrap(kek: Buffer, wrapped: Uint8Array, aad: Uint8Array): Buffer {
  if (wrapped.length < 28) throw new Error('fake KMS: ciphertext too short');
  const d = createDecipheriv('aes-256-gcm', kek, wrapped.subarray(0, 12));
  d.setAAD(aad);
  d.setAuthTag(wrapped.subarray(wrapped.length - 16));
  return Buffer.concat([d.update(wrapped.subarray(12, wrapped.length - 16)), d.final()]);
}

export interface FakeKmsV1 extends KmsV1Service {
  readonly calls: { encrypt: number; decrypt: number };
  failing: boolean;
}

export function createFakeKmsV1(
  kek: Buffer = randomBytes(32),
  nonceRandom?: (n: number) => Buffer,
): FakeKmsV1 {
  const aad = Buffer.from('fake-kms-v1');
  const fake: FakeKmsV1 = {
    calls: { encrypt: 0, decrypt: 0 },
    failing: false,
    async encrypt(plain) {
      fake.calls.encrypt++;
      if (fake.failing) throw new Error('fake KMS v1 is down');
      return kekWrap(
        kek,
        Buffer.from(plain),
        aad,
        nonceRandom ? Buffer.from(nonceRandom(12)) : randomBytes(12),
      );
    },
    async decrypt(cipher) {
      fake.calls.decrypt++;
      if (fake.failing) throw new Error('fake KMS v1 is down');
      return kekUnwrap(kek, cipher, aad);
    },
  };
  return fake;
}

export interface FakeKmsV2 extends KmsV2Service {
  status_: { version: string; healthz: string; keyID: string };
  /** Overrides for the next Encrypt answers (key id, annotations, ciphertext). */
  encryptOverride?: Partial<KmsV2EncryptResult>;
  annotations: Record<string, Buffer>;
  statusFails: boolean;
  encryptFails: boolean;
  decryptFails: boolean;
  readonly calls: { status: number; encrypt: number; decrypt: number };
  readonly uids: string[];
}

/** One KEK per key id; Decrypt refuses key ids it does not know, as a plugin must. */
export function createFakeKmsV2(
  keks: Record<string, Buffer> = {},
  nonceRandom?: (n: number) => Buffer,
): FakeKmsV2 {
  const kekFor = (keyID: string): Buffer => (keks[keyID] ??= randomBytes(32));
  const fake: FakeKmsV2 = {
    status_: { version: 'v2', healthz: 'ok', keyID: 'key-1' },
    annotations: {},
    statusFails: false,
    encryptFails: false,
    decryptFails: false,
    calls: { status: 0, encrypt: 0, decrypt: 0 },
    uids: [],
    async status(): Promise<KmsV2Status> {
      fake.calls.status++;
      if (fake.statusFails) throw new Error('fake KMS v2 is down');
      return { ...fake.status_ };
    },
    async encrypt(plaintext, uid): Promise<KmsV2EncryptResult> {
      fake.calls.encrypt++;
      fake.uids.push(uid);
      if (fake.encryptFails) throw new Error('fake KMS v2 cannot encrypt');
      const keyID = fake.status_.keyID;
      const ciphertext = kekWrap(
        kekFor(keyID),
        Buffer.from(plaintext),
        Buffer.from(keyID),
        nonceRandom ? Buffer.from(nonceRandom(12)) : randomBytes(12),
      );
      return { ciphertext, keyID, annotations: { ...fake.annotations }, ...fake.encryptOverride };
    },
    async decrypt(request: KmsV2DecryptRequest): Promise<Buffer> {
      fake.calls.decrypt++;
      fake.uids.push(request.uid);
      if (fake.decryptFails) throw new Error('fake KMS v2 cannot decrypt');
      const kek = keks[request.keyID];
      if (kek === undefined) throw new Error('fake KMS v2: unknown key id');
      return kekUnwrap(kek, request.ciphertext, Buffer.from(request.keyID));
    },
  };
  return fake;
}

/** A clock the test moves by hand. */
export function manualClock(start = Date.UTC(2026, 0, 1)): {
  now: () => number;
  advance: (ms: number) => void;
} {
  let t = start;
  return { now: () => t, advance: (ms) => void (t += ms) };
}
