// Builds, from fixed inputs, the transformers that produced the atrest golden vectors in
// atrest-golden.test.ts. Everything random (IVs, nonces, DEKs, seeds, HKDF info, the fake KMS's wrapping
// nonces) comes from SHA-256 counters, so the same code writes the same bytes again.

import { createHash } from 'node:crypto';
import { createKeyedProvider, createPrefixTransformers } from '../../src/transformers/prefix.js';
import { createKmsV1Transformer } from '../../src/transformers/kms-v1.js';
import { createKmsV2Transformer } from '../../src/transformers/kms-v2.js';
import type { Transformer } from '../../src/transformers/transformer.js';
import { createFakeKmsV1, createFakeKmsV2, deterministicRandom } from '../transformers/helpers.js';

export const GOLDEN_PLAINTEXT = Buffer.from('pandas are the best', 'utf8');
export const GOLDEN_ETCD_KEY = '/registry/secrets/default/secret1';

/** Secrets are SHA-256 of a label (truncated), so they are written down here and nowhere else. */
export function goldenSecret(label: string, size: number): Buffer {
  return createHash('sha256').update(`atrest golden ${label}`).digest().subarray(0, size);
}

export interface GoldenCase {
  readonly name: string;
  /** A fresh transformer that writes the golden bytes as its first write (and reads them). */
  make(): Promise<Transformer>;
}

export const GOLDEN_CASES: readonly GoldenCase[] = [
  ...(
    [
      ['aescbc', 32],
      ['aescbc', 16],
      ['aesgcm', 32],
      ['aesgcm', 16],
      ['secretbox', 32],
    ] as const
  ).map(([provider, size]) => ({
    name: `${provider}-${size * 8}`,
    async make(): Promise<Transformer> {
      return createPrefixTransformers([
        createKeyedProvider(
          provider,
          [{ name: 'key1', secret: goldenSecret(`${provider}-${size}`, size) }],
          { random: deterministicRandom(`golden ${provider}-${size}`) },
        ),
      ]);
    },
  })),
  {
    name: 'kms-v1',
    async make() {
      const kms = createFakeKmsV1(
        goldenSecret('kms-v1 kek', 32),
        deterministicRandom('golden kms-v1 kek nonces'),
      );
      return createPrefixTransformers([
        createKmsV1Transformer({
          name: 'golden',
          service: kms,
          cacheSize: 1000,
          random: deterministicRandom('golden kms-v1'),
        }),
      ]);
    },
  },
  {
    name: 'kms-v1-legacy-cbc',
    async make() {
      const kms = createFakeKmsV1(
        goldenSecret('kms-v1 kek', 32),
        deterministicRandom('golden kms-v1-cbc kek nonces'),
      );
      return createPrefixTransformers([
        createKmsV1Transformer({
          name: 'golden',
          service: kms,
          cacheSize: 1000,
          random: deterministicRandom('golden kms-v1-cbc'),
          legacyCbcWrites: true,
        }),
      ]);
    },
  },
  {
    name: 'kms-v2',
    async make() {
      const kms = createFakeKmsV2(
        { 'golden-key-1': goldenSecret('kms-v2 kek', 32) },
        deterministicRandom('golden kms-v2 kek nonces'),
      );
      kms.status_.keyID = 'golden-key-1';
      kms.annotations = { 'version.encryption.remote.io': Buffer.from('1') };
      const t = createKmsV2Transformer({
        name: 'golden',
        service: kms,
        random: deterministicRandom('golden kms-v2'),
        uid: () => '00000000-0000-4000-8000-000000000000',
        now: () => Date.UTC(2026, 10, 28),
      });
      const h = await t.refreshStatus();
      if (!h.ok) throw h.error;
      return createPrefixTransformers([t]);
    },
  },
];
