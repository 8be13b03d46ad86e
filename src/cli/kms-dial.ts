// Composition helper for the etcd commands: loads the EncryptionConfiguration, builds its transformers
// with real KMS clients (UNIX sockets), asks every kms v2 plugin for its Status (so the current key_id
// is known and writes are possible), and hands back the per-key policies scan/rewrite/decrypt use.

import { readFile } from 'node:fs/promises';
import { AtrestError } from '../errors.js';
import { buildTransformers, type BuildDeps, type BuiltTransformers } from '../config/build.js';
import { loadEncryptionConfiguration } from '../config/load.js';
import type { EncryptionConfiguration } from '../config/types.js';
import { createPolicyResolver, type PolicyResolver } from '../etcd/policy.js';
import { hashConfig } from '../etcd/rewrite.js';
import { createKmsV1Client, createKmsV2Client } from '../kms-client/index.js';
import type { KmsV2Transformer } from '../transformers/kms-v2.js';

/** Dial functions for buildTransformers backed by atrest's KMS gRPC clients (UNIX sockets). */
export function createKmsDialer(): BuildDeps {
  return {
    dialKmsV1: (endpoint, timeoutMs) => createKmsV1Client({ endpoint, timeoutMs }),
    dialKmsV2: (endpoint, timeoutMs) => createKmsV2Client({ endpoint, timeoutMs }),
  };
}

export interface EncryptionContext {
  readonly config: EncryptionConfiguration;
  /** sha256:<hex> of the configuration file's bytes. */
  readonly configHash: string;
  readonly built: BuiltTransformers;
  readonly policies: PolicyResolver;
  /** Problems talking to kms v2 plugins (read-only commands go on without them). */
  readonly warnings: readonly string[];
  close(): Promise<void>;
}

export interface OpenEncryptionOptions {
  readonly configPath: string;
  readonly etcdPrefix: string;
  /** 'write' (rewrite): every kms v2 plugin must answer Status, since writes need its key. */
  readonly mode: 'read' | 'write';
  /** Overrides the KMS dialling (tests; break-glass recovery reads through seals instead). */
  readonly deps?: BuildDeps;
  /** No plugin is asked for Status (break-glass recovery: there is none). */
  readonly offline?: boolean;
}

export async function openEncryption(options: OpenEncryptionOptions): Promise<EncryptionContext> {
  const config = await loadEncryptionConfiguration(options.configPath);
  const configHash = hashConfig(await readFile(options.configPath));
  const deps = options.deps ?? createKmsDialer();
  const built = buildTransformers(config, {
    ...deps,
    // Disaster recovery and scans must read even when a plugin's Status fails; writes never do.
    kmsV2Options: { ...deps.kmsV2Options, allowReadWithoutStatus: options.mode === 'read' },
  });
  const warnings: string[] = [];
  try {
    for (const handle of built.kmsProviders) {
      if (handle.config.apiVersion !== 'v2' || options.offline === true) continue;
      const health = await (handle.transformer as KmsV2Transformer).refreshStatus();
      if (!health.ok) {
        const msg = `kms v2 provider "${handle.config.name}" (${handle.config.endpoint}): ${health.error?.message ?? 'Status failed'}`;
        if (options.mode === 'write') throw new AtrestError('ERR_UNHEALTHY', `cannot write: ${msg}`, { cause: health.error });
        warnings.push(`${msg}; its values can still be decrypted, but whether they are current is unknown`);
      }
    }
  } catch (err) {
    await built.close();
    throw err;
  }
  const kmsV2KeyID = (name: string): string | undefined => {
    const h = built.kmsProviders.find((k) => k.config.apiVersion === 'v2' && k.config.name === name);
    return h === undefined ? undefined : (h.transformer as KmsV2Transformer).currentState()?.keyID;
  };
  const policies = createPolicyResolver(config, options.etcdPrefix, {
    transformerFor: (gr) => built.transformerFor(gr),
    kmsV2KeyID,
  });
  return { config, configHash, built, policies, warnings, close: () => built.close() };
}
