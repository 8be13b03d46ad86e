// `atrest scan`: classify every stored value under the selected resources (plaintext, provider + key,
// kms name + key_id; current or stale; with --decrypt whether it decrypts), as a table or JSON.
// Exit status 3 when a resource the config says must be encrypted holds plaintext or undecryptable values.

import { Option, type Command } from 'commander';
import { scan, type ScanReport } from '../etcd/scan.js';
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
import { openEncryption } from './kms-dial.js';
import { parseOutputFormat, renderJson, renderTable } from './output.js';
import { createProgress } from './progress.js';

interface ScanFlags extends EtcdFlags {
  readonly encryptionConfig: string;
  readonly resource?: string;
  readonly all?: boolean;
  readonly decrypt?: boolean;
  readonly output: string;
  readonly concurrency: string;
}

/** The human report: one row per resource, then the findings (first 20) and a verdict. */
export function renderScanReport(report: ScanReport, title = 'scan'): string {
  const rows = report.resources.map((r) => [
    r.resource,
    String(r.keys),
    String(r.plaintext),
    String(r.encrypted),
    String(r.current),
    String(r.stale) + (r.unknown > 0 ? ` (+${r.unknown} unknown)` : ''),
    String(r.undecryptable),
    r.writeProvider,
    Object.entries(r.formats)
      .sort((a, b) => b[1] - a[1])
      .map(([f, n]) => `${f} (${n})`)
      .join(', '),
  ]);
  const t = report.totals;
  rows.push(['TOTAL', String(t.keys), String(t.plaintext), String(t.encrypted), String(t.current),
    String(t.stale) + (t.unknown > 0 ? ` (+${t.unknown} unknown)` : ''), String(t.undecryptable), '', '']);
  let out = renderTable(
    ['RESOURCE', 'KEYS', 'PLAINTEXT', 'ENCRYPTED', 'CURRENT', 'STALE', report.decrypt ? 'UNDECRYPTABLE' : 'UNREADABLE', 'WRITES WITH', 'STORED AS'],
    rows,
  );
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
    .option('--concurrency <n>', 'parallel decryptions with --decrypt', '8');
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
      const selection = selectionFromFlags(flags, etcdPrefix, enc.config);
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
      process.stdout.write(output === 'json' ? renderJson(report) : renderScanReport(report));
      if (report.findingsTotal > 0) process.exitCode = EXIT_FINDINGS;
    } finally {
      await client.close();
      await enc.close();
    }
  });
}
