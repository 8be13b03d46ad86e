// The library example of README.md, run as written: its code block is read out of the README, pointed
// at a real EncryptionConfiguration whose kms v2 provider is a running plugin on a real UNIX socket,
// and imported as a module. The README cannot drift from the library's API.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { startInProcessPlugin, tempDir } from './kms/helpers.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CONFIG_IN_README = '/etc/kubernetes/enc/enc.yaml';

/** The first ```ts block after the "## The library" heading. */
async function readmeExample(): Promise<string> {
  const readme = await readFile(join(ROOT, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## The library'));
  const match = /```ts\n([\s\S]*?)```/.exec(section);
  assert.ok(match, 'README.md has a ```ts block under "## The library"');
  return match[1]!;
}

test('the README library example writes with kms v2 through a real plugin and reads it back', async (t) => {
  const plugin = await startInProcessPlugin(t);
  const dir = await tempDir(t, 'atrest-readme-');
  const config = join(dir, 'enc.yaml');
  await writeFile(
    config,
    [
      'apiVersion: apiserver.config.k8s.io/v1',
      'kind: EncryptionConfiguration',
      'resources:',
      '  - resources: [secrets]',
      '    providers:',
      '      - kms:',
      '          apiVersion: v2',
      '          name: readme',
      `          endpoint: unix://${plugin.socketPath}`,
      '      - identity: {}',
      '',
    ].join('\n'),
  );
  const example = await readmeExample();
  assert.ok(example.includes(`'${CONFIG_IN_README}'`), `the example loads ${CONFIG_IN_README}`);
  const library = pathToFileURL(join(ROOT, 'dist', 'src', 'index.js')).href;
  const module = [
    "const objectBytes = Buffer.from('k8s\\u0000readme example', 'latin1');",
    example.replace("from 'atrest'", `from ${JSON.stringify(library)}`).replace(CONFIG_IN_README, config),
    'export { objectBytes, stored, data, stale };',
  ].join('\n');
  const file = join(dir, 'example.mjs');
  await writeFile(file, module);
  const result = (await import(pathToFileURL(file).href)) as {
    objectBytes: Buffer;
    stored: Buffer;
    data: Buffer;
    stale: boolean;
  };
  assert.ok(result.stored.toString('latin1').startsWith('k8s:enc:kms:v2:readme:'), 'written by the kms v2 provider');
  assert.deepEqual(result.data, result.objectBytes);
  assert.equal(result.stale, false);
});
