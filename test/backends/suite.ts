// The one backend suite: round trip, rotation, tamper, unknown key id, restart and outage, run
// against the keyring and every remote backend, each against its real server. Each *.test.ts
// provides a BackendUnderTest and calls runBackendSuite.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { AtrestError, BackendError } from '../../src/errors.js';
import type { BackendHealth, KeyBackend } from '../../src/backends/backend.js';

export interface BackendUnderTest {
  /** Opens a backend on the running server (called again for "restart"). Closed by the suite. */
  open(): Promise<KeyBackend>;
  /** Rotates the key in the key manager the way an operator would. */
  rotate(): Promise<void>;
  /** How the open backend comes to see a rotation (remote: its background refresh; keyring: reload). */
  readonly rotationNoticedBy: 'background' | 'reload';
  /** Rewrites a ciphertext so that it names a key id of the right shape that the key manager lacks. */
  withUnknownKeyID(ciphertext: Buffer): Buffer;
  /** For backends with a server: stop it, then start it again with the same keys provisioned. */
  readonly server?: { stop(): Promise<void>; start(): Promise<void> };
}

export async function waitFor(
  what: string,
  check: () => Promise<boolean> | boolean,
  timeoutMs = 20_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function healthOf(b: KeyBackend): BackendHealth | undefined {
  return b.health?.();
}

/** An error a caller can sort: our catalog only, never an SDK's. */
function assertCatalogError(err: unknown): true {
  assert.ok(err instanceof AtrestError, `expected an AtrestError, got ${String(err)}`);
  return true;
}

function isUnknownKey(err: unknown): boolean {
  return (
    (err instanceof AtrestError && err.code === 'ERR_KEY_UNKNOWN') ||
    (err instanceof BackendError && err.kind === 'user-induced')
  );
}

export function runBackendSuite(name: string, sut: BackendUnderTest): void {
  describe(`${name}: the shared backend suite`, () => {
    it('round-trips a 32-byte seed and a 1-byte DEK, with the current key id', async (t) => {
      const b = await sut.open();
      t.after(() => b.close());
      for (const size of [32, 1, 100]) {
        const plaintext = randomBytes(size);
        const wrapped = await b.wrap({ plaintext, uid: 'suite' });
        assert.equal(wrapped.keyID, await b.currentKeyID());
        assert.ok(wrapped.ciphertext.length > 0 && wrapped.ciphertext.length <= 1024);
        if (size >= 16) {
          assert.ok(
            !wrapped.ciphertext.includes(plaintext),
            'the plaintext must not appear in the ciphertext',
          );
        }
        const back = await b.unwrap({ ciphertext: wrapped.ciphertext, keyID: wrapped.keyID });
        assert.deepEqual(back, plaintext);
        // v1beta1 Decrypt has nothing but the ciphertext.
        assert.deepEqual(await b.unwrap({ ciphertext: wrapped.ciphertext }), plaintext);
      }
    });

    it('gives distinct ciphertexts for the same plaintext', async (t) => {
      const b = await sut.open();
      t.after(() => b.close());
      const plaintext = randomBytes(32);
      const one = await b.wrap({ plaintext });
      const two = await b.wrap({ plaintext });
      assert.notDeepEqual(one.ciphertext, two.ciphertext);
    });

    it('round-trips through v2 annotations when the request allows them', async (t) => {
      const b = await sut.open();
      t.after(() => b.close());
      const plaintext = randomBytes(32);
      const wrapped = await b.wrap({ plaintext, annotationsAllowed: true });
      assert.ok(wrapped.ciphertext.length <= 1024);
      for (const key of Object.keys(wrapped.annotations ?? {})) {
        assert.match(key, /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+$/);
      }
      const back = await b.unwrap({
        ciphertext: wrapped.ciphertext,
        keyID: wrapped.keyID,
        annotations: wrapped.annotations ?? {},
      });
      assert.deepEqual(back, plaintext);
    });

    it('notices a rotation in the key manager and keeps decrypting what the old key wrapped', async (t) => {
      const b = await sut.open();
      t.after(() => b.close());
      const before = await b.currentKeyID();
      const plaintext = randomBytes(32);
      const old = await b.wrap({ plaintext });
      await sut.rotate();
      if (sut.rotationNoticedBy === 'reload') await b.reload();
      await waitFor('the new key id', async () => (await b.currentKeyID()) !== before);
      const after = await b.currentKeyID();
      assert.notEqual(after, before);
      const fresh = await b.wrap({ plaintext });
      assert.equal(fresh.keyID, after);
      assert.deepEqual(await b.unwrap({ ciphertext: old.ciphertext, keyID: old.keyID }), plaintext);
      assert.deepEqual(
        await b.unwrap({ ciphertext: fresh.ciphertext, keyID: fresh.keyID }),
        plaintext,
      );
    });

    it('refuses a tampered ciphertext in every region with a catalog error', async (t) => {
      const b = await sut.open();
      t.after(() => b.close());
      const wrapped = await b.wrap({ plaintext: randomBytes(32) });
      const c = wrapped.ciphertext;
      const positions = [0, 4, Math.floor(c.length / 2), c.length - 17, c.length - 1];
      for (const at of positions) {
        const bad = Buffer.from(c);
        bad[at] = bad[at]! ^ 0x01;
        await assert.rejects(
          b.unwrap({ ciphertext: bad }),
          assertCatalogError,
          `flip at byte ${at}`,
        );
      }
      await assert.rejects(
        b.unwrap({ ciphertext: c.subarray(0, c.length - 1) }),
        assertCatalogError,
      );
      await assert.rejects(b.unwrap({ ciphertext: c.subarray(0, 5) }), assertCatalogError);
      await assert.rejects(b.unwrap({ ciphertext: randomBytes(64) }), assertCatalogError);
    });

    it('refuses a request key id that disagrees with the ciphertext, and a key it does not know', async (t) => {
      const b = await sut.open();
      t.after(() => b.close());
      const wrapped = await b.wrap({ plaintext: randomBytes(32) });
      await assert.rejects(
        b.unwrap({ ciphertext: wrapped.ciphertext, keyID: wrapped.keyID + '-other' }),
        (err: unknown) => err instanceof AtrestError && err.code === 'ERR_KEY_ID_MISMATCH',
      );
      const foreign = sut.withUnknownKeyID(wrapped.ciphertext);
      await assert.rejects(b.unwrap({ ciphertext: foreign }), (err: unknown) => {
        assert.ok(isUnknownKey(err), `expected an unknown-key error, got ${String(err)}`);
        return true;
      });
    });

    it('decrypts after a restart what the previous instance wrapped', async () => {
      const first = await sut.open();
      const plaintexts = [randomBytes(32), randomBytes(32), randomBytes(32)];
      const wrapped = [];
      for (const p of plaintexts) wrapped.push(await first.wrap({ plaintext: p }));
      await first.close();
      const second = await sut.open();
      try {
        for (const [i, w] of wrapped.entries()) {
          assert.deepEqual(await second.unwrap({ ciphertext: w.ciphertext }), plaintexts[i]);
        }
      } finally {
        await second.close();
      }
    });

    if (sut.server !== undefined) {
      const server = sut.server;
      it('starts while the key manager is down, reports it, and recovers on its own', async (t) => {
        await server.stop();
        let restarted = false;
        t.after(async () => {
          if (!restarted) await server.start();
        });
        const b = await sut.open();
        t.after(() => b.close());
        await assert.rejects(b.wrap({ plaintext: randomBytes(32) }), (err: unknown) => {
          assert.ok(err instanceof BackendError, `expected a BackendError, got ${String(err)}`);
          assert.equal(err.kind, 'unavailable');
          return true;
        });
        const down = healthOf(b);
        if (down !== undefined) {
          assert.equal(down.ok, false);
          assert.equal(down.kind, 'unavailable');
          assert.ok(down.message.length > 0);
        }
        await server.start();
        restarted = true;
        await waitFor('health to recover', () => healthOf(b)?.ok ?? true);
        const plaintext = randomBytes(32);
        const wrapped = await b.wrap({ plaintext });
        assert.deepEqual(await b.unwrap({ ciphertext: wrapped.ciphertext }), plaintext);
      });
    }
  });
}
