// The development quick start of `atrest serve --dev`: where the development keyring and socket live,
// creating that keyring on first run, and the banner with EncryptionConfiguration snippets to paste.

import { randomBytes } from 'node:crypto';
import { mkdir, stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { createKeyring, writeKeyringFile } from '../backends/keyring-file.js';

/** Relative to the working directory (gitignored). */
export const DEV_KEYRING = '.atrest-dev/keyring.json';
/** Short and absolute, so it stays far below the 107-byte socket path limit. */
export const DEV_LISTEN = 'unix:///tmp/atrest-dev/kms.sock';

/** Creates the development keyring if it does not exist yet; returns its absolute path and whether it was created. */
export async function ensureDevKeyring(
  path = DEV_KEYRING,
): Promise<{ path: string; created: boolean }> {
  const abs = resolve(path);
  try {
    await stat(abs);
    return { path: abs, created: false };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  await mkdir(dirname(abs), { recursive: true, mode: 0o700 });
  const keyring = createKeyring({ now: new Date(), random: randomBytes, development: true });
  await writeKeyringFile(abs, keyring, { exclusive: true, random: randomBytes });
  return { path: abs, created: true };
}

/** The EncryptionConfiguration snippet for one kms provider (v1 adds the cache size it needs). */
function encryptionConfig(endpoint: string, apiVersion: 'v1' | 'v2', name: string): string {
  return [
    'apiVersion: apiserver.config.k8s.io/v1',
    'kind: EncryptionConfiguration',
    'resources:',
    '  - resources:',
    '      - secrets',
    '    providers:',
    '      - kms:',
    `          apiVersion: ${apiVersion}`,
    `          name: ${name}`,
    `          endpoint: ${endpoint}`,
    ...(apiVersion === 'v1' ? ['          cachesize: 1000'] : []),
    '          timeout: 3s',
    '      - identity: {}',
    '',
  ].join('\n');
}

export function encryptionConfigV2(endpoint: string, name = 'atrest'): string {
  return encryptionConfig(endpoint, 'v2', name);
}

export function encryptionConfigV1(endpoint: string, name = 'atrest-v1'): string {
  return encryptionConfig(endpoint, 'v1', name);
}

export function devBanner(options: {
  readonly endpoint: string;
  readonly socketPath: string;
  readonly keyringPath: string;
  readonly keyringCreated: boolean;
  readonly activeKeyID: string;
  readonly health: string | undefined;
}): string {
  const rule = '='.repeat(78);
  return [
    rule,
    'atrest KMS plugin -- DEVELOPMENT MODE',
    '',
    `WARNING: ${options.keyringCreated ? 'created' : 'using'} the DEVELOPMENT keyring ${options.keyringPath}`,
    '         (active key ' + options.activeKeyID + ').',
    '         Its key sits unprotected on this disk: never encrypt real cluster data with it.',
    '',
    `Listening on ${options.endpoint}  (socket ${options.socketPath}, mode 0600)`,
    options.health === undefined
      ? 'Health endpoints: off'
      : `Health: http://${options.health}/readyz  Metrics: http://${options.health}/metrics`,
    '',
    'Paste into the file given to kube-apiserver --encryption-provider-config (KMS v2, Kubernetes >= 1.29):',
    '',
    encryptionConfigV2(options.endpoint),
    'Or, for KMS v1 (deprecated; older API servers, or 1.29+ with the KMSv1 feature gate):',
    '',
    encryptionConfigV1(options.endpoint),
    'Stop with Ctrl-C (the socket is removed).',
    rule,
    '',
  ].join('\n');
}
