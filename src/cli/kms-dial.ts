// Composition helper for the etcd commands: loads the EncryptionConfiguration, builds its transformers
// with real KMS clients (UNIX sockets), probes every KMS plugin once up front (kms v2: Status, so the
// current key_id is known and writes are possible; kms v1: Version), and hands back the per-key
// policies scan/rewrite/decrypt use. A plugin that fails the probe is latched "unreachable": every
// later call to it fails at once instead of waiting its timeout once per stored value.

import { readFile } from 'node:fs/promises';
import { AtrestError } from '../errors.js';
import { buildTransformers, type BuildDeps, type BuiltTransformers } from '../config/build.js';
import { loadEncryptionConfiguration } from '../config/load.js';
import type { EncryptionConfiguration } from '../config/types.js';
import { createPolicyResolver, type PolicyResolver } from '../etcd/policy.js';
import { hashConfig } from '../etcd/rewrite.js';
import { createKmsV1Client, createKmsV2Client, type KmsV1Client, type KmsV2Client } from '../kms-client/index.js';
import type { KmsV2Transformer } from '../transformers/kms-v2.js';

/** A dialled plugin connection; `down` once the up-front probe failed (later calls fail at once). */
interface Dialled {
  readonly endpoint: string;
  down?: AtrestError;
  probe(): Promise<void>;
}

/** gRPC codes that mean "no plugin answers" (not "the plugin refused this one value"). */
const UNREACHABLE = /\b(UNAVAILABLE|DEADLINE_EXCEEDED)\b|ECONNREFUSED|ENOENT|EPIPE|ECONNRESET/;

/**
 * Wraps every async method so that it rejects at once while the connection is latched down. A call
 * that finds the plugin gone (unavailable, timed out) latches it too: a plugin that dies halfway
 * through a decrypt --all costs one timeout, not one per remaining value.
 */
function latched<T extends object>(client: T, state: { down?: AtrestError; endpoint: string }): T {
  return new Proxy(client, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver) as unknown;
      if (typeof v !== 'function' || prop === 'close') return v;
      return async (...args: unknown[]) => {
        if (state.down) throw state.down;
        try {
          return await (v as (...a: unknown[]) => Promise<unknown>).apply(target, args);
        } catch (err) {
          const message = err instanceof Error ? err.message : String(err);
          if (state.down === undefined && UNREACHABLE.test(message)) {
            state.down = new AtrestError('ERR_UNHEALTHY', `kms plugin at ${state.endpoint} is unreachable: ${message}`, { cause: err });
          }
          throw err;
        }
      };
    },
  });
}

/** Dial functions for buildTransformers backed by atrest's KMS gRPC clients (UNIX sockets). */
export function createKmsDialer(dialled: Dialled[] = []): BuildDeps {
  return {
    dialKmsV1: (endpoint, timeoutMs) => {
      const client: KmsV1Client = createKmsV1Client({ endpoint, timeoutMs });
      const d: Dialled = { endpoint, probe: async () => void (await client.version()) };
      dialled.push(d);
      return latched(client, d);
    },
    dialKmsV2: (endpoint, timeoutMs) => {
      const client: KmsV2Client = createKmsV2Client({ endpoint, timeoutMs });
      const d: Dialled = { endpoint, probe: async () => void (await client.status()) };
      dialled.push(d);
      return latched(client, d);
    },
  };
}

/** A KMS plugin of the configuration that did not answer its probe. */
export interface UnreachablePlugin {
  readonly name: string;
  readonly apiVersion: 'v1' | 'v2';
  readonly endpoint: string;
  readonly reason: string;
}

/** The one-line description of unreachable plugins used by every command's message. */
export function describeUnreachable(plugins: readonly UnreachablePlugin[]): string {
  return plugins.map((p) => `kms ${p.apiVersion} provider "${p.name}" (${p.endpoint}): ${p.reason}`).join('; ');
}

export interface EncryptionContext {
  readonly config: EncryptionConfiguration;
  /** sha256:<hex> of the configuration file's bytes. */
  readonly configHash: string;
  readonly built: BuiltTransformers;
  readonly policies: PolicyResolver;
  /** Problems talking to kms v2 plugins (read-only commands go on without them). */
  readonly warnings: readonly string[];
  /** KMS plugins that failed the up-front probe; every call to them now fails at once. */
  readonly unreachable: readonly UnreachablePlugin[];
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
  const dialled: Dialled[] = [];
  const deps = options.deps ?? createKmsDialer(dialled);
  const built = buildTransformers(config, {
    ...deps,
    // Disaster recovery and scans must read even when a plugin's Status fails; writes never do.
    kmsV2Options: { ...deps.kmsV2Options, allowReadWithoutStatus: options.mode === 'read' },
  });
  const warnings: string[] = [];
  const unreachable: UnreachablePlugin[] = [];
  try {
    // One probe per plugin connection, all at once: an unreachable plugin costs one timeout in total.
    const probes = await Promise.all(
      dialled.map(async (d) => {
        try {
          await d.probe();
          return undefined;
        } catch (err) {
          return err instanceof Error ? err : new Error(String(err));
        }
      }),
    );
    built.kmsProviders.forEach((handle, i) => {
      const failed = probes[i];
      if (failed === undefined) return;
      dialled[i]!.down = new AtrestError(
        'ERR_UNHEALTHY',
        `kms plugin "${handle.config.name}" (${handle.config.endpoint}) is unreachable: ${failed.message}`,
        { cause: failed },
      );
      unreachable.push({
        name: handle.config.name,
        apiVersion: handle.config.apiVersion === 'v1' ? 'v1' : 'v2',
        endpoint: handle.config.endpoint,
        reason: failed.message,
      });
    });
    if (unreachable.length > 0 && options.mode === 'write') {
      throw new AtrestError(
        'ERR_UNHEALTHY',
        `cannot rewrite: ${describeUnreachable(unreachable)}. Start the plugin or fix the endpoint in ${options.configPath}, then rerun`,
      );
    }
    for (const handle of built.kmsProviders) {
      if (handle.config.apiVersion !== 'v2' || options.offline === true) continue;
      if (unreachable.some((u) => u.name === handle.config.name)) continue;
      const health = await (handle.transformer as KmsV2Transformer).refreshStatus();
      if (!health.ok) {
        const msg = `kms v2 provider "${handle.config.name}" (${handle.config.endpoint}): ${health.error?.message ?? 'Status failed'}`;
        if (options.mode === 'write') throw new AtrestError('ERR_UNHEALTHY', `cannot write: ${msg}`, { cause: health.error });
        warnings.push(`${msg}; it answers, but its current key_id is unknown, so whether its values are current is unknown`);
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
  return { config, configHash, built, policies, warnings, unreachable, close: () => built.close() };
}
