// `atrest scan`: classify every stored value under the selected resources (plaintext, provider + key,
// kms name + key_id; current or stale; with --decrypt whether it decrypts), as a table or JSON.
// Exit status 3 when a resource the config says must be encrypted holds plaintext or undecryptable values.

import { Option, type Command } from 'commander';
import { AtrestError } from '../errors.js';
import { assertSelectionNotEmpty } from '../etcd/empty-selection.js';
import { scan, type ScanReport } from '../etcd/scan.js';
import {
  addApiServerCheckOptions,
  confirmApiServers,
  expectedKmsV2Keys,
  renderApiServerStates,
  type ApiServerCheckFlags,
} from './apiserver-check.js';
import { EXIT_FINDINGS } from './exit.js';
import {
  addEncryptionConfigOption,
  addEtcdOptions,
  createEtcdClient,
  etcdPrefixOf,
  parsePositiveInt,
  selectionFromFlags,
  usageError,
  type EtcdFlags,
} from './etcd-flags.js';
import { describeUnreachable, openEncryption } from './kms-dial.js';
import { parseOutputFormat, renderJson, renderTable } from './output.js';
import { createProgress } from './progress.js';

interface ScanFlags extends EtcdFlags, ApiServerCheckFlags {
  readonly encryptionConfig: string;
  readonly resource?: string;
  readonly all?: boolean;
  readonly decrypt?: boolean;
  readonly output: string;
  readonly concurrency: string;
  readonly allowEmpty?: boolean;
  readonly expectKey?: string;
}

/** Key ids longer than this are shortened in tables to their last SHORT_KEY_ID characters. */
const LONG_KEY_ID = 16;
const SHORT_KEY_ID = 8;

/** `kms-v2/atrest key_id=k20261128T081107Z-0fc8e322e971566c` -> `kms-v2/atrest key_id=…e971566c`. */
export function shortenKeyIds(label: string): string {
  return label.replace(/key_id=(\S+)/g, (_m, id: string) =>
    id.length > LONG_KEY_ID ? `key_id=…${id.slice(-SHORT_KEY_ID)}` : `key_id=${id}`,
  );
}

/** The human report: one row per resource, then the findings (first 20) and a verdict. */
export function renderScanReport(report: ScanReport, title = 'scan'): string {
  let shortened = false;
  const short = (label: string): string => {
    const s = shortenKeyIds(label);
    if (s !== label) shortened = true;
    return s;
  };
  const rows = report.resources.map((r) => [
    r.resource,
    String(r.keys),
    String(r.plaintext),
    String(r.encrypted),
    String(r.current),
    String(r.stale) + (r.unknown > 0 ? ` (+${r.unknown} unknown)` : ''),
    String(r.undecryptable),
    short(r.writeProvider),
    Object.entries(r.formats)
      .sort((a, b) => b[1] - a[1])
      .map(([f, n]) => `${short(f)} (${n})`)
      .join(', '),
  ]);
  const t = report.totals;
  rows.push(['TOTAL', String(t.keys), String(t.plaintext), String(t.encrypted), String(t.current),
    String(t.stale) + (t.unknown > 0 ? ` (+${t.unknown} unknown)` : ''), String(t.undecryptable), '', '']);
  let out = renderTable(
    ['RESOURCE', 'KEYS', 'PLAINTEXT', 'ENCRYPTED', 'CURRENT', 'STALE', report.decrypt ? 'UNDECRYPTABLE' : 'UNREADABLE', 'WRITES WITH', 'STORED AS'],
    rows,
  );
  if (shortened) out += `(key ids shortened to their last ${SHORT_KEY_ID} characters; -o json shows them in full)\n`;
  if (report.findingsTotal > 0) {
    out += `\n${report.findingsTotal} finding(s):\n`;
    for (const f of report.findings.slice(0, 20)) {
      out +=
        f.problem === 'plaintext'
          ? `  PLAINTEXT      ${f.key} (${f.resource} must be encrypted)\n`
          : `  UNDECRYPTABLE  ${f.key} (stored as ${f.stored}; tried ${f.providersTried?.join(', ') || 'no provider'}): ${f.reason}\n`;
    }
    if (report.findingsTotal > 20) out += `  ... and ${report.findingsTotal - 20} more (-o json lists up to 1000)\n`;
  }
  if (t.kms > 0) {
    out += `\nrecovery seals: ${t.recoverySealed} of ${t.kms} kms value(s) carry one` +
      (t.recoverySealed < t.kms ? ' (with "atrest serve --recovery-public-key", "atrest rewrite" seals the rest)' : '') + '\n';
  }
  const verdict =
    report.findingsTotal > 0
      ? `${title}: NOT OK: ${report.findingsTotal} value(s) are plaintext where encryption is required, or cannot be decrypted`
      : t.stale + t.unknown > 0
        ? `${title}: ok (${t.stale + t.unknown} value(s) not written by the current provider/key: run "atrest rewrite")`
        : `${title}: ok: every value is written by its current provider/key${report.decrypt ? ' and decrypts' : ''}`;
  return `${out}\n${verdict}\n`;
}

export function registerScan(program: Command): void {
  const cmd = program
    .command('scan')
    .description(
      'classify every value stored in etcd: plaintext or which provider/key wrote it, current or stale; ' +
        'exit status 3 if a resource that must be encrypted holds plaintext or undecryptable values',
    );
  addEncryptionConfigOption(cmd);
  cmd
    .option('--resource <list>', 'resources to scan, as in the config: secrets,configmaps,deployments.apps,*.apps')
    .option('--all', 'scan every key under --etcd-prefix')
    .option('--decrypt', 'also decrypt every value (calls the KMS plugins) to prove it is readable')
    .addOption(new Option('-o, --output <format>', 'table or json').default('table'))
    .option('--concurrency <n>', 'parallel decryptions with --decrypt', '8')
    .option('--allow-empty', 'accept a prefix or resource that holds no key (otherwise exit status 4)')
    .option(
      '--expect-key <key_id>',
      'the safe-to-retire check: the kms v2 plugin reports this key_id, every covered value is stored under it, ' +
        'and every kube-apiserver writes with it (read from its /metrics through --kubeconfig); exit status 3 otherwise',
    );
  addApiServerCheckOptions(cmd, true);
  addEtcdOptions(cmd);
  cmd.action(async (flags: ScanFlags) => {
    const output = parseOutputFormat(flags.output);
    if (flags.all && flags.resource !== undefined) throw usageError('--all', 'use either --all or --resource');
    const concurrency = parsePositiveInt('--concurrency', flags.concurrency);
    const etcdPrefix = etcdPrefixOf(flags);
    const enc = await openEncryption({ configPath: flags.encryptionConfig, etcdPrefix, mode: 'read' });
    const client = createEtcdClient(flags, concurrency);
    try {
      for (const w of enc.warnings) process.stderr.write(`warning: ${w}\n`);
      if (enc.unreachable.length > 0) {
        throw new AtrestError(
          'ERR_UNHEALTHY',
          `scan cannot tell current from stale or undecryptable values without every KMS plugin: ` +
            `${describeUnreachable(enc.unreachable)}. Start the plugin or fix its endpoint in ${flags.encryptionConfig}, then rerun`,
        );
      }
      const selection = selectionFromFlags(flags, etcdPrefix, enc.config);
      if (!flags.allowEmpty) await assertSelectionNotEmpty('scan', client, selection, etcdPrefix);
      let total = 0;
      for (const r of selection.ranges) total += (await client.range(r.start, { rangeEnd: r.end, countOnly: true })).count;
      const progress = createProgress({ label: 'scanning' });
      const report = await scan({
        source: client,
        selection,
        policies: enc.policies,
        decrypt: flags.decrypt === true,
        concurrency,
        onProgress: (n) => progress.update(n, total),
      });
      progress.finish();
      if (flags.expectKey === undefined) {
        process.stdout.write(output === 'json' ? renderJson(report) : renderScanReport(report));
        if (report.findingsTotal > 0) process.exitCode = EXIT_FINDINGS;
        return;
      }
      // --expect-key: everything must already be under that key, in etcd and in every API server.
      const expected = expectedKmsV2Keys(enc);
      const problems: string[] = [];
      if (expected.length === 0) problems.push('no kms v2 provider of the configuration writes (or its plugin gave no key_id)');
      for (const e of expected) {
        if (e.keyID !== flags.expectKey) {
          problems.push(`the plugin of "${e.provider}" reports key_id ${e.keyID}, not ${flags.expectKey}: rotated and reloaded it (SIGHUP)?`);
        }
      }
      // Under the key is what retiring older keys needs; the DEK format does not matter here (a
      // kube-apiserver before 1.29 writes kms v2 values without seed mode, under the same key_id).
      const elsewhere = report.resources
        .flatMap((r) => Object.entries(r.formats))
        .filter(([label]) => !(label.startsWith('kms-v2/') && label.endsWith(` key_id=${flags.expectKey}`)))
        .reduce((n, [, count]) => n + count, 0);
      if (elsewhere > 0) problems.push(`${elsewhere} value(s) are not under key_id ${flags.expectKey}: run "atrest rewrite"`);
      if (report.findingsTotal > 0) problems.push(`${report.findingsTotal} value(s) are plaintext where encryption is required, or undecryptable`);
      let apiservers: Awaited<ReturnType<typeof confirmApiServers>> = [];
      if (problems.length === 0) {
        try {
          apiservers = await confirmApiServers('scan --expect-key', flags, expected);
        } catch (err) {
          if (err instanceof AtrestError && err.code !== 'ERR_APISERVER_KEY_ID') throw err;
          problems.push(err instanceof Error ? err.message : String(err));
        }
      }
      if (output === 'json') {
        process.stdout.write(renderJson({ ...report, expectKey: flags.expectKey, ok: problems.length === 0, problems, apiservers }));
      } else {
        process.stdout.write(renderScanReport(report));
        process.stdout.write(renderApiServerStates(apiservers));
        process.stdout.write(
          problems.length === 0
            ? `expect-key: ok: every covered value is under key_id ${flags.expectKey}, and every kube-apiserver writes with it; older keys may be retired\n`
            : `expect-key: NOT OK (keep every older key):\n${problems.map((p) => `  ${p}`).join('\n')}\n`,
        );
      }
      if (problems.length > 0) process.exitCode = EXIT_FINDINGS;
    } finally {
      await client.close();
      await enc.close();
    }
  });
}
