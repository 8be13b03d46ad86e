// `atrest config stage --from OLD.yaml --to NEW.yaml`: checks whether API servers can switch from OLD
// to NEW directly while some still run OLD, and when they cannot, explains why and prints (or writes,
// with --out-dir) the intermediate configurations to deploy instead (planning: src/config/stage.ts).
// Exit 0: a direct switch is safe; 3: it is not (the phases are printed); 2: unusable configurations.

import { chmod, mkdir, rename, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Option, type Command } from 'commander';
import { stringify } from 'yaml';
import { loadEncryptionConfiguration } from '../config/load.js';
import { configDocument, planStage, type StagePhase } from '../config/stage.js';
import { EXIT_FINDINGS } from './exit.js';
import { parseOutputFormat, renderJson, renderTable } from './output.js';

const say = (text: string): void => void process.stdout.write(text);
const warn = (text: string): void => void process.stderr.write(text);

const PHASE_TEXT: Readonly<Record<StagePhase['name'], string>> = {
  read: 'every server learns to read the new provider/key; writes do not change yet',
  write: 'writes switch; the old provider/key stays readable',
  final: 'the target configuration',
};

export function phaseFileName(index: number, phase: StagePhase): string {
  return `${index + 1}-${phase.name}.yaml`;
}

function phaseYaml(
  phase: StagePhase,
  index: number,
  count: number,
  from: string,
  to: string,
  showSecrets: boolean,
): string {
  let next = 'Deploy on every API server (restart them one at a time)';
  if (phase.name === 'final' && index > 0) {
    next =
      'Deploy on every API server only after "atrest rewrite" with the previous phase converged.';
  } else if (index + 1 < count && phase.name === 'write') {
    next += `, then "atrest rewrite" with this file; phase ${index + 2} only after it converged.`;
  } else if (index + 1 < count) {
    next += `, then phase ${index + 2}.`;
  } else if (phase.name === 'write') {
    next += ', then "atrest rewrite".';
  } else {
    next += '.';
  }
  const lines = [
    `# atrest config stage --from ${from} --to ${to}: phase ${index + 1} of ${count} (${phase.name})`,
    `# ${PHASE_TEXT[phase.name]}`,
    ...phase.summary.map((s) => `#   ${s}`),
    `# ${next}`,
  ];
  const body = stringify(configDocument(phase.config, { showSecrets }), { version: '1.1' });
  return lines.join('\n') + '\n' + body;
}

async function writePrivate(path: string, text: string): Promise<void> {
  const temp = `${path}.tmp-${randomBytes(6).toString('hex')}`;
  await writeFile(temp, text, { mode: 0o600, flag: 'wx' });
  await chmod(temp, 0o600);
  await rename(temp, path);
}

export function registerConfig(program: Command): void {
  const config = program.command('config').description('work with EncryptionConfiguration files');

  config
    .command('stage')
    .description(
      'check that API servers can move from OLD to NEW one at a time, each reading what the others ' +
        'write; if not, print the intermediate configurations to deploy in order (exit 3)',
    )
    .requiredOption('--from <file>', 'the EncryptionConfiguration every API server runs now')
    .requiredOption('--to <file>', 'the EncryptionConfiguration wanted')
    .option(
      '--out-dir <dir>',
      'write each phase as DIR/N-PHASE.yaml, with its secrets, mode 0600 (the directory is created 0700)',
    )
    .option(
      '--show-secrets',
      'print key secrets in the configurations on stdout (else REDACTED)',
      false,
    )
    .addOption(new Option('-o, --output <format>', 'table or json').default('table'))
    .action(
      async (opts: {
        from: string;
        to: string;
        outDir?: string;
        showSecrets: boolean;
        output: string;
      }) => {
        const format = parseOutputFormat(opts.output);
        const from = await loadEncryptionConfiguration(opts.from);
        const to = await loadEncryptionConfiguration(opts.to);
        const fromName = basename(opts.from);
        const toName = basename(opts.to);
        const plan = planStage(from, to, fromName, toName);
        const staged = !plan.directSafe;
        const files = plan.phases.map((p, i) =>
          opts.outDir === undefined || !staged ? undefined : join(opts.outDir, phaseFileName(i, p)),
        );
        if (opts.outDir !== undefined && staged) {
          await mkdir(opts.outDir, { recursive: true, mode: 0o700 });
          for (const [i, p] of plan.phases.entries()) {
            const text = phaseYaml(p, i, plan.phases.length, fromName, toName, true);
            await writePrivate(files[i]!, text);
          }
        }
        if (format === 'json') {
          say(
            renderJson({
              from: opts.from,
              to: opts.to,
              directSwitch: { safe: plan.directSafe, problems: plan.problems },
              warnings: plan.warnings,
              phases: plan.phases.map((p, i) => ({
                phase: i + 1,
                name: p.name,
                ...(files[i] === undefined ? {} : { file: files[i] }),
                summary: p.summary,
                config: configDocument(p.config, { showSecrets: opts.showSecrets }),
              })),
            }),
          );
        } else if (!staged) {
          say(`direct switch from ${fromName} to ${toName}: safe\n`);
          for (const s of plan.phases[0]!.summary) say(`  ${s}\n`);
          say(
            `deploy ${toName} on every API server (one at a time); every server reads what the ` +
              'others write meanwhile\n',
          );
        } else {
          say(`direct switch from ${fromName} to ${toName}: NOT SAFE\n`);
          for (const p of plan.problems) say(`  ${p}\n`);
          say(
            `\ndeploy these ${plan.phases.length} phases instead, in order; before each next phase every ` +
              'API server must run the previous one (restart them one at a time):\n\n',
          );
          say(
            renderTable(
              ['PHASE', 'FILE', 'CHANGE'],
              plan.phases.map((p, i) => [
                `${i + 1} ${p.name}`,
                files[i] ?? phaseFileName(i, p),
                p.summary.join(' | '),
              ]),
            ),
          );
          const writer = plan.phases.findIndex((p) => p.name === 'write');
          if (writer >= 0) {
            say(
              `\nafter phase ${writer + 1}: "atrest rewrite --encryption-config ` +
                `${files[writer] ?? phaseFileName(writer, plan.phases[writer]!)}" until it reports ` +
                'converged; only then the next phase\n',
            );
          }
          if (opts.outDir === undefined) {
            for (const [i, p] of plan.phases.entries()) {
              say(`\n---\n`);
              say(phaseYaml(p, i, plan.phases.length, fromName, toName, opts.showSecrets));
            }
            if (!opts.showSecrets) {
              say(
                '\n# secrets are REDACTED above: use --out-dir DIR to write these files with their ' +
                  'secrets (mode 0600)\n',
              );
            }
          }
        }
        for (const w of plan.warnings) warn(`warning: ${w}\n`);
        if (staged) {
          warn(
            `config stage: refusing a direct switch from ${fromName} to ${toName}: ` +
              `${plan.problems.length} problem(s) above; deploy the ${plan.phases.length} phases instead\n`,
          );
          process.exitCode = EXIT_FINDINGS;
        }
      },
    );
}
