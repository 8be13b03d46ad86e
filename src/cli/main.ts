#!/usr/bin/env node
// The `atrest` command: the composition root. Each subcommand lives in its own file and registers
// itself here; only src/cli/ reads argv or the environment, writes to the console, or exits.
// Subcommand modules are imported on demand: `atrest serve` never loads the etcd tools, so the
// plugin (and every CLI spawned by the tests) starts faster. `--help` loads them all.

import { Command } from 'commander';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { exitCodeFor, describeError } from './exit.js';

type Register = (program: Command, version: string) => void;

const COMMANDS: Readonly<Record<string, () => Promise<Register>>> = {
  serve: async () => (await import('./serve.js')).registerServe,
  keys: async () => (await import('./keys.js')).registerKeys,
  scan: async () => (await import('./scan.js')).registerScan,
  rewrite: async () => (await import('./rewrite.js')).registerRewrite,
  decrypt: async () => (await import('./decrypt.js')).registerDecrypt,
  recovery: async () => (await import('./recovery.js')).registerRecovery,
  config: async () => (await import('./config.js')).registerConfig,
};

/** The package version, from the nearest package.json named atrest above this file. */
function packageVersion(): string {
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    const file = join(dir, 'package.json');
    if (existsSync(file)) {
      const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'atrest' && pkg.version !== undefined) return pkg.version;
    }
    if (dirname(dir) === dir) return '0.0.0-unknown';
  }
}

async function main(): Promise<void> {
  const version = packageVersion();
  const program = new Command('atrest')
    .description('Encryption at rest for Kubernetes: KMS plugin, storage formats, etcd tools')
    .version(version)
    .showHelpAfterError();
  const requested = process.argv[2];
  const names = requested !== undefined && requested in COMMANDS ? [requested] : Object.keys(COMMANDS);
  for (const name of names) (await COMMANDS[name]!())(program, version);
  await program.parseAsync(process.argv);
}

main().catch((err: unknown) => {
  process.stderr.write(`atrest: ${describeError(err)}\n`);
  process.exitCode = exitCodeFor(err);
});
