// The resume file of `rewrite --via-api` (src/api/checkpoint.ts): what is written is read back, it is
// replaced whole (no temp file left beside it), and a foreign or broken file is refused.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  readViaApiCheckpoint,
  viaApiCheckpoint,
  writeViaApiCheckpoint,
} from '../../src/api/checkpoint.js';
import { AtrestError } from '../../src/errors.js';

function isInvalid(pattern: RegExp): (err: unknown) => boolean {
  return (err) => {
    assert.ok(err instanceof AtrestError);
    assert.equal(err.code, 'ERR_CHECKPOINT_INVALID');
    assert.match(err.message, pattern);
    return true;
  };
}

describe('the rewrite --via-api resume file', () => {
  it('reads back what was written, and each write replaces the file whole', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'atrest-via-api-ckpt-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'resume.json');
    const resources = ['secrets', 'configmaps'];
    assert.equal(await readViaApiCheckpoint(file, resources), undefined, 'no file: nothing to resume');
    writeViaApiCheckpoint(file, viaApiCheckpoint(resources, [], { resource: 'secrets', after: 'a/x' }));
    writeViaApiCheckpoint(file, viaApiCheckpoint(resources, ['secrets'], { resource: 'configmaps', after: 'b/y' }));
    assert.deepEqual(await readViaApiCheckpoint(file, resources), {
      kind: 'atrest-rewrite-via-api-checkpoint',
      version: 1,
      resources,
      completed: ['secrets'],
      current: { resource: 'configmaps', after: 'b/y' },
    });
    assert.deepEqual(readdirSync(dir), ['resume.json'], 'no temp file is left behind');
  });

  it('refuses a file for other resources, a file of another kind, and a file that is not JSON', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'atrest-via-api-ckpt-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'resume.json');
    writeViaApiCheckpoint(file, viaApiCheckpoint(['configmaps'], []));
    await assert.rejects(readViaApiCheckpoint(file, ['secrets']), isInvalid(/for resources configmaps, not secrets/));
    writeFileSync(file, JSON.stringify({ version: 1, ranges: [] }));
    await assert.rejects(readViaApiCheckpoint(file, ['secrets']), isInvalid(/not an atrest rewrite checkpoint/));
    writeFileSync(file, '{"kind": "atrest-rewrite-via-api-checkpoint", ');
    await assert.rejects(readViaApiCheckpoint(file, ['secrets']), isInvalid(/is not JSON/));
  });
});
