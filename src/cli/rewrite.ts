// `atrest rewrite`: re-encrypt every selected value the current write provider and key did not write
// (rotate a key, switch local -> KMS, disable encryption with identity first). Directly in etcd with
// conditional transactions, or with --via-api through the Kubernetes API (no-op patches).

import { Option, type Command } from 'commander';
import { rmSync } from 'node:fs';
import { createJsonLogger } from '../logger.js';
import { rewrite, UndecryptableValuesError, type RewriteReport } from '../etcd/rewrite.js';
import { EXIT_FINDINGS } from './exit.js';
import {
  addEtcdOptions,
  createEtcdClient,
  etcdPrefixOf,
  parsePositiveInt,
  parseRate,
  parseResources,
  selectionFromFlags,
  usageError,
  type EtcdFlags,
} from './etcd-flags.js';
import { openEncryption } from './kms-dial.js';
import { parseOutputFormat, renderJson, renderTable } from './output.js';
import { createProgress } from './progress.js';
import { renderScanReport } from './scan.js';

interface RewriteFlags extends EtcdFlags {
  readonly encryptionConfig?: string;
  readonly resource?: string;
  readonly all?: boolean;
  readonly dryRun?: boolean;
  readonly concurrency: string;
  readonly rate: string;
  readonly resume?: string;
  readonly skipUndecryptable?: boolean;
  readonly output: string;
  readonly viaApi?: boolean;
  readonly kubeconfig?: string;
  readonly context?: string;
}

export function renderRewriteReport(r: RewriteReport): string {
  const c = r.counts;
  const rows: string[][] = [
    ['values checked', String(r.preflight.scanned)],
    ['needed a rewrite', String(r.preflight.toRewrite)],
    ['already current', String(r.preflight.current)],
    ['undecryptable', String(r.preflight.undecryptable)],
  ];
  if (!r.dryRun) {
    rows.push(
      ['rewritten (read back and verified)', String(c.rewritten)],
      ['conflicts with concurrent writers (re-read, retried)', String(c.conflicts)],
      ['deleted while running', String(c.deleted)],
      ['left untouched: undecryptable', String(c.skippedUndecryptable)],
      ['failed', String(c.failed)],
    );
  }
  let out = renderTable([r.dryRun ? 'DRY RUN' : 'REWRITE', r.resumed ? 'COUNT (since the first run)' : 'COUNT'], rows);
  if (r.undecryptable.length > 0) {
    out += `\nundecryptable values (left untouched):\n`;
    for (const u of r.undecryptable.slice(0, 50)) {
      out += `  ${u.key} (stored as ${u.stored}; tried ${u.providersTried.join(', ') || 'no provider'}): ${u.reason}\n`;
    }
  }
  if (r.failures.length > 0) {
    out += `\nfailed:\n`;
    for (const f of r.failures.slice(0, 50)) out += `  ${f.key}: ${f.reason}\n`;
  }
  if (r.finalScan) out += `\nverification scan of everything covered (${r.selection}):\n${renderScanReport(r.finalScan, 'verification')}`;
  if (r.dryRun) {
    out += `\ndry run: ${r.preflight.toRewrite} value(s) would be rewritten; nothing was written\n`;
  } else {
    out += r.converged
      ? `\nconverged: every covered value is written by the current provider and key` +
        (r.undecryptable.length > 0 ? ` (except ${r.undecryptable.length} undecryptable value(s) left untouched)` : '') +
        '\n'
      : `\nNOT converged: rerun "atrest rewrite" (with the same --resume file, if any) before retiring an old key\n`;
  }
  return out;
}

export function registerRewrite(program: Command): void {
  const cmd = program
    .command('rewrite')
    .description(
      're-encrypt every value not written by the current write provider and key ' +
        '(rotate a key, switch local -> KMS, disable encryption with identity first); safe with a running API server',
    );
  cmd
    .addOption(
      new Option('--encryption-config <file>', "the API server's EncryptionConfiguration (not needed with --via-api)"),
    )
    .option('--resource <list>', 'resources to rewrite, as in the config: secrets,configmaps,*.apps')
    .option('--all', 'every key under --etcd-prefix')
    .option('--dry-run', 'check (and decrypt) everything, report what would be rewritten, write nothing')
    .option('--concurrency <n>', 'keys rewritten in parallel', '8')
    .option('--rate <writes-per-second>', 'limit writes per second (0 = unlimited)', '0')
    .option('--resume <file>', 'checkpoint file: created if missing, continued if present, removed when done')
    .option('--skip-undecryptable', 'rewrite the rest when some values cannot be decrypted (they are listed, never touched)')
    .addOption(new Option('-o, --output <format>', 'table or json').default('table'))
    .option('--via-api', 'rewrite through the Kubernetes API (no-op JSON merge patches) instead of etcd')
    .option('--kubeconfig <file>', 'kubeconfig for --via-api (default: $KUBECONFIG, ~/.kube/config, in-cluster)')
    .option('--context <name>', 'kubeconfig context for --via-api');
  addEtcdOptions(cmd);
  cmd.action(async (flags: RewriteFlags) => {
    const output = parseOutputFormat(flags.output);
    const concurrency = parsePositiveInt('--concurrency', flags.concurrency);
    const rate = parseRate(flags.rate);
    if (flags.all && flags.resource !== undefined) throw usageError('--all', 'use either --all or --resource');
    if (flags.viaApi) {
      await rewriteViaApi(flags, concurrency, rate, output);
      return;
    }
    if (flags.kubeconfig !== undefined || flags.context !== undefined) {
      throw usageError('--kubeconfig', '--kubeconfig and --context only apply with --via-api');
    }
    if (flags.encryptionConfig === undefined) {
      throw usageError('--encryption-config', 'required (the providers and keys to rewrite with)');
    }
    const etcdPrefix = etcdPrefixOf(flags);
    const enc = await openEncryption({
      configPath: flags.encryptionConfig,
      etcdPrefix,
      mode: flags.dryRun ? 'read' : 'write',
    });
    const client = createEtcdClient(flags, concurrency);
    const progress = createProgress({ label: 'rewrite' });
    try {
      for (const w of enc.warnings) process.stderr.write(`warning: ${w}\n`);
      const selection = selectionFromFlags(flags, etcdPrefix, enc.config);
      let report: RewriteReport;
      try {
        report = await rewrite({
          store: client,
          selection,
          policies: enc.policies,
          configHash: enc.configHash,
          etcdPrefix,
          concurrency,
          rate,
          ...(flags.dryRun ? { dryRun: true } : {}),
          ...(flags.resume !== undefined ? { checkpointPath: flags.resume } : {}),
          ...(flags.skipUndecryptable ? { skipUndecryptable: true } : {}),
          onProgress: (p) => progress.update(p.done, p.total, p.phase),
        });
      } catch (err) {
        progress.finish();
        if (err instanceof UndecryptableValuesError) {
          process.stderr.write(`atrest: ${err.message}\n`);
          process.exitCode = EXIT_FINDINGS;
          return;
        }
        throw err;
      }
      progress.finish();
      process.stdout.write(output === 'json' ? renderJson(report) : renderRewriteReport(report));
      if (!report.dryRun && report.converged && flags.resume !== undefined) {
        rmSync(flags.resume, { force: true });
        if (output !== 'json') process.stdout.write(`checkpoint ${flags.resume} removed (rewrite complete)\n`);
      }
      if (!report.dryRun && (!report.converged || report.undecryptable.length > 0)) process.exitCode = EXIT_FINDINGS;
    } finally {
      progress.finish();
      await client.close();
      await enc.close();
    }
  });
}

async function rewriteViaApi(flags: RewriteFlags, concurrency: number, rate: number, output: 'table' | 'json'): Promise<void> {
  const resources = parseResources(flags.resource);
  if (resources === undefined || flags.all) {
    throw usageError('--resource', 'with --via-api name the resources to rewrite (e.g. --resource secrets,configmaps)');
  }
  const controller = new AbortController();
  const onSignal = (): void => controller.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    // Loaded on demand: the Kubernetes client library is large and only this mode needs it.
    const { runRewriteViaApi } = await import('../api/rewrite-via-api.js');
    const summary = await runRewriteViaApi({
      resources,
      concurrency,
      rate,
      dryRun: flags.dryRun === true,
      logger: createJsonLogger((line) => process.stderr.write(line), 'warn'),
      signal: controller.signal,
      ...(flags.kubeconfig !== undefined ? { kubeconfig: flags.kubeconfig } : {}),
      ...(flags.context !== undefined ? { context: flags.context } : {}),
      ...(flags.resume !== undefined ? { resumeFile: flags.resume } : {}),
    });
    if (output === 'json') process.stdout.write(renderJson(summary));
    else {
      process.stdout.write(
        renderTable(['VIA API', 'COUNT'], [
          ['listed', String(summary.listed)],
          ['patched', String(summary.patched)],
          ['rewritten (new resourceVersion)', String(summary.rewritten)],
          ['gone meanwhile', String(summary.gone)],
          ['skipped (already done)', String(summary.skipped)],
          ['failed', String(summary.failed.length)],
        ]) + (summary.failed.length > 0 ? summary.failed.slice(0, 50).map((f) => `  ${f.resource} ${f.namespace ? `${f.namespace}/` : ''}${f.name}: HTTP ${f.status} ${f.reason}\n`).join('') : ''),
      );
    }
    if (summary.failed.length > 0 || summary.interrupted) process.exitCode = EXIT_FINDINGS;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
