// `atrest rewrite`: re-encrypt every selected value the current write provider and key did not write
// (rotate a key, switch local -> KMS, disable encryption with identity first). Directly in etcd with
// conditional transactions, or with --via-api through the Kubernetes API (no-op patches).

import { Option, type Command } from 'commander';
import { rmSync } from 'node:fs';
import { createJsonLogger } from '../logger.js';
import { loadKubeConfig } from './kubeconfig.js';
import { DEFAULT_CONCURRENCY, rewrite, UndecryptableValuesError, type RewriteReport } from '../etcd/rewrite.js';
import { assertSelectionNotEmpty } from '../etcd/empty-selection.js';
import type { Selection } from '../etcd/selection.js';
import { MAX_TXN_KEYS } from '../etcd/txn-batch.js';
import type { EtcdClient } from '../etcd/client.js';
import type { ApiServerKeyState } from '../api/apiserver-key-id.js';
import * as apiserverCheck from './apiserver-check.js';
import { describeError, EXIT_FINDINGS } from './exit.js';
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

interface RewriteFlags extends EtcdFlags, apiserverCheck.ApiServerCheckFlags {
  readonly encryptionConfig?: string;
  readonly resource?: string;
  readonly all?: boolean;
  readonly dryRun?: boolean;
  readonly concurrency: string;
  readonly rate: string;
  readonly txnKeys: string;
  readonly resume?: string;
  readonly skipUndecryptable?: boolean;
  readonly output: string;
  readonly viaApi?: boolean;
  readonly allowEmpty?: boolean;
}

export function renderRewriteReport(r: RewriteReport, apiservers: readonly ApiServerKeyState[] = []): string {
  const c = r.counts;
  const t = r.countsThisRun;
  // A resumed run: the preflight only saw what was left; the write counts also exist since the first run.
  const row = (label: string, thisRun: number, allRuns?: number): string[] =>
    r.resumed ? [label, String(thisRun), allRuns === undefined ? '-' : String(allRuns)] : [label, String(thisRun)];
  const rows: string[][] = [
    row('values checked', r.preflight.scanned),
    row('needed a rewrite', r.preflight.toRewrite),
    row('already current', r.preflight.current),
    row('undecryptable', r.preflight.undecryptable),
  ];
  if (!r.dryRun) {
    rows.push(
      row('rewritten (read back and verified)', t.rewritten, c.rewritten),
      row('conflicts with concurrent writers (re-read, retried)', t.conflicts, c.conflicts),
      row('deleted while running', t.deleted, c.deleted),
      row('left untouched: undecryptable', t.skippedUndecryptable, c.skippedUndecryptable),
      row('failed', t.failed, c.failed),
    );
  }
  const headers = [r.dryRun ? 'DRY RUN' : 'REWRITE', ...(r.resumed ? ['THIS RUN', 'ALL RUNS'] : ['COUNT'])];
  let out = renderTable(headers, rows);
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
  if (apiservers.length > 0) out += `\n${apiserverCheck.renderApiServerStates(apiservers)}`;
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
    .option('--concurrency <n>', 'etcd transactions (and KMS calls) in flight', String(DEFAULT_CONCURRENCY))
    .option('--rate <writes-per-second>', 'limit writes per second (0 = unlimited)', '0')
    .option(
      '--txn-keys <n>',
      `keys written per etcd transaction, 1-${MAX_TXN_KEYS} (lower it for an etcd with a lower --max-txn-ops)`,
      String(MAX_TXN_KEYS),
    )
    .option('--resume <file>', 'checkpoint file: created if missing, continued if present, removed when done')
    .option('--skip-undecryptable', 'rewrite the rest when some values cannot be decrypted (they are listed, never touched)')
    .addOption(new Option('-o, --output <format>', 'table or json').default('table'))
    .option('--via-api', 'rewrite through the Kubernetes API (no-op JSON merge patches) instead of etcd')
    .option(
      '--kubeconfig <file>',
      "with --via-api: the API to rewrite through (default: $KUBECONFIG, ~/.kube/config, in-cluster); otherwise: read each kube-apiserver's /metrics to confirm it writes with the kms v2 plugin's current key_id",
    )
    .option('--context <name>', 'kubeconfig context')
    .option('--allow-empty', 'accept a prefix or resource that holds no key (otherwise exit status 4)');
  apiserverCheck.addApiServerCheckOptions(cmd, false);
  addEtcdOptions(cmd);
  cmd.action(async (flags: RewriteFlags) => {
    const output = parseOutputFormat(flags.output);
    const concurrency = parsePositiveInt('--concurrency', flags.concurrency);
    const rate = parseRate(flags.rate);
    if (flags.all && flags.resource !== undefined) throw usageError('--all', 'use either --all or --resource');
    if (flags.viaApi) await rewriteViaApi(flags, concurrency, rate, output);
    else await rewriteInEtcd(flags, { concurrency, rate, output });
  });
}

interface EtcdRewriteSettings {
  readonly concurrency: number;
  readonly rate: number;
  readonly output: 'table' | 'json';
}

function parseTxnKeys(value: string): number {
  const n = parsePositiveInt('--txn-keys', value);
  if (n > MAX_TXN_KEYS) throw usageError('--txn-keys', `"${value}" must be at most ${MAX_TXN_KEYS} (etcd's default --max-txn-ops)`);
  return n;
}

async function countSelected(client: EtcdClient, selection: Selection): Promise<number> {
  let total = 0;
  for (const r of selection.ranges) total += (await client.range(r.start, { rangeEnd: r.end, countOnly: true })).count;
  return total;
}

async function rewriteInEtcd(flags: RewriteFlags, settings: EtcdRewriteSettings): Promise<void> {
  if (flags.encryptionConfig === undefined) {
    throw usageError('--encryption-config', 'required (the providers and keys to rewrite with)');
  }
  const { concurrency, rate } = settings;
  const maxKeys = parseTxnKeys(flags.txnKeys);
  const etcdPrefix = etcdPrefixOf(flags);
  const enc = await openEncryption({ configPath: flags.encryptionConfig, etcdPrefix, mode: flags.dryRun ? 'read' : 'write' });
  const client = createEtcdClient(flags, concurrency);
  const progress = createProgress({ label: 'rewrite' });
  try {
    for (const w of enc.warnings) process.stderr.write(`warning: ${w}\n`);
    const selection = selectionFromFlags(flags, etcdPrefix, enc.config);
    if (!flags.allowEmpty) await assertSelectionNotEmpty('rewrite', client, selection, etcdPrefix);
    // Before writing: a kube-apiserver still on the old key_id would keep writing values that need it.
    const expected = apiserverCheck.expectedKmsV2Keys(enc);
    if (!flags.dryRun) await apiserverCheck.confirmApiServers('rewrite', flags, expected);
    const total = await countSelected(client, selection);
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
        batchLimits: { maxKeys },
        ...(flags.dryRun ? { dryRun: true } : {}),
        ...(flags.resume !== undefined ? { checkpointPath: flags.resume } : {}),
        ...(flags.skipUndecryptable ? { skipUndecryptable: true } : {}),
        total,
        onProgress: (p) => progress.update(p.done, p.total, p.phase),
      });
    } catch (err) {
      if (!(err instanceof UndecryptableValuesError)) throw err;
      progress.finish();
      process.stderr.write(`atrest: ${err.message}\n`);
      process.exitCode = EXIT_FINDINGS;
      return;
    }
    progress.finish();
    await reportRewrite(flags, settings.output, report, expected);
  } finally {
    progress.finish();
    await client.close();
    await enc.close();
  }
}

/** Prints the report; "converged" also needs every API server writing with the current key_id. */
async function reportRewrite(
  flags: RewriteFlags,
  output: 'table' | 'json',
  result: RewriteReport,
  expected: ReturnType<typeof apiserverCheck.expectedKmsV2Keys>,
): Promise<void> {
  let report = result;
  let apiservers: readonly ApiServerKeyState[] = [];
  let apiserverProblem: string | undefined;
  if (!report.dryRun && report.converged) {
    try {
      apiservers = await apiserverCheck.confirmApiServers('rewrite', flags, expected);
    } catch (err) {
      apiserverProblem = describeError(err);
      report = { ...report, converged: false };
    }
  }
  process.stdout.write(
    output === 'json'
      ? renderJson({ ...report, apiservers, ...(apiserverProblem ? { apiserverProblem } : {}) })
      : renderRewriteReport(report, apiservers),
  );
  if (apiserverProblem !== undefined) process.stderr.write(`atrest: ${apiserverProblem}\n`);
  if (!report.dryRun && report.converged && flags.resume !== undefined) {
    rmSync(flags.resume, { force: true });
    if (output !== 'json') process.stdout.write(`checkpoint ${flags.resume} removed (rewrite complete)\n`);
  }
  if (!report.dryRun && (!report.converged || report.undecryptable.length > 0)) process.exitCode = EXIT_FINDINGS;
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
    // Lists are paged, so the total is not known up front: the line shows counts and the rate.
    const progress = createProgress({ label: 'rewriting via the API' });
    const summary = await runRewriteViaApi({
      resources,
      concurrency,
      rate,
      dryRun: flags.dryRun === true,
      logger: createJsonLogger((line) => process.stderr.write(line), 'warn'),
      signal: controller.signal,
      kubeConfig: await loadKubeConfig(flags.kubeconfig, flags.context),
      onProgress: (p) => progress.update(p.patched, 0, `patched (${p.resource}: ${p.listed} listed, ${p.failed} failed)`),
      ...(flags.resume !== undefined ? { resumeFile: flags.resume } : {}),
    }).finally(() => progress.finish());
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
