// Builds a remote backend from its parsed configuration section (config.ts). The CLI passes the
// environment and file reading in; nothing here reads process.env or argv.

import type { Logger } from '../logger.js';
import { createAwsKmsService } from './aws-kms.js';
import { resolveSecret, type BackendSection, type SecretRef, type TlsFiles } from './config.js';
import { createKmipService } from './kmip/kmip.js';
import { importWithOptional } from './optional-module.js';
import { createRemoteBackend, type KekService, type RemoteKeyBackend } from './remote.js';
import { createVaultTransitService, type VaultAuth } from './vault-transit.js';
import { ConfigInvalidError } from '../errors.js';

export interface CreateBackendDeps {
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly readFile: (path: string) => Promise<string>;
  readonly logger: Logger;
}

/** Reads the PEM files a section names, at start, so a missing file stops the plugin with its path. */
async function readTls(
  tls: TlsFiles,
  deps: CreateBackendDeps,
  at: string,
): Promise<{ ca?: string; cert?: string; key?: string; serverName?: string }> {
  const read = async (field: keyof TlsFiles): Promise<string | undefined> => {
    const path = tls[field];
    if (path === undefined || field === 'serverName') return undefined;
    try {
      return await deps.readFile(path);
    } catch (err) {
      throw new ConfigInvalidError(at, [
        {
          path: `${at}.${field}`,
          message: `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`,
        },
      ]);
    }
  };
  const [ca, cert, key] = [
    await read('caFile'),
    await read('clientCertFile'),
    await read('clientKeyFile'),
  ];
  return {
    ...(ca !== undefined ? { ca } : {}),
    ...(cert !== undefined ? { cert } : {}),
    ...(key !== undefined ? { key } : {}),
    ...(tls.serverName !== undefined ? { serverName: tls.serverName } : {}),
  };
}

export async function createConfiguredBackend(
  section: BackendSection,
  deps: CreateBackendDeps,
): Promise<RemoteKeyBackend> {
  let service: KekService;
  const secret = (ref: SecretRef) => () => resolveSecret(ref, deps);
  switch (section.backend) {
    case 'pkcs11': {
      // pkcs11js is an optional (native) dependency: loaded only for this backend.
      const { createPkcs11Service } = await importWithOptional('pkcs11', 'pkcs11js', () =>
        import('./pkcs11.js'),
      );
      service = createPkcs11Service(
        {
          module: section.module,
          tokenLabel: section.tokenLabel,
          keyLabel: section.keyLabel,
          ...(section.sessions !== undefined ? { sessions: section.sessions } : {}),
        },
        { pin: () => resolveSecret(section.pin, deps) },
      );
      break;
    }
    case 'aws-kms':
      service = createAwsKmsService({
        keyId: section.keyId,
        ...(section.region !== undefined ? { region: section.region } : {}),
        ...(section.endpoint !== undefined ? { endpoint: section.endpoint } : {}),
        ...(section.encryptionContext !== undefined
          ? { encryptionContext: section.encryptionContext }
          : {}),
      });
      break;
    case 'vault-transit': {
      const a = section.auth;
      const auth: VaultAuth =
        a.method === 'token'
          ? { method: 'token', token: secret(a.token) }
          : a.method === 'approle'
            ? {
                method: 'approle',
                mount: a.mount,
                roleId: secret(a.roleId),
                secretId: secret(a.secretId),
              }
            : { method: 'cert', mount: a.mount, ...(a.role !== undefined ? { role: a.role } : {}) };
      service = createVaultTransitService({
        address: section.address,
        mount: section.mount,
        keyName: section.keyName,
        ...(section.namespace !== undefined ? { namespace: section.namespace } : {}),
        ...(await readTls(section, deps, 'vault-transit')),
        auth,
      });
      break;
    }
    case 'kmip': {
      const tls = await readTls(section, deps, 'kmip');
      const [host, port] = [
        section.address.slice(0, section.address.lastIndexOf(':')),
        Number(section.address.slice(section.address.lastIndexOf(':') + 1)),
      ];
      service = createKmipService({
        host,
        port,
        keyName: section.keyName,
        cert: tls.cert!,
        key: tls.key!,
        ...(tls.ca !== undefined ? { ca: tls.ca } : {}),
        ...(tls.serverName !== undefined ? { serverName: tls.serverName } : {}),
      });
      break;
    }
  }
  return createRemoteBackend(service, {
    localKEK: section.localKEK,
    logger: deps.logger,
    ...(section.refreshIntervalMs !== undefined
      ? { refreshIntervalMs: section.refreshIntervalMs }
      : {}),
    ...(section.callTimeoutMs !== undefined ? { callTimeoutMs: section.callTimeoutMs } : {}),
  });
}
