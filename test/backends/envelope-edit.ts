// Test helper: rewrites the key id inside a remote-backend envelope (envelope.ts), keeping every
// other byte, to build a ciphertext that names a key the key manager does not have.

export function replaceEnvelopeKeyID(ciphertext: Buffer, keyID: string): Buffer {
  const idLen = ciphertext[5]!;
  const id = Buffer.from(keyID, 'utf8');
  return Buffer.concat([
    ciphertext.subarray(0, 5),
    Buffer.from([id.length]),
    id,
    ciphertext.subarray(6 + idLen),
  ]);
}
