// Provenance, re-checked on every run: the recorded golden vectors decrypt with Go's own crypto
// (crypto/aes, crypto/cipher, crypto/hmac, golang.org/x/crypto nacl/secretbox), independently of atrest.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { RECORDED_GOLDEN } from './atrest-golden.js';

function findGo(): string {
  const candidates = [
    ...(process.env.PATH ?? '').split(':').map((d) => join(d, 'go')),
    '/usr/local/go/bin/go',
  ];
  const go = candidates.find((c) => existsSync(c));
  assert.ok(go, 'Go is required for this test; scripts/setup/40-go-oracle.sh installs it');
  return go;
}

test('every recorded golden vector decrypts with Go crypto to the recorded plaintext', () => {
  const input = Object.entries(RECORDED_GOLDEN)
    .map(([name, hex]) => `${name} ${hex}`)
    .join('\n');
  const r = spawnSync(findGo(), ['run', '.', input], {
    cwd: join('test', 'vectors', 'crosscheck'),
    encoding: 'utf8',
    timeout: 300_000,
    env: { ...process.env, GOFLAGS: '-mod=readonly' },
  });
  assert.equal(r.status, 0, `go run failed:\n${r.stdout}\n${r.stderr}`);
  const verdicts = r.stdout
    .split('\n')
    .filter((l) => /^\S+ (true|false)$/.test(l))
    .map((l) => l.split(' '));
  assert.deepEqual(verdicts.map(([name]) => name).sort(), Object.keys(RECORDED_GOLDEN).sort());
  assert.ok(
    verdicts.every(([, ok]) => ok === 'true'),
    r.stdout,
  );
});
