// The public surface of EncryptionConfiguration handling: parse/load, resolve, build.

export { parseEncryptionConfiguration } from './parse.js';
export { loadEncryptionConfiguration } from './load.js';
export { validateEncryptionConfiguration, decodeStdBase64, AES_KEY_SIZES, SECRETBOX_KEY_SIZES } from './validate.js';
export {
  ETCD_PATH_RESOURCES,
  formatGroupResource,
  groupResourceForEtcdKey,
  normalizeEtcdPrefix,
  parseGroupResource,
  resolveResource,
} from './resolve.js';
export type { GroupResource, ResolvedResource } from './resolve.js';
export { buildTransformers } from './build.js';
export type { BuildDeps, BuiltTransformers, Closable, KmsProviderHandle, WriteProvider } from './build.js';
export { parseGoDuration } from './go-syntax.js';
// Every name in types.ts (the configuration's types, kinds and defaults) is public.
export * from './types.js';
