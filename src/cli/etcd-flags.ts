// The etcd connection flags shared by scan, rewrite and decrypt, spelled as etcdctl users know them
// (and read from the same ETCDCTL_* variables), and the client they build.

import { readFileSync } from 'node:fs';
import { Option, type Command } from 'commander';
import { AtrestError, ConfigInvalidError } from '../errors.js';
import { parseGoDuration } from '../config/go-syntax.js';
import { EtcdClient } from '../etcd/client.js';
import { normalizeEtcdPrefix } from '../config/resolve.js';
import type { EncryptionConfiguration } from '../config/types.js';
import { createSelection, type Selection } from '../etcd/selection.js';

export interface EtcdFlags {
  readonly endpoints: string;
  readonly cacert?: string;
  readonly cert?: string;
  readonly key?: string;
  readonly etcdPrefix: string;
  readonly commandTimeout: string;
}

/** A bad flag value: exit status 2, like other usage errors. */
export function usageError(flag: string, message: string): ConfigInvalidError {
  return new ConfigInvalidError('the command line', [{ path: flag, message }]);
}

export function addEtcdOptions(cmd: Command): Command {
  return cmd
    .addOption(
      new Option('--endpoints <list>', 'etcd endpoints, comma-separated (tried in order, with failover)')
        .env('ETCDCTL_ENDPOINTS')
        .default('127.0.0.1:2379'),
    )
    .addOption(new Option('--cacert <file>', 'CA bundle to verify etcd (https endpoints)').env('ETCDCTL_CACERT'))
    .addOption(new Option('--cert <file>', 'client certificate for etcd').env('ETCDCTL_CERT'))
    .addOption(new Option('--key <file>', 'client certificate key for etcd').env('ETCDCTL_KEY'))
    .addOption(
      new Option(
        '--etcd-prefix <prefix>',
        "kube-apiserver's --etcd-prefix; part of the authenticated data of aesgcm/kms values",
      ).default('/registry'),
    )
    .addOption(new Option('--command-timeout <duration>', 'timeout of each etcd request').default('5s'));
}

export function addEncryptionConfigOption(cmd: Command): Command {
  return cmd.addOption(
    new Option('--encryption-config <file>', "the API server's EncryptionConfiguration (--encryption-provider-config)")
      .makeOptionMandatory(),
  );
}

function readPem(path: string | undefined, what: string): Buffer | undefined {
  if (path === undefined) return undefined;
  try {
    return readFileSync(path);
  } catch (err) {
    throw new AtrestError('ERR_CONFIG_UNREADABLE', `cannot read ${what} ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}

export function etcdPrefixOf(flags: EtcdFlags): string {
  return normalizeEtcdPrefix(flags.etcdPrefix);
}

export function createEtcdClient(flags: EtcdFlags, connections = 16): EtcdClient {
  const timeoutNs = parseGoDuration(flags.commandTimeout);
  if (timeoutNs === undefined || timeoutNs <= 0) {
    throw usageError('--command-timeout', `"${flags.commandTimeout}" is not a positive duration (e.g. 5s)`);
  }
  if ((flags.cert === undefined) !== (flags.key === undefined)) {
    throw usageError('--cert', '--cert and --key go together');
  }
  const ca = readPem(flags.cacert, '--cacert');
  const cert = readPem(flags.cert, '--cert');
  const key = readPem(flags.key, '--key');
  return new EtcdClient({
    endpoints: flags.endpoints.split(',').map((e) => e.trim()).filter((e) => e !== ''),
    requestTimeoutMs: Math.max(1, Math.round(timeoutNs / 1e6)),
    connections,
    tls: { ...(ca ? { ca } : {}), ...(cert ? { cert } : {}), ...(key ? { key } : {}) },
  });
}

export function parseResources(value: string | undefined): string[] | undefined {
  if (value === undefined) return undefined;
  const list = value.split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (list.length === 0) throw usageError('--resource', 'needs at least one resource');
  return list;
}

/** The keys scan and rewrite cover: `--resource`, `--all`, or (neither) what the config names. */
export function selectionFromFlags(
  flags: { readonly resource?: string | undefined; readonly all?: boolean | undefined },
  etcdPrefix: string,
  config: EncryptionConfiguration,
): Selection {
  const resources = parseResources(flags.resource);
  return createSelection({
    etcdPrefix,
    config,
    ...(flags.all ? { all: true } : {}),
    ...(resources ? { resources } : {}),
  });
}

export function parsePositiveInt(name: string, value: string, min = 1): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw usageError(name, `"${value}" must be an integer >= ${min}`);
  return n;
}

export function parseRate(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw usageError('--rate', `"${value}" must be a number >= 0 (0 = unlimited)`);
  return n;
}
