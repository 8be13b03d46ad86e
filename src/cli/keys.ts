// `atrest keys init|add|activate|rotate|list|retire --keyring FILE`: manage the local keyring the
// keyring backend serves from. Never prints key bytes; every write is atomic and 0600
// (src/backends/keyring-file.ts). On several control-plane nodes a new key goes in two steps, add
// then activate, with the file copied and reloaded everywhere in between (docs/plugin.md).

import { randomBytes } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Option, type Command } from 'commander';
import { AtrestError } from '../errors.js';
import {
  activateKey,
  addKey,
  createKeyring,
  readKeyringFile,
  retireKey,
  rotateKeyring,
  writeKeyringFile,
} from '../backends/keyring-file.js';
import { keyringFingerprint, probeKey } from '../backends/keyring-check.js';
import { parseOutputFormat, renderJson, renderTable } from './output.js';
import { prefixRangeEnd } from '../etcd/client.js';
import { describeStoredValue } from '../transformers/describe.js';
import { addEtcdOptions, createEtcdClient, etcdPrefixOf, type EtcdFlags } from './etcd-flags.js';
import { EXIT_FINDINGS } from './exit.js';

/** Keys listed when etcd still holds values under a key that is about to be retired. */
const LISTED_REMAINING = 10;

interface RetireFlags extends EtcdFlags {
  readonly keyring: string;
  readonly force: boolean;
  readonly checkEtcd?: boolean;
}

/** Every value under the prefix still stored under kms v2 key_id `id` (keys only; values are not kept). */
async function valuesUnderKey(flags: RetireFlags, id: string): Promise<{ checked: number; remaining: string[]; total: number; kmsV1: number }> {
  const client = createEtcdClient(flags);
  const start = Buffer.from(etcdPrefixOf(flags));
  const remaining: string[] = [];
  let checked = 0;
  let total = 0;
  let kmsV1 = 0;
  try {
    for await (const page of client.pages(start, prefixRangeEnd(start), { pageSize: 500 })) {
      for (const kv of page) {
        checked++;
        const info = describeStoredValue(kv.value);
        if (info.format === 'kms-v1') kmsV1++;
        if (info.format === 'kms-v2' && info.keyID === id) {
          total++;
          if (remaining.length < LISTED_REMAINING) remaining.push(kv.key.toString('utf8'));
        }
      }
    }
  } finally {
    await client.close();
  }
  return { checked, remaining, total, kmsV1 };
}

const keyringOption = (): Option =>
  new Option('--keyring <file>', 'keyring file').env('ATREST_KEYRING').makeOptionMandatory();

const say = (text: string): void => void process.stdout.write(text);
const warn = (text: string): void => void process.stderr.write(text);

export function registerKeys(program: Command): void {
  const keys = program
    .command('keys')
    .description('manage the local keyring (AES-256 key-encryption keys) used by "atrest serve"');

  keys
    .command('init')
    .description('create a new keyring with one active key (refuses to overwrite an existing file)')
    .addOption(keyringOption())
    .option('--development', 'label the keyring as a development keyring', false)
    .action(async (opts: { keyring: string; development: boolean }) => {
      await mkdir(dirname(opts.keyring), { recursive: true, mode: 0o700 });
      const keyring = createKeyring({
        now: new Date(),
        random: randomBytes,
        development: opts.development,
      });
      await writeKeyringFile(opts.keyring, keyring, { exclusive: true, random: randomBytes });
      say(`created keyring ${opts.keyring} (mode 0600) with active key ${keyring.active}\n`);
    });

  keys
    .command('add')
    .description(
      'add a new key that is not active yet (step 1 of 2 on several nodes: copy the file to every ' +
        'node and reload, then "keys activate"); prints the new id on stdout',
    )
    .addOption(keyringOption())
    .action(async (opts: { keyring: string }) => {
      const before = await readKeyringFile(opts.keyring);
      const after = addKey(before, new Date(), randomBytes);
      const added = after.keys[after.keys.length - 1]!;
      probeKey(after, added.id, randomBytes);
      await writeKeyringFile(opts.keyring, after, { exclusive: false, random: randomBytes });
      // stdout: the id alone, for NEW_KEY=$(atrest keys add ...); the guidance goes to stderr.
      say(`${added.id}\n`);
      warn(
        `added key ${added.id} (not active: the active key is still ${after.active})\n` +
          `keyring fingerprint: ${keyringFingerprint(after)}\n` +
          'next: copy this file to every control-plane node and reload every plugin (SIGHUP);\n' +
          'check that every node shows this fingerprint ("atrest keys list", or atrest_keyring_info\n' +
          `in /metrics); then run "atrest keys activate ${added.id}" (docs/plugin.md, "Rotating keys")\n`,
      );
    });

  keys
    .command('activate')
    .description(
      'make a key the keyring already holds the active one (step 2 of 2: every node must hold it ' +
        'first; check "keys list" fingerprints)',
    )
    .argument('<id>', 'key id (see "atrest keys list")')
    .addOption(keyringOption())
    .action(async (id: string, opts: { keyring: string }) => {
      const before = await readKeyringFile(opts.keyring);
      if (before.active === id) {
        say(`key ${id} is already the active key; nothing changed\n`);
        return;
      }
      const after = activateKey(before, id);
      probeKey(after, id, randomBytes);
      await writeKeyringFile(opts.keyring, after, { exclusive: false, random: randomBytes });
      say(
        `active key is now ${id} (previous: ${before.active}, kept for decryption)\n` +
          `keyring fingerprint: ${keyringFingerprint(after)} (unchanged: activating adds no key)\n` +
          'next: copy this file to every control-plane node and reload every plugin (SIGHUP); the API\n' +
          'servers pick the new key id up with their next Status poll (about a minute); then rewrite\n',
      );
    });

  keys
    .command('rotate')
    .description(
      'add a new key and make it active at once (add + activate): for a single node only; on ' +
        'several nodes use "keys add", then "keys activate"',
    )
    .addOption(keyringOption())
    .action(async (opts: { keyring: string }) => {
      const before = await readKeyringFile(opts.keyring);
      const after = rotateKeyring(before, new Date(), randomBytes);
      probeKey(after, after.active, randomBytes);
      await writeKeyringFile(opts.keyring, after, { exclusive: false, random: randomBytes });
      say(
        `active key is now ${after.active} (previous: ${before.active}, kept for decryption)\n` +
          'send SIGHUP to running plugins to load it ("systemctl reload atrest" or "kill -HUP <pid>");\n' +
          'then re-encrypt stored data (see docs/plugin.md, "Rotating keys") before retiring old keys\n',
      );
      warn(
        'note: rotate activates the new key at once; with more than one control-plane node use\n' +
          '"atrest keys add", copy and reload everywhere, then "atrest keys activate ID" instead\n',
      );
    });

  keys
    .command('list')
    .description(
      'show key ids, creation times, which key is active and the keyring fingerprint (never key bytes)',
    )
    .addOption(keyringOption())
    .addOption(new Option('-o, --output <format>', 'table or json').default('table'))
    .action(async (opts: { keyring: string; output: string }) => {
      const format = parseOutputFormat(opts.output);
      const keyring = await readKeyringFile(opts.keyring);
      const rows = keyring.keys.map((k) => ({
        id: k.id,
        created: k.created,
        active: k.id === keyring.active,
      }));
      const fingerprint = keyringFingerprint(keyring);
      if (format === 'json') {
        say(
          renderJson({
            development: keyring.development,
            fingerprint,
            keys: rows,
            retired: keyring.retired,
          }),
        );
        return;
      }
      if (keyring.development) say('# DEVELOPMENT keyring: not for production data\n');
      say(
        renderTable(
          ['ID', 'CREATED', 'ACTIVE'],
          rows.map((r) => [r.id, r.created, r.active ? 'yes' : '']),
        ),
      );
      say(`fingerprint: ${fingerprint} (the same on every node holding the same keys)\n`);
    });

  const retire = keys
    .command('retire')
    .description(
      'remove a key for good: data it wrapped becomes unreadable, in etcd and in every older etcd snapshot. ' +
        'With --check-etcd it first makes sure no value in etcd is still stored under it',
    )
    .argument('<id>', 'key id (see "atrest keys list")')
    .addOption(keyringOption())
    .option('--check-etcd', 'look in etcd (etcdctl flags below) for kms v2 values still under this key_id first; refuse while any remain')
    .option('--force', 'retire without --check-etcd, or although values remain', false);
  addEtcdOptions(retire);
  retire.action(async (id: string, opts: RetireFlags) => {
      const before = await readKeyringFile(opts.keyring);
      const after = retireKey(before, id, new Date());
      warn(
        `WARNING: every DEK wrapped by key ${id} becomes permanently unreadable once it is retired:\n` +
          '  - in etcd: retire only after "atrest rewrite" moved everything to a newer key and\n' +
          '    "atrest scan --expect-key <new key_id>" confirmed that every kube-apiserver writes with it;\n' +
          '  - in backups: every etcd snapshot taken while values were stored under this key can no longer\n' +
          `    be decrypted. Keep an offline copy of ${opts.keyring} for as long as you keep such snapshots.\n`,
      );
      if (opts.checkEtcd) {
        const found = await valuesUnderKey(opts, id);
        if (found.kmsV1 > 0) {
          warn(`note: ${found.kmsV1} kms v1 value(s) do not show their key in etcd; "atrest scan --decrypt" proves they decrypt\n`);
        }
        if (found.total > 0) {
          warn(
            `etcd still holds ${found.total} value(s) stored under key_id ${id} (of ${found.checked} checked under ${etcdPrefixOf(opts)}):\n` +
              found.remaining.map((k) => `  ${k}\n`).join('') +
              (found.total > found.remaining.length ? `  ... and ${found.total - found.remaining.length} more\n` : '') +
              'rewrite them first ("atrest rewrite"), then check again.\n',
          );
          if (!opts.force) {
            warn(`not retiring ${id} (--force retires it anyway, making those values unreadable)\n`);
            process.exitCode = EXIT_FINDINGS;
            return;
          }
        } else {
          say(`etcd: none of the ${found.checked} value(s) under ${etcdPrefixOf(opts)} is stored under key_id ${id}\n`);
        }
      } else if (!opts.force) {
        throw new AtrestError(
          'ERR_CONFIG_INVALID',
          `not retiring ${id}: check etcd first with --check-etcd (and the etcd flags), or re-run with --force`,
        );
      }
      await writeKeyringFile(opts.keyring, after, { exclusive: false, random: randomBytes });
      say(`retired key ${id}; send SIGHUP to running plugins to drop it\n`);
    });
}
