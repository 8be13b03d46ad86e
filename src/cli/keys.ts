// `atrest keys init|rotate|list|retire --keyring FILE`: manage the local keyring the keyring backend
// serves from. Never prints key bytes; every write is atomic and 0600 (src/backends/keyring-file.ts).

import { randomBytes } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Option, type Command } from 'commander';
import { AtrestError } from '../errors.js';
import {
  createKeyring,
  readKeyringFile,
  retireKey,
  rotateKeyring,
  writeKeyringFile,
} from '../backends/keyring-file.js';
import { parseOutputFormat, renderJson, renderTable } from './output.js';

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
    .command('rotate')
    .description('add a new active key; older keys stay for decryption')
    .addOption(keyringOption())
    .action(async (opts: { keyring: string }) => {
      const before = await readKeyringFile(opts.keyring);
      const after = rotateKeyring(before, new Date(), randomBytes);
      await writeKeyringFile(opts.keyring, after, { exclusive: false, random: randomBytes });
      say(
        `active key is now ${after.active} (previous: ${before.active}, kept for decryption)\n` +
          'send SIGHUP to running plugins to load it ("systemctl reload atrest" or "kill -HUP <pid>");\n' +
          'then re-encrypt stored data (see docs/plugin.md, "Rotating keys") before retiring old keys\n',
      );
    });

  keys
    .command('list')
    .description('show key ids, creation times and which key is active (never key bytes)')
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
      if (format === 'json') {
        say(renderJson({ development: keyring.development, keys: rows, retired: keyring.retired }));
        return;
      }
      if (keyring.development) say('# DEVELOPMENT keyring: not for production data\n');
      say(
        renderTable(
          ['ID', 'CREATED', 'ACTIVE'],
          rows.map((r) => [r.id, r.created, r.active ? 'yes' : '']),
        ),
      );
    });

  keys
    .command('retire')
    .description('remove a key for good (requires --force): data it wrapped becomes unreadable')
    .argument('<id>', 'key id (see "atrest keys list")')
    .addOption(keyringOption())
    .option('--force', 'really remove the key', false)
    .action(async (id: string, opts: { keyring: string; force: boolean }) => {
      const before = await readKeyringFile(opts.keyring);
      const after = retireKey(before, id, new Date());
      warn(
        `WARNING: every DEK wrapped by key ${id} becomes permanently unreadable once it is retired.\n` +
          'Only retire a key after all stored data was re-encrypted under a newer key\n' +
          '(see docs/plugin.md, "Rotating keys").\n',
      );
      if (!opts.force) {
        throw new AtrestError(
          'ERR_CONFIG_INVALID',
          `not retiring ${id}: re-run with --force to remove it`,
        );
      }
      await writeKeyringFile(opts.keyring, after, { exclusive: false, random: randomBytes });
      say(`retired key ${id}; send SIGHUP to running plugins to drop it\n`);
    });
}
