// `atrest decrypt`: print stored objects decrypted and decoded, from a live etcd, from an etcd
// snapshot file (disaster recovery: no etcd needed), or from a value someone already extracted.
// Secret data is REDACTED unless --show-secret-data.

import { readFileSync } from 'node:fs';
import { Option, type Command } from 'commander';
import { stringify } from 'yaml';
import { AtrestError } from '../errors.js';
import type { EtcdClient, KeyValue } from '../etcd/client.js';
import {
  decryptAll,
  decryptValue,
  type DecryptOptions,
  type DecryptResult,
} from '../etcd/decrypt.js';
import { assertSelectionNotEmpty } from '../etcd/empty-selection.js';
import { BUILT_IN_NAMESPACES, namespaceManifest, namespacesOf, restorableObject } from '../etcd/restore.js';
import { createSelection, type Selection } from '../etcd/selection.js';
import { readSnapshot } from '../etcd/snapshot.js';
import { createMemorySource, type KeyValueSource } from '../etcd/source.js';
import { EXIT_FINDINGS } from './exit.js';
import {
  addEncryptionConfigOption,
  addEtcdOptions,
  createEtcdClient,
  etcdPrefixOf,
  parseResources,
  usageError,
  type EtcdFlags,
} from './etcd-flags.js';
import { describeUnreachable, openEncryption, type EncryptionContext } from './kms-dial.js';
import { loadRecoveryKeys, splitList } from './recovery.js';
import { createRecoveryDialer } from '../recovery/services.js';
import { renderJson } from './output.js';

interface DecryptFlags extends EtcdFlags {
  readonly encryptionConfig: string;
  readonly etcdKey?: string;
  readonly all?: boolean;
  readonly resource?: string;
  readonly snapshot?: string;
  readonly valueFile?: string;
  readonly output: string;
  readonly showSecretData?: boolean;
  readonly recoveryKey?: string;
  readonly recoveryShares?: string;
  readonly allowEmpty?: boolean;
}

type DecryptOutput = 'yaml' | 'json' | 'raw' | 'restore';

function parseDecryptOutput(s: string): DecryptOutput {
  if (s === 'yaml' || s === 'json' || s === 'raw' || s === 'restore') return s;
  throw usageError('--output', `unknown format "${s}" (yaml, json, raw or restore)`);
}

/** `-o restore`: one create-ready manifest (or a comment saying why this value cannot be restored). */
function restoreDoc(r: DecryptResult): { text: string; ok: boolean } {
  if (!r.ok) return { text: `# ${describeFailure(r)}\n`, ok: false };
  const m = restorableObject(r.object);
  if (!m.ok) return { text: `# ${r.key}: not restored: ${m.reason}\n`, ok: false };
  return { text: `# ${r.key}\n${stringify(m.object)}`, ok: true };
}

function describeFailure(r: Extract<DecryptResult, { ok: false }>): string {
  return `${r.key}: cannot decrypt (stored as ${r.stored}; tried ${r.providersTried.join(', ') || 'no provider'}): ${r.reason}`;
}

function record(r: DecryptResult): Record<string, unknown> {
  if (!r.ok) {
    return { key: r.key, resource: r.resource, stored: r.stored, error: r.reason, providersTried: r.providersTried };
  }
  return { key: r.key, resource: r.resource, stored: r.stored, stale: r.stale, encoding: r.encoding, object: r.object };
}

function yamlDoc(r: DecryptResult): string {
  if (!r.ok) return `# ${describeFailure(r)}\n`;
  return `# ${r.key} (stored as ${r.stored}${r.stale ? ', stale' : ''}; ${r.encoding})\n${stringify(r.object)}`;
}

async function readValueFile(path: string): Promise<Buffer> {
  if (path !== '-') return readFileSync(path);
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

export function registerDecrypt(program: Command): void {
  const cmd = program
    .command('decrypt')
    .description(
      'print stored objects decrypted and decoded (Secret data redacted unless --show-secret-data), ' +
        'from etcd, an etcd snapshot (--snapshot) or an extracted value (--value-file)',
    );
  addEncryptionConfigOption(cmd);
  cmd
    .option('--etcd-key <key>', 'one etcd key, e.g. /registry/secrets/default/db-password')
    .option('--all', 'every selected key (with --resource, or the resources the config names)')
    .option('--resource <list>', 'with --all: resources to print (secrets,configmaps,...)')
    .option('--snapshot <file>', 'read an etcd snapshot file (etcdctl snapshot save) instead of a live etcd')
    .option('--value-file <file>', 'decrypt this raw stored value (- for stdin); needs --etcd-key for its authenticated data')
    .addOption(
      new Option(
        '-o, --output <format>',
        'yaml, json, raw (the decrypted bytes, protobuf for built-in kinds; one key only), or restore ' +
          '(Namespaces first, no uid/resourceVersion/creationTimestamp/managedFields/ownerReferences/last-applied: ' +
          'for "kubectl create -f"; needs --show-secret-data)',
      ).default('yaml'),
    )
    .option('--show-secret-data', 'print Secret data instead of REDACTED')
    .option('--recovery-key <files>', 'break-glass: read kms values through their recovery seals with these private keys, no KMS needed')
    .option('--recovery-shares <files>', 'break-glass: as --recovery-key, from K share files of one recovery key (comma-separated)')
    .option('--allow-empty', 'with --all: accept a prefix or resource that holds no key (otherwise exit status 4)');
  addEtcdOptions(cmd);
  cmd.action(async (flags: DecryptFlags) => {
    const output = checkDecryptFlags(flags);
    const etcdPrefix = etcdPrefixOf(flags);
    const recoveryKeys = await loadRecoveryKeys(splitList(flags.recoveryKey), splitList(flags.recoveryShares));
    const enc = await openEncryption({
      configPath: flags.encryptionConfig,
      etcdPrefix,
      mode: 'read',
      ...(recoveryKeys.length > 0 ? { deps: createRecoveryDialer(recoveryKeys), offline: true } : {}),
    });
    const client = flags.snapshot === undefined && flags.valueFile === undefined ? createEtcdClient(flags) : undefined;
    try {
      warnAboutEncryption(enc);
      const run: DecryptRun = {
        flags,
        output,
        etcdPrefix,
        enc,
        client,
        options: { policies: enc.policies, showSecretData: flags.showSecretData === true },
      };
      if (flags.etcdKey !== undefined) await decryptOneKey(run, flags.etcdKey);
      else await decryptSelection(run);
    } finally {
      await client?.close();
      await enc.close();
    }
  });
}

/** Refuses flag combinations that cannot mean anything, before anything is opened. */
function checkDecryptFlags(flags: DecryptFlags): DecryptOutput {
  const output = parseDecryptOutput(flags.output);
  if ((flags.etcdKey === undefined) === (flags.all !== true)) {
    throw usageError('--etcd-key', 'give either --etcd-key KEY or --all');
  }
  if (flags.resource !== undefined && !flags.all) throw usageError('--resource', 'only with --all');
  if (flags.valueFile !== undefined && flags.etcdKey === undefined) {
    throw usageError('--value-file', 'needs --etcd-key: the key is the authenticated data of aesgcm and kms values');
  }
  if (flags.valueFile !== undefined && flags.snapshot !== undefined) {
    throw usageError('--value-file', 'use either --value-file or --snapshot');
  }
  if (output === 'raw' && flags.all) throw usageError('--output', 'raw prints one value: use it with --etcd-key');
  if (output === 'restore' && flags.showSecretData !== true) {
    throw usageError('--output', 'restore writes Secret data (a restore without it would be useless): add --show-secret-data');
  }
  return output;
}

function warnAboutEncryption(enc: EncryptionContext): void {
  for (const w of enc.warnings) process.stderr.write(`warning: ${w}\n`);
  if (enc.unreachable.length > 0) {
    process.stderr.write(
      `warning: ${describeUnreachable(enc.unreachable)}; values stored with it cannot be decrypted now ` +
        '(each is reported at once, without waiting for its timeout). Start the plugin and rerun to decrypt them\n',
    );
  }
}

/** One decrypt command's inputs, once the flags are checked and the encryption config is open. */
interface DecryptRun {
  readonly flags: DecryptFlags;
  readonly output: DecryptOutput;
  readonly etcdPrefix: string;
  readonly enc: EncryptionContext;
  /** A live etcd: absent with --snapshot or --value-file. */
  readonly client: EtcdClient | undefined;
  readonly options: DecryptOptions;
}

/** --etcd-key: one value, from --value-file, a snapshot or etcd. */
async function decryptOneKey(run: DecryptRun, etcdKey: string): Promise<void> {
  const { flags, output } = run;
  const key = Buffer.from(etcdKey, 'utf8');
  let kv: KeyValue | undefined;
  if (flags.valueFile !== undefined) {
    kv = { key, value: await readValueFile(flags.valueFile), createRevision: 0, modRevision: 0, version: 0 };
  } else if (flags.snapshot !== undefined) {
    kv = readSnapshot(flags.snapshot, { filter: (k) => k.equals(key) })[0];
  } else {
    kv = await run.client!.get(key);
  }
  if (kv === undefined) {
    throw new AtrestError('ERR_ETCD', `key ${etcdKey} not found${flags.snapshot ? ` in ${flags.snapshot}` : ''}`);
  }
  const r = await decryptValue(kv, run.options);
  if (!r.ok) {
    process.stderr.write(`atrest: ${describeFailure(r)}\n`);
    process.exitCode = EXIT_FINDINGS;
    return;
  }
  if (output === 'restore') {
    const doc = restoreDoc(r);
    process.stdout.write(doc.text);
    if (!doc.ok) process.exitCode = EXIT_FINDINGS;
  } else if (output === 'raw') {
    if (r.object.kind === 'Secret' && !run.options.showSecretData) {
      throw usageError('--output', 'raw output of a Secret contains its data: add --show-secret-data');
    }
    process.stdout.write(r.plaintext);
  } else {
    process.stdout.write(output === 'json' ? renderJson(record(r)) : yamlDoc(r));
  }
}

/** --all: every selected key, from a snapshot or etcd; exit status 3 if any cannot be printed. */
async function decryptSelection(run: DecryptRun): Promise<void> {
  const { flags, output, etcdPrefix, enc } = run;
  const resources = parseResources(flags.resource);
  const selection: Selection = createSelection({
    etcdPrefix,
    config: enc.config,
    ...(resources ? { resources } : {}),
  });
  const { source, whole } =
    flags.snapshot === undefined
      ? { source: run.client!, whole: () => run.client! }
      : snapshotSource(flags.snapshot, selection);
  if (!flags.allowEmpty) await assertSelectionNotEmpty('decrypt --all', source, selection, etcdPrefix, whole);
  let failures = 0;
  let first = true;
  if (output === 'json') process.stdout.write('[');
  if (output === 'restore') {
    const namespaces = await namespacesOf(source, selection, enc.policies, etcdPrefix);
    for (const ns of namespaces.filter((n) => !BUILT_IN_NAMESPACES.includes(n))) {
      process.stdout.write(`${first ? '' : '---\n'}${stringify(namespaceManifest(ns))}`);
      first = false;
    }
  }
  for await (const r of decryptAll(source, selection, run.options)) {
    if (!r.ok) {
      failures++;
      process.stderr.write(`atrest: ${describeFailure(r)}\n`);
    }
    if (output === 'restore') {
      const doc = restoreDoc(r);
      if (r.ok && !doc.ok) {
        failures++;
        process.stderr.write(`atrest: ${doc.text.slice(2)}`);
      }
      process.stdout.write(`${first ? '' : '---\n'}${doc.text}`);
    } else if (output === 'json') {
      process.stdout.write(`${first ? '\n' : ',\n'}${JSON.stringify(record(r), null, 2)}`);
    } else {
      process.stdout.write(`${first ? '' : '---\n'}${yamlDoc(r)}`);
    }
    first = false;
  }
  if (output === 'json') process.stdout.write(first ? ']\n' : '\n]\n');
  if (failures > 0) process.exitCode = EXIT_FINDINGS;
}

/**
 * The selected keys of a snapshot file, and (`whole`, only read when nothing matched) every key of
 * the snapshot without values, to say where the data is.
 */
function snapshotSource(
  snapshot: string,
  selection: Selection,
): { source: KeyValueSource; whole: () => KeyValueSource } {
  const inRanges = (k: Buffer): boolean =>
    selection.ranges.some((r) => Buffer.compare(k, r.start) >= 0 && Buffer.compare(k, r.end) < 0);
  const source = createMemorySource(readSnapshot(snapshot, { filter: inRanges }));
  const whole = (): KeyValueSource => {
    const keys = new Map<string, Buffer>();
    readSnapshot(snapshot, { filter: (k) => (keys.set(k.toString('latin1'), k), false) });
    return createMemorySource(
      [...keys.values()]
        .sort(Buffer.compare)
        .map((key) => ({ key, value: Buffer.alloc(0), createRevision: 0, modRevision: 0, version: 0 })),
    );
  };
  return { source, whole };
}
