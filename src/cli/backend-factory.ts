// Builds the key backend `atrest serve --backend NAME` asks for. To add a backend: declare its flags
// in addBackendOptions() and add one entry to BACKENDS; nothing else in serve needs to change.

import { Option, type Command } from 'commander';
import { AtrestError } from '../errors.js';
import type { KeyBackend } from '../backends/backend.js';
import type { Logger } from '../logger.js';
import { createKeyringBackend } from '../backends/keyring.js';
import { readFile } from 'node:fs/promises';

/** Every serve flag as commander parsed it (backend-specific flags included). */
export type BackendFlags = Readonly<Record<string, unknown>>;

export interface BackendContext {
  readonly flags: BackendFlags;
  readonly logger: Logger;
}

export type BackendFactory = (context: BackendContext) => Promise<KeyBackend>;

function requireString(flags: BackendFlags, name: string, flag: string, backend: string): string {
  const v = flags[name];
  if (typeof v !== 'string' || v === '') {
    throw new AtrestError('ERR_CONFIG_INVALID', `--backend ${backend} needs ${flag}`);
  }
  return v;
}

/** A remote backend (docs/backends.md): its section of --backend-config, secrets from files or env. */
async function remoteBackend(name: string, { flags, logger }: BackendContext): Promise<KeyBackend> {
  const path = requireString(flags, 'backendConfig', '--backend-config FILE', name);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new AtrestError('ERR_CONFIG_UNREADABLE', `cannot read ${path}`, { cause: err });
  }
  // Loaded only when asked for: the AWS SDK and the PKCS#11 addon cost start-up time.
  const { parseBackendConfig } = await import('../backends/config.js');
  const { createConfiguredBackend } = await import('../backends/create.js');
  return createConfiguredBackend(parseBackendConfig(text, path, name), {
    env: process.env,
    readFile: (p) => readFile(p, 'utf8'),
    logger,
  });
}

export const BACKENDS: Readonly<Record<string, BackendFactory>> = {
  keyring: async ({ flags }) =>
    createKeyringBackend({ path: requireString(flags, 'keyring', '--keyring FILE', 'keyring') }),
  pkcs11: (context) => remoteBackend('pkcs11', context),
  'aws-kms': (context) => remoteBackend('aws-kms', context),
  'vault-transit': (context) => remoteBackend('vault-transit', context),
  kmip: (context) => remoteBackend('kmip', context),
};

export function addBackendOptions(command: Command): Command {
  return command
    .addOption(
      new Option('--backend <name>', 'key backend holding the key-encryption keys')
        .choices(Object.keys(BACKENDS))
        .default('keyring'),
    )
    .option('--keyring <file>', 'keyring file (keyring backend); create it with "atrest keys init"')
    .option(
      '--backend-config <file>',
      'YAML file with one section per remote backend (pkcs11, aws-kms, vault-transit, kmip); secrets come from files or env',
    );
}

export async function createBackend(name: string, context: BackendContext): Promise<KeyBackend> {
  const factory = BACKENDS[name];
  if (factory === undefined) {
    throw new AtrestError(
      'ERR_CONFIG_INVALID',
      `unknown backend "${name}" (one of ${Object.keys(BACKENDS).join(', ')})`,
    );
  }
  return factory(context);
}
