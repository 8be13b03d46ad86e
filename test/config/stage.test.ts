// planStage: when API servers can switch from one EncryptionConfiguration to another one at a time,
// and the read/write/final phases upstream prescribes when they cannot. Every plan is checked the same
// way: each phase is a safe direct switch from the one before, and the last one is the target.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { stringify } from 'yaml';
import { AtrestError, ConfigInvalidError } from '../../src/errors.js';
import { parseEncryptionConfiguration } from '../../src/config/parse.js';
import {
  configDocument,
  planStage,
  readUnits,
  unitLabel,
  type StagePlan,
} from '../../src/config/stage.js';
import type { EncryptionConfiguration } from '../../src/config/types.js';

const K1 = Buffer.alloc(32, 1).toString('base64');
const K2 = Buffer.alloc(32, 2).toString('base64');
const K2_OTHER = Buffer.alloc(32, 9).toString('base64');

type P = string | { aescbc: [string, string][] } | { kms: string; endpoint?: string };

/** A config for `secrets` from a provider list: 'identity', {aescbc: [[name, secret]]}, {kms: name}. */
function cfg(...providers: P[]): EncryptionConfiguration {
  const doc = {
    apiVersion: 'apiserver.config.k8s.io/v1',
    kind: 'EncryptionConfiguration',
    resources: [
      {
        resources: ['secrets'],
        providers: providers.map((p) => {
          if (p === 'identity') return { identity: {} };
          if (typeof p !== 'string' && 'aescbc' in p)
            return { aescbc: { keys: p.aescbc.map(([name, secret]) => ({ name, secret })) } };
          const k = p as { kms: string; endpoint?: string };
          return {
            kms: {
              apiVersion: 'v2',
              name: k.kms,
              endpoint: k.endpoint ?? 'unix:///var/run/atrest/kms.sock',
              timeout: '3s',
            },
          };
        }),
      },
    ],
  };
  return parseEncryptionConfiguration(JSON.stringify(doc), 'test');
}

const labels = (c: EncryptionConfiguration): string[] =>
  readUnits(c.resources[0]!.providers).map(unitLabel);

/** Every phase must be a safe direct switch from the previous one and the plan must end at `to`. */
function assertChain(
  from: EncryptionConfiguration,
  to: EncryptionConfiguration,
  plan: StagePlan,
): void {
  let previous = from;
  for (const [i, phase] of plan.phases.entries()) {
    const step = planStage(previous, phase.config, `phase ${i}`, `phase ${i + 1}`);
    assert.ok(step.directSafe, `phase ${i} -> ${i + 1}: ${step.problems.join('; ')}`);
    // Each phase is a valid configuration once written out (no placeholder, nothing missing).
    const text = stringify(configDocument(phase.config, { showSecrets: true }), { version: '1.1' });
    parseEncryptionConfiguration(text, `phase ${i + 1}`);
    previous = phase.config;
  }
  assert.deepEqual(labels(previous), labels(to));
}

test('rotating an aescbc key needs three phases: read key2, write key2, drop key1', () => {
  const from = cfg({ aescbc: [['key1', K1]] }, 'identity');
  const to = cfg({ aescbc: [['key2', K2]] }, 'identity');
  const plan = planStage(from, to, 'old.yaml', 'new.yaml');
  assert.equal(plan.directSafe, false);
  assert.equal(plan.problems.length, 2);
  assert.match(
    plan.problems[0]!,
    /servers still on old.yaml could not read .* aescbc\/key2 \(prefix k8s:enc:aescbc:v1:key2:\), which old.yaml does not list, so their reads fail with "no matching prefix found"/,
  );
  assert.match(
    plan.problems[1]!,
    /servers already on new.yaml could not read what servers still on old.yaml write with aescbc\/key1/,
  );
  assert.deepEqual(
    plan.phases.map((p) => [p.name, labels(p.config)]),
    [
      ['read', ['aescbc/key1', 'aescbc/key2', 'identity (plaintext)']],
      ['write', ['aescbc/key2', 'aescbc/key1', 'identity (plaintext)']],
      ['final', ['aescbc/key2', 'identity (plaintext)']],
    ],
  );
  assert.match(plan.phases[2]!.summary[0]!, /no longer reads aescbc\/key1/);
  assertChain(from, to, plan);
});

test('aescbc -> kms v2: kms is added as a reader first, then writes, then aescbc goes', () => {
  const from = cfg({ aescbc: [['key2', K2]] }, 'identity');
  const to = cfg({ kms: 'atrest' }, 'identity');
  const plan = planStage(from, to, 'old.yaml', 'new.yaml');
  assert.equal(plan.directSafe, false);
  assert.deepEqual(
    plan.phases.map((p) => [p.name, labels(p.config)]),
    [
      ['read', ['aescbc/key2', 'kms-v2/atrest', 'identity (plaintext)']],
      ['write', ['kms-v2/atrest', 'aescbc/key2', 'identity (plaintext)']],
      ['final', ['kms-v2/atrest', 'identity (plaintext)']],
    ],
  );
  assertChain(from, to, plan);
});

test('a target that keeps the old provider for reading needs only the read and write phases', () => {
  const from = cfg({ aescbc: [['key2', K2]] }, 'identity');
  const to = cfg({ kms: 'atrest' }, { aescbc: [['key2', K2]] }, 'identity');
  const plan = planStage(from, to, 'old.yaml', 'new.yaml');
  assert.deepEqual(
    plan.phases.map((p) => p.name),
    ['read', 'write'],
  );
  assert.deepEqual(plan.warnings, []);
  assertChain(from, to, plan);
});

test('enabling encryption: identity first -> aescbc first goes through a read phase', () => {
  const from = cfg('identity');
  const to = cfg({ aescbc: [['key1', K1]] }, 'identity');
  const plan = planStage(from, to, 'old.yaml', 'new.yaml');
  assert.equal(plan.directSafe, false);
  assert.deepEqual(
    plan.phases.map((p) => [p.name, labels(p.config)]),
    [
      ['read', ['identity (plaintext)', 'aescbc/key1']],
      ['write', ['aescbc/key1', 'identity (plaintext)']],
    ],
  );
  assertChain(from, to, plan);
});

test('a switch between providers both configs already list is safe directly', () => {
  const from = cfg(
    {
      aescbc: [
        ['key1', K1],
        ['key2', K2],
      ],
    },
    'identity',
  );
  const to = cfg(
    {
      aescbc: [
        ['key2', K2],
        ['key1', K1],
      ],
    },
    'identity',
  );
  const plan = planStage(from, to, 'old.yaml', 'new.yaml');
  assert.equal(plan.directSafe, true);
  assert.deepEqual(plan.problems, []);
  assert.equal(plan.phases.length, 1);
  assert.equal(plan.phases[0]!.config, to);
  const disable = planStage(
    cfg({ kms: 'atrest' }, 'identity'),
    cfg('identity', { kms: 'atrest' }),
    'a',
    'b',
  );
  assert.equal(disable.directSafe, true);
});

test('dropping a reader is safe for the servers but warned about: only after a rewrite converged', () => {
  const from = cfg(
    {
      aescbc: [
        ['key2', K2],
        ['key1', K1],
      ],
    },
    'identity',
  );
  const to = cfg({ aescbc: [['key2', K2]] }, 'identity');
  const plan = planStage(from, to, 'old.yaml', 'new.yaml');
  assert.equal(plan.directSafe, true);
  assert.equal(plan.warnings.length, 1);
  assert.match(
    plan.warnings[0]!,
    /new.yaml no longer reads aescbc\/key1 \(prefix k8s:enc:aescbc:v1:key1:\): deploy it only after "atrest rewrite" converged/,
  );
});

test('a kms provider with another endpoint on the same name is the same reader (the socket is node-local)', () => {
  const from = cfg({ kms: 'atrest', endpoint: 'unix:///a/kms.sock' }, 'identity');
  const to = cfg({ kms: 'atrest', endpoint: 'unix:///b/kms.sock' }, 'identity');
  assert.equal(planStage(from, to, 'a', 'b').directSafe, true);
});

test('a key name reused with another secret cannot be staged: a config error naming the key, never the secret', () => {
  const from = cfg({ aescbc: [['key2', K2]] }, 'identity');
  const to = cfg({ aescbc: [['key2', K2_OTHER]] }, 'identity');
  assert.throws(
    () => planStage(from, to, 'old.yaml', 'new.yaml'),
    (err: unknown) =>
      err instanceof ConfigInvalidError &&
      /new.yaml gives key key2 another secret than old.yaml \(REDACTED\)/.test(err.message) &&
      !err.message.includes(K2) &&
      !err.message.includes(K2_OTHER),
  );
});

test('configs whose resources lists differ are refused with both lists named', () => {
  const from = cfg({ aescbc: [['key1', K1]] });
  const to = parseEncryptionConfiguration(
    JSON.stringify({
      apiVersion: 'apiserver.config.k8s.io/v1',
      kind: 'EncryptionConfiguration',
      resources: [{ resources: ['secrets', 'configmaps'], providers: [{ identity: {} }] }],
    }),
    't',
  );
  assert.throws(
    () => planStage(from, to, 'old.yaml', 'new.yaml'),
    (err: unknown) =>
      err instanceof AtrestError &&
      err.code === 'ERR_NOT_SUPPORTED' &&
      err.message.includes('[secrets] and new.yaml lists [secrets, configmaps]'),
  );
});

test('printed configurations show REDACTED instead of secrets unless asked', () => {
  const c = cfg({ aescbc: [['key1', K1]] }, { kms: 'atrest' }, 'identity');
  const hidden = JSON.stringify(configDocument(c, { showSecrets: false }));
  assert.ok(!hidden.includes(K1) && hidden.includes('REDACTED'));
  assert.ok(JSON.stringify(configDocument(c, { showSecrets: true })).includes(K1));
});
