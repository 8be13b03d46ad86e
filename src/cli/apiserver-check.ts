// The "do the API servers already write with the plugin's current key_id?" gate shared by rewrite and
// scan --expect-key: flags, which kms v2 keys to expect, and the check through each server's /metrics
// (src/api/apiserver-key-id.ts). Without it, "converged" could be said while a kube-apiserver that has
// not polled the plugin's Status yet keeps writing with the key an operator is about to retire.

import { Option, type Command } from 'commander';
import type { ApiServerKeyState, ExpectedKey } from '../api/apiserver-key-id.js';
import type { KmsV2Transformer } from '../transformers/kms-v2.js';
import { loadKubeConfig } from './kubeconfig.js';
import { usageError } from './etcd-flags.js';
import type { EncryptionContext } from './kms-dial.js';

export interface ApiServerCheckFlags {
  readonly kubeconfig?: string;
  readonly context?: string;
  readonly apiservers?: string;
  /** false with --no-apiserver-check */
  readonly apiserverCheck?: boolean;
}

export function addApiServerCheckOptions(cmd: Command, withKubeconfig: boolean): Command {
  if (withKubeconfig) {
    cmd
      .option('--kubeconfig <file>', "kubeconfig to read each kube-apiserver's /metrics (which kms v2 key_id it writes with)")
      .option('--context <name>', 'kubeconfig context');
  }
  return cmd
    .addOption(
      new Option(
        '--apiservers <urls>',
        'every kube-apiserver URL when several run behind one address (same kubeconfig credentials), e.g. https://10.0.0.1:6443,https://10.0.0.2:6443',
      ),
    )
    .option('--no-apiserver-check', 'do not confirm the kms v2 key_id the API servers write with (no API server uses this etcd)');
}

/** Every kms v2 provider that is some resource's write provider, with the key_id its plugin reports now. */
export function expectedKmsV2Keys(enc: EncryptionContext): ExpectedKey[] {
  const names = new Set<string>();
  for (const r of enc.config.resources) {
    const first = r.providers[0];
    if (first !== undefined && 'kms' in first && first.kms.apiVersion === 'v2') names.add(first.kms.name);
  }
  const out: ExpectedKey[] = [];
  for (const name of names) {
    const h = enc.built.kmsProviders.find((k) => k.config.apiVersion === 'v2' && k.config.name === name);
    const keyID = h === undefined ? undefined : (h.transformer as KmsV2Transformer).currentState()?.keyID;
    if (keyID !== undefined) out.push({ provider: name, keyID });
  }
  return out;
}

/**
 * Confirms that every API server writes with the expected keys. Returns the per-server states (empty
 * when there is nothing to check or the check was turned off); throws when it cannot be confirmed.
 */
export async function confirmApiServers(
  what: string,
  flags: ApiServerCheckFlags,
  expected: readonly ExpectedKey[],
): Promise<readonly ApiServerKeyState[]> {
  if (expected.length === 0 || flags.apiserverCheck === false) return [];
  if (flags.kubeconfig === undefined) {
    throw usageError(
      '--kubeconfig',
      `${what} writes or checks kms v2 values, and must first confirm that every kube-apiserver already writes ` +
        `with the plugin's current key_id (${expected.map((e) => `${e.provider}: ${e.keyID}`).join(', ')}): ` +
        'give --kubeconfig FILE (plus --apiservers URL,... when several API servers run), ' +
        'or --no-apiserver-check when no API server uses this etcd',
    );
  }
  const { checkApiServerKeyIDs, apiServerKeyIdError } = await import('../api/apiserver-key-id.js');
  const servers = flags.apiservers?.split(',').map((s) => s.trim()).filter((s) => s !== '');
  const states = await checkApiServerKeyIDs(
    {
      kubeConfig: await loadKubeConfig(flags.kubeconfig, flags.context),
      ...(servers !== undefined ? { servers } : {}),
    },
    expected,
  );
  if (states.some((s) => !s.ok)) throw apiServerKeyIdError(what, states, expected);
  return states;
}

export function renderApiServerStates(states: readonly ApiServerKeyState[]): string {
  if (states.length === 0) return '';
  return (
    states
      .map((s) => `kube-apiserver ${s.server}: writes with the current key_id of "${s.provider}" (Status at ${new Date((s.statusAt ?? 0) * 1000).toISOString()})`)
      .join('\n') + '\n'
  );
}
