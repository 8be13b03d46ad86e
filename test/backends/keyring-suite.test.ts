// The keyring backend under the shared backend suite (test/backends/suite.ts), on a real keyring file.

import { after } from 'node:test';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  createKeyring,
  readKeyringFile,
  rotateKeyring,
  writeKeyringFile,
} from '../../src/backends/keyring-file.js';
import { createKeyringBackend } from '../../src/backends/keyring.js';
import { runBackendSuite } from './suite.js';

const dir = await mkdtemp(join(tmpdir(), 'atrest-keyring-suite-'));
after(() => rm(dir, { recursive: true, force: true }));
const path = join(dir, 'keyring.json');
await writeKeyringFile(path, createKeyring({ now: new Date(), random: randomBytes }), {
  exclusive: true,
  random: randomBytes,
});

runBackendSuite('keyring', {
  open: () => createKeyringBackend({ path }),
  async rotate() {
    const next = rotateKeyring(await readKeyringFile(path), new Date(), randomBytes);
    await writeKeyringFile(path, next, { exclusive: false, random: randomBytes });
  },
  rotationNoticedBy: 'reload',
  withUnknownKeyID(ciphertext) {
    // [ATK][01][idLen][id...]: same length, another id (the header is the AAD, so only the id differs).
    const out = Buffer.from(ciphertext);
    const idLen = out[4]!;
    out.fill('z'.charCodeAt(0), 5 + idLen - 4, 5 + idLen);
    return out;
  },
});
