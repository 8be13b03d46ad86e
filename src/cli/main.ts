#!/usr/bin/env node
// The `atrest` command: the composition root. Each subcommand lives in its own file and registers
// itself here; only src/cli/ reads argv or the environment, writes to the console, or exits.

import { Command } from 'commander';
import { createRequire } from 'node:module';
import { registerServe } from './serve.js';
import { registerKeys } from './keys.js';
import { registerScan } from './scan.js';
import { registerRewrite } from './rewrite.js';
import { registerDecrypt } from './decrypt.js';
import { exitCodeFor, describeError } from './exit.js';

const pkg = createRequire(import.meta.url)('../../../package.json') as { version: string };

const program = new Command('atrest')
  .description('Encryption at rest for Kubernetes: KMS plugin, storage formats, etcd tools')
  .version(pkg.version)
  .showHelpAfterError();

registerServe(program, pkg.version);
registerKeys(program);
registerScan(program);
registerRewrite(program);
registerDecrypt(program);

program.parseAsync(process.argv).catch((err: unknown) => {
  process.stderr.write(`atrest: ${describeError(err)}\n`);
  process.exitCode = exitCodeFor(err);
});
