// `atrest serve --backend pkcs11` under production-like load: 64 concurrent callers over 8
// connections, two CPU burner processes beside it, thousands of KMS v2 Encrypt+Decrypt pairs and some
// v1beta1 ones against a SoftHSM2 token. The plugin must stay alive and every pair must round-trip.
//
// This is the regression test for the heap corruption of a Cryptoki library initialised without
// CKF_OS_LOCKING_OK and called from libuv's thread pool: it aborted the plugin within seconds.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  createKmsV1Client,
  createKmsV2Client,
  type KmsV1Client,
  type KmsV2Client,
} from '../../src/kms-client/index.js';
import { startCpuBurners, type CpuBurners } from '../helpers/cpu-burner.js';
import { startPkcs11Plugin, type Pkcs11Plugin } from './pkcs11-plugin.js';

const CALLERS = 64;
const CONNECTIONS = 8;
const V2_PAIRS_PER_CALLER = 40; // 2,560 v2 pairs
const V1_EVERY = 8; // and one v1beta1 pair after every 8th v2 pair: 320 v1 pairs

describe('atrest serve with the pkcs11 backend under load', () => {
  let plugin: Pkcs11Plugin;
  let burners: CpuBurners;
  const v1: KmsV1Client[] = [];
  const v2: KmsV2Client[] = [];

  before(async () => {
    burners = startCpuBurners(2);
    plugin = await startPkcs11Plugin({
      keyLabel: 'atrest-kek',
      timeoutMs: 60_000,
      // The default 2 s bounds the wait for a free session; with the CPU starved on purpose a call
      // may wait longer, and this test is about crashes and wrong answers, not about latency.
      extraConfig: ['  timeout: 60s'],
    });
    for (let i = 0; i < CONNECTIONS; i++) {
      v1.push(createKmsV1Client({ endpoint: plugin.endpoint, timeoutMs: 60_000 }));
      v2.push(createKmsV2Client({ endpoint: plugin.endpoint, timeoutMs: 60_000 }));
    }
  });

  after(async () => {
    await Promise.all([...v1, ...v2].map((c) => c.close()));
    await plugin?.stop();
    await burners?.stop();
  });

  it('stays alive and round-trips every v2 and v1beta1 pair from 64 concurrent callers', async () => {
    let v2Pairs = 0;
    let v1Pairs = 0;
    const failures: string[] = [];
    let exited: string | undefined;
    plugin.process.once('exit', (code, signal) => (exited = `code ${code}, signal ${signal}`));

    async function caller(n: number): Promise<void> {
      const c2 = v2[n % CONNECTIONS]!;
      const c1 = v1[n % CONNECTIONS]!;
      for (let i = 0; i < V2_PAIRS_PER_CALLER && exited === undefined; i++) {
        try {
          const plaintext = randomBytes(32);
          const uid = `caller-${n}-${i}`;
          const enc = await c2.encrypt(plaintext, uid);
          const back = await c2.decrypt({
            ciphertext: enc.ciphertext,
            uid,
            keyID: enc.keyID,
            annotations: enc.annotations,
          });
          if (!back.equals(plaintext)) failures.push(`v2 pair ${n}/${i}: wrong plaintext`);
          else v2Pairs++;
          if (i % V1_EVERY === V1_EVERY - 1) {
            const dek = randomBytes(32);
            const back1 = await c1.decrypt(await c1.encrypt(dek));
            if (!back1.equals(dek)) failures.push(`v1 pair ${n}/${i}: wrong plaintext`);
            else v1Pairs++;
          }
        } catch (err) {
          failures.push(`pair ${n}/${i}: ${String(err)}`);
          if (failures.length > 20) return;
        }
      }
    }

    await Promise.all(Array.from({ length: CALLERS }, (_, n) => caller(n)));
    const context = () =>
      `plugin ${exited === undefined ? 'alive' : `exited (${exited})`}; ` +
      `first failures:\n${failures.slice(0, 5).join('\n')}\nplugin stderr (without call logs):\n` +
      plugin.stderr().split('\n').filter((l) => !l.includes('"kms call"')).join('\n');
    assert.equal(exited, undefined, context());
    assert.deepEqual(failures, [], context());
    assert.equal(v2Pairs, CALLERS * V2_PAIRS_PER_CALLER);
    assert.equal(v1Pairs, CALLERS * Math.floor(V2_PAIRS_PER_CALLER / V1_EVERY));
    // Still answering afterwards, and healthy.
    assert.equal((await plugin.kmsV2.status()).healthz, 'ok');
  });
});
