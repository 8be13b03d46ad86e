// Shared fixtures for the etcd tests: encryption configurations with fresh keys, Kubernetes-encoded
// Secrets, writers for each storage format (what a kube-apiserver with that provider first would
// store), and running the CLI.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineMessage } from '../../src/proto/wire.js';
import { createKeyedProvider, createPrefixTransformers } from '../../src/transformers/prefix.js';
import type { Transformer } from '../../src/transformers/transformer.js';

export const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

export const enc = (s: string): Buffer => Buffer.from(s, 'utf8');

export interface NamedKey {
  readonly name: string;
  readonly secret: Buffer;
}

export function newKey(name: string): NamedKey {
  return { name, secret: randomBytes(32) };
}

/** The writer kube-apiserver would use with this keyed provider (first key) listed first. */
export function keyedWriter(provider: 'aescbc' | 'aesgcm' | 'secretbox', key: NamedKey): Transformer {
  return createPrefixTransformers([createKeyedProvider(provider, [key])]);
}

export function keysYaml(keys: readonly NamedKey[]): string {
  return keys.map((k) => `{name: ${k.name}, secret: ${k.secret.toString('base64')}}`).join(', ');
}

export function writeFile(dir: string, name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

const Unknown = defineMessage('runtime.Unknown', {
  typeMeta: { no: 1, kind: 'bytes' },
  raw: { no: 2, kind: 'bytes' },
});
const TypeMeta = defineMessage('TypeMeta', { apiVersion: { no: 1, kind: 'string' }, kind: { no: 2, kind: 'string' } });
const Meta = defineMessage('ObjectMeta', { name: { no: 1, kind: 'string' }, namespace: { no: 3, kind: 'string' } });
const Secret = defineMessage('Secret', {
  metadata: { no: 1, kind: 'bytes' },
  data: { no: 2, kind: 'map<string,bytes>' },
  type: { no: 3, kind: 'string' },
});

/** A Secret in the Kubernetes protobuf storage encoding ("k8s\0" + runtime.Unknown). */
export function encodeSecret(namespace: string, name: string, data: Record<string, string>): Buffer {
  const raw = Secret.encode({
    metadata: Meta.encode({ name, namespace }),
    data: Object.fromEntries(Object.entries(data).map(([k, v]) => [k, enc(v)])),
    type: 'Opaque',
  });
  return Buffer.concat([
    Buffer.from([0x6b, 0x38, 0x73, 0x00]),
    Unknown.encode({ typeMeta: TypeMeta.encode({ apiVersion: 'v1', kind: 'Secret' }), raw }),
  ]);
}

export interface CliResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

export function runCli(args: readonly string[], options: { stdin?: Buffer; timeoutMs?: number } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 120_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
    child.stdin.end(options.stdin ?? Buffer.alloc(0));
  });
}
