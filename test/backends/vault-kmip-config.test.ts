// The vault-transit and kmip sections of the backend configuration file (src/backends/config.ts):
// what a valid section becomes, every problem reported at once with its path, secrets refused inline
// and shown as REDACTED, and unreadable TLS files named by their field when the backend is built.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigInvalidError } from '../../src/errors.js';
import { parseBackendConfig } from '../../src/backends/config.js';
import { createConfiguredBackend } from '../../src/backends/create.js';
import { silentLogger } from '../../src/logger.js';

function problems(text: string, backend: string): string[] {
  try {
    parseBackendConfig(text, 'backends.yaml', backend);
  } catch (err) {
    assert.ok(err instanceof ConfigInvalidError, String(err));
    return err.problems.map((p) => `${p.path}: ${p.message}`);
  }
  assert.fail('expected the configuration to be refused');
}

describe('vault-transit configuration', () => {
  it('reads a token-auth section with TLS files and defaults', () => {
    const s = parseBackendConfig(
      [
        'vault-transit:',
        '  address: https://bao.example:8200',
        '  keyName: atrest',
        '  namespace: team-a',
        '  caFile: /etc/atrest/bao-ca.pem',
        '  auth: { method: token, tokenFile: /etc/atrest/bao-token }',
        '  refreshInterval: 10s',
      ].join('\n'),
      'backends.yaml',
      'vault-transit',
    );
    assert.deepEqual(s, {
      backend: 'vault-transit',
      address: 'https://bao.example:8200',
      mount: 'transit',
      keyName: 'atrest',
      namespace: 'team-a',
      caFile: '/etc/atrest/bao-ca.pem',
      auth: { method: 'token', token: { file: '/etc/atrest/bao-token' } },
      localKEK: {},
      refreshIntervalMs: 10_000,
    });
  });

  it('reads AppRole with ids from a file and the environment, and cert auth', () => {
    const approle = parseBackendConfig(
      'vault-transit:\n  address: http://127.0.0.1:8200\n  keyName: k\n  auth:\n    method: approle\n    roleIdFile: /r\n    secretIdEnv: BAO_SECRET_ID\n',
      'f',
      'vault-transit',
    );
    assert.deepEqual((approle as { auth: unknown }).auth, {
      method: 'approle',
      mount: 'approle',
      roleId: { file: '/r' },
      secretId: { env: 'BAO_SECRET_ID' },
    });
    const cert = parseBackendConfig(
      'vault-transit:\n  address: https://b:8200\n  keyName: k\n  clientCertFile: /c\n  clientKeyFile: /k\n  auth: { method: cert, role: atrest }\n',
      'f',
      'vault-transit',
    );
    assert.deepEqual((cert as { auth: unknown }).auth, {
      method: 'cert',
      mount: 'cert',
      role: 'atrest',
    });
  });

  it('reports every problem with its path and never echoes an inline secret', () => {
    const text = [
      'vault-transit:',
      '  address: bao.example:8200',
      '  keyName: ""',
      '  clientCertFile: /c',
      '  auth:',
      '    method: approle',
      '    secretId: s3cr3t-value',
      '    colour: blue',
      '  timeout: soon',
      '  extra: 1',
    ].join('\n');
    const got = problems(text, 'vault-transit');
    assert.deepEqual(got.sort(), [
      'vault-transit.address: must be an http(s) URL with no path, such as https://vault.example:8200',
      'vault-transit.auth.colour: unknown field',
      'vault-transit.auth.roleIdFile: roleIdFile or roleIdEnv is required',
      'vault-transit.auth.secretId: REDACTED: do not write the secret id in the configuration; use secretIdFile or secretIdEnv',
      'vault-transit.clientKeyFile: clientCertFile and clientKeyFile go together',
      'vault-transit.extra: unknown field',
      'vault-transit.keyName: must be a non-empty string',
      'vault-transit.timeout: must be a duration such as 500ms, 30s, 5m or 1h',
    ]);
    assert.ok(!got.join('\n').includes('s3cr3t-value'));
  });

  it('refuses an inline token as REDACTED and a missing auth section', () => {
    assert.deepEqual(
      problems(
        'vault-transit:\n  address: https://b\n  keyName: k\n  auth: { method: token, token: hvs.abc }\n',
        'vault-transit',
      ),
      [
        'vault-transit.auth.token: REDACTED: do not write the token in the configuration; use tokenFile or tokenEnv',
      ],
    );
    assert.deepEqual(
      problems('vault-transit:\n  address: https://b\n  keyName: k\n', 'vault-transit'),
      ['vault-transit.auth: is required: {method: token | approle | cert, ...}'],
    );
    assert.deepEqual(
      problems(
        'vault-transit:\n  address: https://b\n  keyName: k\n  auth: { method: cert }\n',
        'vault-transit',
      ),
      [
        'vault-transit.auth.method: cert auth needs clientCertFile and clientKeyFile in the section',
      ],
    );
  });
});

describe('kmip configuration', () => {
  it('reads a section', () => {
    const s = parseBackendConfig(
      'kmip:\n  address: kmip.example:5696\n  keyName: atrest-kek\n  caFile: /ca\n  clientCertFile: /c\n  clientKeyFile: /k\n  localKEK: { maxUses: 1000 }\n',
      'f',
      'kmip',
    );
    assert.deepEqual(s, {
      backend: 'kmip',
      address: 'kmip.example:5696',
      keyName: 'atrest-kek',
      caFile: '/ca',
      clientCertFile: '/c',
      clientKeyFile: '/k',
      localKEK: { maxUses: 1000 },
    });
  });

  it('reports every problem with its path', () => {
    assert.deepEqual(
      problems('kmip:\n  address: https://kmip.example\n  colour: red\n', 'kmip').sort(),
      [
        'kmip.address: must be host:port, such as kmip.example:5696',
        'kmip.clientCertFile: is required: KMIP servers authenticate clients by certificate',
        'kmip.colour: unknown field',
        'kmip.keyName: is required',
      ],
    );
  });

  it('names the field of an unreadable TLS file when the backend is built', async () => {
    const section = parseBackendConfig(
      'kmip:\n  address: 127.0.0.1:5696\n  keyName: k\n  clientCertFile: /nonexistent/c.pem\n  clientKeyFile: /nonexistent/k.pem\n',
      'f',
      'kmip',
    );
    await assert.rejects(
      createConfiguredBackend(section, {
        env: {},
        readFile: async (p) => {
          throw Object.assign(new Error(`no ${p}`), { code: 'ENOENT' });
        },
        logger: silentLogger,
      }),
      (err: unknown) => {
        assert.ok(err instanceof ConfigInvalidError);
        assert.match(
          err.message,
          /kmip\.clientCertFile: cannot read \/nonexistent\/c\.pem: ENOENT/,
        );
        return true;
      },
    );
  });
});
