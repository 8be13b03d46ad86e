// Builds a remote backend from its parsed configuration section (config.ts). The CLI passes the
// environment and file reading in; nothing here reads process.env or argv.

import type { Logger } from '../logger.js';
import { createAwsKmsService } from './aws-kms.js';
import { resolveSecret, type BackendSection } from './config.js';
import { importWithOptional } from './optional-module.js';
import { createRemoteBackend, type KekService, type RemoteKeyBackend } from './remote.js';

export interface CreateBackendDeps {
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly readFile: (path: string) => Promise<string>;
  readonly logger: Logger;
}

export async function createConfiguredBackend(
  section: BackendSection,
  deps: CreateBackendDeps,
): Promise<RemoteKeyBackend> {
  let service: KekService;
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
