// The transformers stay pure: they import only the error catalog, the byte helpers, the proto codecs,
// each other, node:crypto and @noble/ciphers (read from the import statements of the sources).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const DIR = join('src', 'transformers');
const ALLOWED = [
  /^\.\/[a-z0-9-]+\.js$/,
  /^\.\.\/errors\.js$/,
  /^\.\.\/bytes\.js$/,
  /^\.\.\/proto\/[a-z0-9-]+\.js$/,
  /^node:crypto$/,
  /^@noble\/ciphers\/[a-z0-9]+\.js$/,
];

test('src/transformers imports nothing but errors, bytes, proto, node:crypto and @noble/ciphers', () => {
  const files = readdirSync(DIR).filter((f) => f.endsWith('.ts'));
  assert.ok(
    files.length >= 10,
    `expected the transformer sources in ${DIR} (run from the repo root)`,
  );
  for (const f of files) {
    const source = readFileSync(join(DIR, f), 'utf8');
    const specifiers = [...source.matchAll(/^\s*(?:import|export)\b[^'"]*?from\s+'([^']+)'/gm)].map(
      (m) => m[1]!,
    );
    for (const s of specifiers) {
      assert.ok(
        ALLOWED.some((re) => re.test(s)),
        `${f} imports ${s}`,
      );
    }
    assert.doesNotMatch(source, /process\.(env|argv)|console\./, `${f} touches process or console`);
  }
});
