// The layer rules of src/, read from the import statements of every source file: which folder may
// import which, and that only the composition root (cli/) touches argv, the environment or the exit
// code. A new arrow is a decision: add it to LAYERS with its reason, or move the code.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, normalize, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const SRC = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'src');

/**
 * What each part of src/ may import (besides itself). A part is a folder, or a file at the top of src/.
 * The reasons are the design; STYLE.md has the picture.
 */
const LAYERS: Readonly<Record<string, readonly string[]>> = {
  // Leaves (LEAVES below): no imports from the project; every part may import them.
  errors: [],
  bytes: [],
  logger: [],
  duration: [],
  'key-id': [],
  // The one retry-with-backoff loop (backends, the API client, the gRPC client's wait-for-ready).
  retry: [],
  // Bounded-concurrency work over paged lists with an in-order low-water mark (etcd tools and
  // rewrite --via-api): knows nothing of where the pages come from.
  paging: [],
  // The pooled CSPRNG every layer draws nonces, IVs, DEKs and seeds from (node:crypto only).
  random: [],
  // Wire codecs (protobuf messages): pure, used by the plugin, the clients and the kms v2 format.
  proto: ['errors', 'bytes'],
  // Storage formats: pure. The kms v2 EncryptedObject is part of the storage format, so its codec in
  // proto/ may be used here (proto/ is as pure as transformers/).
  transformers: ['errors', 'bytes', 'proto'],
  // EncryptionConfiguration: parses, validates, builds transformers.
  config: ['errors', 'bytes', 'transformers'],
  // HTTP/2 + gRPC transport: knows nothing of KMS.
  grpc: ['errors', 'bytes', 'logger'],
  // KEK backends behind one interface.
  backends: ['errors', 'bytes', 'logger'],
  // Break-glass recovery: a layer around any backend (its interface), and KMS services in the shape
  // the kms formats call (their interfaces, and the BuildDeps type of config/).
  recovery: ['errors', 'bytes', 'backends', 'config', 'transformers'],
  // The plugin: service on plain types over a backend, gRPC adapter over grpc/; it refuses to answer
  // what kube-apiserver would refuse, with the kms v2 format's own checks.
  kms: ['errors', 'bytes', 'logger', 'backends', 'grpc', 'proto', 'transformers'],
  // The API server's side of the KMS protocol, for tools and tests.
  'kms-client': ['errors', 'bytes', 'grpc', 'proto', 'transformers'],
  // Health and metrics endpoints.
  health: ['errors', 'logger'],
  // etcd tools: stored values (transformers), which resources a config covers (config), and whether
  // a kms value carries a recovery seal (recovery). The etcd client speaks etcd's native gRPC API:
  // it reuses grpc/'s message framing and status codes (not the KMS server or client), and its
  // etcd messages' codec lives with the other codecs in proto/.
  etcd: ['errors', 'bytes', 'logger', 'grpc', 'proto', 'transformers', 'config', 'recovery'],
  // Tools on the Kubernetes API (the key_id hash kube-apiserver's metrics use is the kms v2 format's).
  api: ['errors', 'bytes', 'logger', 'etcd', 'transformers'],
  // The public library entry point.
  index: ['errors', 'config', 'transformers', 'kms-client'],
  // The composition root.
  cli: ['*'],
};

/** Small shared definitions every part may use: the error catalog, byte helpers, the logger
 * interface, Go durations, how kube-apiserver hashes a key id, retrying with backoff, working
 * through paged lists, drawing random bytes. */
const LEAVES = new Set(['errors', 'bytes', 'logger', 'duration', 'key-id', 'retry', 'paging', 'random']);

/** The only packages the storage formats use: they stay pure (no I/O, no process, no console). */
const TRANSFORMER_PACKAGES = [/^node:crypto$/, /^@noble\/ciphers\/[a-z0-9]+\.js$/];

/** Only the composition root reads these (STYLE.md: nothing below cli/ reads argv/env or exits). */
const ROOT_ONLY = [/\bprocess\.env\b/, /\bprocess\.argv\b/, /\bprocess\.exit(Code)?\b/, /\.loadFromDefault\(/];

interface Arrow {
  readonly from: string;
  readonly to: string;
  readonly where: string;
}

function partOf(file: string): string {
  const rel = relative(SRC, file).split(sep);
  return rel.length > 1 ? rel[0]! : rel[0]!.replace(/\.(ts|js)$/, '');
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sourceFiles(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

/** Code without comments, so that a comment naming process.env is not a violation. */
function code(text: string): string {
  return text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"`])\/\/.*$/gm, '$1');
}

/** Every relative import (static, re-export, dynamic) of src/, as arrows between parts. */
export function importArrows(files: readonly { path: string; text: string }[]): Arrow[] {
  const arrows: Arrow[] = [];
  for (const { path, text } of files) {
    const lines = code(text).split('\n');
    lines.forEach((line, i) => {
      for (const m of line.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|^\s*import\s+)'(\.[^']+)'/g)) {
        const target = normalize(join(dirname(path), m[1]!));
        const from = partOf(path);
        const to = partOf(target);
        if (from !== to) arrows.push({ from, to, where: `${relative(SRC, path)}:${i + 1}` });
      }
    });
  }
  return arrows;
}

export function violations(arrows: readonly Arrow[], layers: typeof LAYERS): string[] {
  return arrows
    .filter((a) => {
      const allowed = layers[a.from];
      if (allowed !== undefined && LEAVES.has(a.to) && allowed.length > 0) return false;
      if (LEAVES.has(a.from) && allowed !== undefined) return true;
      return allowed === undefined || !(allowed.includes('*') || allowed.includes(a.to));
    })
    .map((a) =>
      layers[a.from] === undefined
        ? `${a.where}: "${a.from}" is a new part of src/: give it a row in LAYERS`
        : `${a.where}: ${a.from} -> ${a.to} is not allowed (allowed: ${layers[a.from]!.join(', ') || 'nothing'})`,
    );
}

const files = sourceFiles(SRC).map((path) => ({ path, text: readFileSync(path, 'utf8') }));

describe('layer rules of src/', () => {
  it('every import follows LAYERS', () => {
    assert.deepEqual(violations(importArrows(files), LAYERS), []);
  });

  it('every part of src/ has a row (a new folder is a decision too)', () => {
    const parts = new Set(files.map((f) => partOf(f.path)));
    assert.deepEqual([...parts].filter((p) => !(p in LAYERS)), []);
  });

  it('only cli/ reads argv or the environment, or sets the exit code', () => {
    const found = files
      .filter((f) => partOf(f.path) !== 'cli')
      .flatMap((f) =>
        code(f.text)
          .split('\n')
          .flatMap((line, i) => (ROOT_ONLY.some((re) => re.test(line)) ? [`${relative(SRC, f.path)}:${i + 1}: ${line.trim()}`] : [])),
      );
    assert.deepEqual(found, []);
  });

  it('the storage formats use no package but node:crypto and @noble/ciphers, and no process or console', () => {
    const found = files
      .filter((f) => partOf(f.path) === 'transformers')
      .flatMap((f) => {
        const text = code(f.text);
        const packages = [...text.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*)'([^.'][^']*)'/g)].map((m) => m[1]!);
        return [
          ...packages.filter((p) => !TRANSFORMER_PACKAGES.some((re) => re.test(p))).map((p) => `${relative(SRC, f.path)} imports ${p}`),
          ...(/\bprocess\.|\bconsole\./.test(text) ? [`${relative(SRC, f.path)} touches process or console`] : []),
        ];
      });
    assert.deepEqual(found, []);
  });

  it('catches a planted violation, in every import form', () => {
    const planted = [
      { path: join(SRC, 'transformers', 'planted.ts'), text: "import { x } from '../etcd/scan.js';\n" },
      { path: join(SRC, 'kms', 'planted.ts'), text: "export { y } from '../etcd/rewrite.js';\n" },
      { path: join(SRC, 'grpc', 'planted.ts'), text: "const m = await import('../kms/service.js');\n" },
      { path: join(SRC, 'health', 'planted.ts'), text: "import '../backends/keyring.js';\n// import { z } from '../cli/main.js';\n" },
    ];
    const found = violations(importArrows(planted), LAYERS);
    assert.equal(found.length, 4, found.join('\n'));
    assert.match(found[0]!, /transformers\/planted\.ts:1: transformers -> etcd is not allowed/);
    assert.match(found[2]!, /grpc -> kms/);
  });
});
