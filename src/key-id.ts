// How kube-apiserver names a KMS key id wherever the id itself must not appear (its metrics labels,
// logs and messages): "sha256:" + hex SHA-256 of the id, or empty for an empty id. One definition for
// the kms v2 format's messages, the plugin's metrics and the check of the API servers' metrics.

import { createHash } from 'node:crypto';

export function keyIDHash(keyID: string): string {
  if (keyID.length === 0) return '';
  return 'sha256:' + createHash('sha256').update(keyID, 'utf8').digest('hex');
}
