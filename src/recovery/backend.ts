// The recovery layer of `atrest serve`: a KeyBackend around the configured one. With a recovery
// public key, every wrap also seals the DEK (kms v1) or seed (kms v2) to it (container.ts says where
// the seal travels). Without one it only reads: values sealed earlier keep decrypting after the
// feature is switched off. Unwrapping never needs the recovery key: the backend's own KEK does that.

import type { KeyBackend, UnwrapRequest, WrapRequest, Wrapped } from '../backends/backend.js';
import {
  RECOVERY_ANNOTATION,
  encodeContainer,
  looksLikeContainer,
  parseContainer,
  withoutRecoveryAnnotation,
} from './container.js';
import { V1_KEY_ID, seal, sealContext, type RecoveryPublicKey } from './seal.js';

export interface RecoveryLayerOptions {
  /** Seal every wrap to this key; absent: read-only layer. */
  readonly publicKey?: RecoveryPublicKey;
}

/**
 * The request passed on to the inner backend: the outer one's fields with the container and the
 * recovery annotation taken off. A class so the `signal` getter (reading the outer request's, itself
 * lazy) is one function on the prototype, not a closure per call.
 */
class InnerUnwrapRequest implements UnwrapRequest {
  readonly ciphertext: Uint8Array;
  readonly annotations: Readonly<Record<string, Uint8Array>> | undefined;
  readonly #outer: UnwrapRequest;
  constructor(
    ciphertext: Uint8Array,
    annotations: Readonly<Record<string, Uint8Array>> | undefined,
    outer: UnwrapRequest,
  ) {
    this.ciphertext = ciphertext;
    this.annotations = annotations;
    this.#outer = outer;
  }
  get keyID(): string | undefined {
    return this.#outer.keyID;
  }
  get uid(): string | undefined {
    return this.#outer.uid;
  }
  get signal(): AbortSignal | undefined {
    return this.#outer.signal;
  }
}

export function withRecoveryLayer(inner: KeyBackend, options: RecoveryLayerOptions): KeyBackend {
  const { publicKey } = options;

  // Without a recovery key the inner backend's promise is handed back as is (no async layer per call).
  function wrap(request: WrapRequest): Promise<Wrapped> {
    return publicKey === undefined ? inner.wrap(request) : sealingWrap(request, publicKey);
  }

  async function sealingWrap(request: WrapRequest, publicKey: RecoveryPublicKey): Promise<Wrapped> {
    const wrapped = await inner.wrap(request);
    if (request.annotationsAllowed === true) {
      const sealed = seal(publicKey, request.plaintext, sealContext(wrapped.keyID, wrapped.ciphertext));
      return {
        ...wrapped,
        annotations: { ...(wrapped.annotations ?? {}), [RECOVERY_ANNOTATION]: sealed },
      };
    }
    const sealed = seal(publicKey, request.plaintext, sealContext(V1_KEY_ID, wrapped.ciphertext));
    return { ...wrapped, ciphertext: encodeContainer(wrapped.ciphertext, sealed) };
  }

  function unwrap(request: UnwrapRequest): Promise<Buffer> {
    const annotations = withoutRecoveryAnnotation(request.annotations);
    const ciphertext = looksLikeContainer(request.ciphertext)
      ? parseContainer(request.ciphertext).inner
      : request.ciphertext;
    // Not `...request`: spreading reads the lazy `signal` getter, which creates an AbortController
    // for every call (several microseconds each) that the keyring never looks at.
    return inner.unwrap(new InnerUnwrapRequest(ciphertext, annotations, request));
  }

  // Everything else is the inner backend's own: the optional parts (health, keySet) only where it has them.
  return {
    name: inner.name,
    currentKeyID: () => inner.currentKeyID(),
    wrap,
    unwrap,
    reload: () => inner.reload(),
    close: () => inner.close(),
    ...(inner.health === undefined ? {} : { health: inner.health.bind(inner) }),
    ...(inner.keySet === undefined ? {} : { keySet: inner.keySet.bind(inner) }),
  };
}
