// Break-glass reading: KMS v1 and v2 services, in the shape the kms transformers call, that open the
// recovery seals with the offline recovery private key instead of asking any plugin or key manager.
// `atrest decrypt --recovery-key` builds its transformers with these; nothing can be encrypted.

import { AtrestError, NotSupportedError } from '../errors.js';
import type { BuildDeps } from '../config/build.js';
import type { KmsV1Service, KmsV2Service } from '../transformers/kms-services.js';
import { RECOVERY_ANNOTATION, looksLikeContainer, parseContainer } from './container.js';
import { V1_KEY_ID, openSeal, sealContext, type RecoveryPrivateKey } from './seal.js';

function noSeal(what: string): AtrestError {
  return new AtrestError(
    'ERR_RECOVERY_NO_SEAL',
    `${what} carries no recovery seal (written before "atrest serve --recovery-public-key" was ` +
      'enabled, or by another plugin): only the key manager can decrypt it; "atrest rewrite" ' +
      'while the key manager is available adds seals',
  );
}

export function createRecoveryV1Service(keys: readonly RecoveryPrivateKey[]): KmsV1Service {
  return {
    encrypt: () => Promise.reject(new NotSupportedError('recovery mode reads only')),
    decrypt: async (cipher) => {
      if (!looksLikeContainer(cipher)) throw noSeal('this kms v1 value');
      const { inner, seal } = parseContainer(cipher);
      return openSeal(keys, seal, sealContext(V1_KEY_ID, inner));
    },
  };
}

export function createRecoveryV2Service(keys: readonly RecoveryPrivateKey[]): KmsV2Service {
  return {
    status: () => Promise.reject(new NotSupportedError('recovery mode: no KMS plugin is asked')),
    encrypt: () => Promise.reject(new NotSupportedError('recovery mode reads only')),
    decrypt: async (request) => {
      const sealed = request.annotations[RECOVERY_ANNOTATION];
      if (sealed === undefined) throw noSeal(`this kms v2 value (key_id ${request.keyID})`);
      return openSeal(keys, sealed, sealContext(request.keyID, request.ciphertext));
    },
  };
}

/** Dial functions for buildTransformers that never dial: every kms provider reads through the seals. */
export function createRecoveryDialer(keys: readonly RecoveryPrivateKey[]): BuildDeps {
  return {
    dialKmsV1: () => createRecoveryV1Service(keys),
    dialKmsV2: () => createRecoveryV2Service(keys),
  };
}
