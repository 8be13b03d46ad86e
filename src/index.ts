// The atrest library: the storage formats kube-apiserver writes, EncryptionConfiguration handling,
// and a KMS client (v1beta1 and v2) for any plugin. The plugin and the tools are the `atrest` command.

export * from './errors.js';
export * from './transformers/index.js';
export * from './config/index.js';
export * from './kms-client/index.js';
