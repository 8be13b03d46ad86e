// The remote backends' retry policy (src/backends/remote.ts over src/retry.ts) and the backend configuration file (src/backends/config.ts).

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { BackendError, ConfigInvalidError } from '../../src/errors.js';
import { withRetry as runWithRetry } from '../../src/retry.js';
import { remoteRetryOptions, type RetryDeps, type RetryPolicy } from '../../src/backends/remote.js';
import { parseBackendConfig, parseDuration, resolveSecret } from '../../src/backends/config.js';

function fakeClock(): RetryDeps & { slept: number[]; advance(ms: number): void } {
  let t = 0;
  const slept: number[] = [];
  return {
    slept,
    advance: (ms) => void (t += ms),
    now: () => t,
    sleep: async (ms) => {
      slept.push(ms);
      t += ms;
    },
    random: () => 0.999,
  };
}

const policy: RetryPolicy = { attempts: 4, baseDelayMs: 100, maxDelayMs: 300, budgetMs: 1000 };

/** The retry loop as the remote backends run it. */
function withRetry<T>(op: (attempt: number) => Promise<T>, p: RetryPolicy, clock: RetryDeps): Promise<T> {
  return runWithRetry(op, remoteRetryOptions(p, clock));
}

describe('retry', () => {
  it('retries throttled and unavailable failures with growing, capped, jittered delays', async () => {
    const clock = fakeClock();
    let n = 0;
    const out = await withRetry(
      async () => {
        n++;
        if (n < 4) throw new BackendError('x', n % 2 === 0 ? 'throttled' : 'unavailable', 'busy');
        return 'ok';
      },
      policy,
      clock,
    );
    assert.equal(out, 'ok');
    assert.deepEqual(clock.slept, [99, 199, 299]);
  });

  it('never retries user-induced, corruption or other failures', async () => {
    for (const kind of ['user-induced', 'corruption', 'other'] as const) {
      const clock = fakeClock();
      let n = 0;
      await assert.rejects(
        withRetry(
          async () => {
            n++;
            throw new BackendError('x', kind, 'no');
          },
          policy,
          clock,
        ),
        BackendError,
      );
      assert.equal(n, 1, kind);
    }
  });

  it('stops when the next delay would pass the time budget', async () => {
    const clock = fakeClock();
    let n = 0;
    await assert.rejects(
      withRetry(
        async () => {
          n++;
          clock.advance(400); // each call takes 400 ms
          throw new BackendError('x', 'unavailable', 'down');
        },
        { ...policy, attempts: 10 },
        clock,
      ),
    );
    // t=0 call 1 fails at 400; 400+99 < 1000, so it backs off 99 and retries; call 2 fails at 899;
    // 899+199 >= 1000: no third attempt.
    assert.equal(n, 2, 'one retry, then the budget is spent');
    assert.deepEqual(clock.slept, [99]);
  });
});

describe('backend configuration', () => {
  it('parses a pkcs11 section with a PIN file and an aws-kms section with defaults', () => {
    const text = [
      'pkcs11:',
      '  module: /usr/lib/softhsm/libsofthsm2.so',
      '  tokenLabel: atrest',
      '  keyLabel: atrest-kek',
      '  pinFile: /etc/atrest/pin',
      '  sessions: 2',
      'aws-kms:',
      '  keyId: alias/atrest',
      '  region: eu-west-1',
      '  encryptionContext: { cluster: prod }',
      '  localKEK: { maxUses: 5000, maxAge: 30m }',
      '  refreshInterval: 10s',
    ].join('\n');
    const p = parseBackendConfig(text, 'f.yaml', 'pkcs11');
    assert.deepEqual(p, {
      backend: 'pkcs11',
      module: '/usr/lib/softhsm/libsofthsm2.so',
      tokenLabel: 'atrest',
      keyLabel: 'atrest-kek',
      pin: { file: '/etc/atrest/pin' },
      sessions: 2,
      localKEK: false,
    });
    const a = parseBackendConfig(text, 'f.yaml', 'aws-kms');
    assert.deepEqual(a, {
      backend: 'aws-kms',
      keyId: 'alias/atrest',
      region: 'eu-west-1',
      encryptionContext: { cluster: 'prod' },
      localKEK: { maxUses: 5000, maxAgeMs: 1_800_000 },
      refreshIntervalMs: 10_000,
    });
  });

  it('reports every problem with its path, and never echoes an inline secret', () => {
    const text = [
      'pkcs11:',
      '  module: 7',
      '  pin: "123456"',
      '  sessions: -1',
      '  colour: blue',
      'vault: {}',
    ].join('\n');
    assert.throws(
      () => parseBackendConfig(text, 'f.yaml', 'pkcs11'),
      (err: unknown) => {
        assert.ok(err instanceof ConfigInvalidError);
        const paths = err.problems.map((p) => p.path).sort();
        assert.deepEqual(paths, [
          'pkcs11.colour',
          'pkcs11.keyLabel',
          'pkcs11.module',
          'pkcs11.pin',
          'pkcs11.sessions',
          'pkcs11.tokenLabel',
          'vault',
        ]);
        assert.ok(!err.message.includes('123456'));
        assert.match(err.message, /REDACTED/);
        return true;
      },
    );
  });

  it('refuses a file without the selected section', () => {
    assert.throws(
      () => parseBackendConfig('aws-kms: {keyId: k}\n', 'f.yaml', 'pkcs11'),
      /no "pkcs11" section/,
    );
  });

  it('reads durations and secrets from files and the environment', async () => {
    assert.equal(parseDuration('1.5s'), 1500);
    assert.equal(parseDuration('2h'), 7_200_000);
    assert.equal(parseDuration('10'), undefined);
    const io = { env: { PIN: 'from-env' }, readFile: async () => 'from-file\n' };
    assert.equal(await resolveSecret({ file: '/x' }, io), 'from-file');
    assert.equal(await resolveSecret({ env: 'PIN' }, io), 'from-env');
    await assert.rejects(resolveSecret({ env: 'NOPE' }, io), /\$NOPE: is not set/);
  });
});
