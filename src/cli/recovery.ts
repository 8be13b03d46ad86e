// `atrest recovery init|combine`: the offline recovery key pair of break-glass recovery
// (docs/operations.md, "The KMS key is gone"). Run on an operator's workstation, never on a
// control-plane node: only the public key goes there. Never prints key bytes.

import { open, readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { AtrestError } from '../errors.js';
import {
  combinePrivateKey,
  parsePrivateKeyPem,
  parseShare,
  privateKeyPem,
  publicKeyPem,
  splitPrivateKey,
} from '../recovery/keys.js';
import { generateRecoveryKey, type RecoveryPrivateKey } from '../recovery/seal.js';
import { usageError } from './etcd-flags.js';

const say = (text: string): void => void process.stdout.write(text);

/** Creates `path` with `text`, mode 0600 unless given; refuses to overwrite (key material). */
async function writeNew(path: string, text: string, mode = 0o600): Promise<void> {
  let handle;
  try {
    handle = await open(path, 'wx', mode);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new AtrestError(
      code === 'EEXIST' ? 'ERR_KEYRING_EXISTS' : 'ERR_CONFIG_UNREADABLE',
      code === 'EEXIST' ? `${path} exists; refusing to overwrite key material` : `cannot create ${path}`,
      { cause: err },
    );
  }
  try {
    await handle.writeFile(text);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

function parseCount(flag: string, text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 2 || n > 255) throw usageError(flag, `"${text}" is not a whole number from 2 to 255`);
  return n;
}

/** Reads --recovery-key files and --recovery-shares share files into private keys (decrypt). */
export async function loadRecoveryKeys(
  keyFiles: readonly string[],
  shareFiles: readonly string[],
): Promise<RecoveryPrivateKey[]> {
  const keys: RecoveryPrivateKey[] = [];
  for (const f of keyFiles) keys.push(parsePrivateKeyPem(await readText(f), f));
  if (shareFiles.length > 0) {
    const shares = [];
    for (const f of shareFiles) shares.push(parseShare(await readText(f), f));
    keys.push(combinePrivateKey(shares));
  }
  return keys;
}

async function readText(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    throw new AtrestError('ERR_CONFIG_UNREADABLE', `cannot read ${path}`, { cause: err });
  }
}

export function splitList(text: string | undefined): string[] {
  return text === undefined ? [] : text.split(',').map((s) => s.trim()).filter((s) => s !== '');
}

export function registerRecovery(program: Command): void {
  const recovery = program
    .command('recovery')
    .description('the offline recovery key of break-glass recovery: etcd backups stay readable without the KMS');

  recovery
    .command('init')
    .description('make a recovery key pair (X25519); the private key, or its shares, stay off the cluster')
    .requiredOption('--public-out <file>', 'where to write the public key (give it to "atrest serve --recovery-public-key")')
    .option('--private-out <file>', 'where to write the private key (mode 0600)')
    .option('--shares <n>', 'also split the private key into N share files ...')
    .option('--threshold <k>', '... any K of which recover it')
    .option('--share-out <prefix>', 'share files are PREFIX-1.txt ... PREFIX-N.txt (mode 0600)', 'recovery-share')
    .action(async (opts: { publicOut: string; privateOut?: string; shares?: string; threshold?: string; shareOut: string }) => {
      if ((opts.shares === undefined) !== (opts.threshold === undefined)) {
        throw usageError('--shares', 'give --shares N and --threshold K together');
      }
      if (opts.privateOut === undefined && opts.shares === undefined) {
        throw usageError('--private-out', 'give --private-out FILE, or --shares N --threshold K, or both');
      }
      const n = opts.shares === undefined ? 0 : parseCount('--shares', opts.shares);
      const k = opts.threshold === undefined ? 0 : parseCount('--threshold', opts.threshold);
      if (k > n) throw usageError('--threshold', `${k} is more than the ${n} shares`);
      const key = generateRecoveryKey();
      const id = key.recipient.toString('hex');
      await writeNew(opts.publicOut, publicKeyPem(key), 0o644);
      say(`recovery key ${id}\n  public key:  ${opts.publicOut} (copy to every control-plane node)\n`);
      if (opts.privateOut !== undefined) {
        await writeNew(opts.privateOut, privateKeyPem(key));
        say(`  private key: ${opts.privateOut} (mode 0600; keep it OFF the cluster)\n`);
      }
      for (const share of n > 0 ? splitPrivateKey(key, k, n) : []) {
        const file = `${opts.shareOut}-${share.x}.txt`;
        await writeNew(file, share.text);
        say(`  share ${share.x} of ${n}: ${file} (any ${k} recover the private key)\n`);
      }
      say('whoever holds the private key (or enough shares) can read every Secret in every backup: store it accordingly\n');
    });

  recovery
    .command('combine')
    .description('combine K share files into the private key file (for a recovery; better: give the shares to decrypt directly)')
    .requiredOption('--shares <files>', 'comma-separated share files')
    .requiredOption('--private-out <file>', 'where to write the private key (mode 0600)')
    .action(async (opts: { shares: string; privateOut: string }) => {
      const [key] = await loadRecoveryKeys([], splitList(opts.shares));
      await writeNew(opts.privateOut, privateKeyPem(key!));
      say(`recovery key ${key!.recipient.toString('hex')} written to ${opts.privateOut} (mode 0600)\n`);
    });
}
