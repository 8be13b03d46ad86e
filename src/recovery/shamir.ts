// Shamir's secret sharing over GF(2^8), byte by byte: any K of N shares give the secret back, K − 1
// give nothing. Field: the AES field, polynomial x^8 + x^4 + x^3 + x + 1 (0x11b), as FIPS-197 §4.2
// defines multiplication (so its worked examples are our test vectors). Pure: randomness injected.

const FIELD_POLY = 0x11b;
/** Share x-coordinates are 1..255 (x = 0 would be the secret itself). */
export const MAX_SHARES = 255;

const EXP = new Uint8Array(512);
const LOG = new Uint8Array(256);
{
  // 0x03 generates the multiplicative group of this field.
  let x = 1;
  for (let i = 0; i < 255; i++) {
    EXP[i] = x;
    LOG[x] = i;
    let times3 = (x << 1) ^ x;
    if (times3 & 0x100) times3 ^= FIELD_POLY;
    x = times3;
  }
  for (let i = 255; i < 512; i++) EXP[i] = EXP[i - 255]!;
}

export function gfMul(a: number, b: number): number {
  if (a === 0 || b === 0) return 0;
  return EXP[LOG[a]! + LOG[b]!]!;
}

export function gfInv(a: number): number {
  if (a === 0) throw new RangeError('0 has no inverse');
  return EXP[255 - LOG[a]!]!;
}

export interface Share {
  /** 1..255 */
  readonly x: number;
  readonly y: Buffer;
}

/** Evaluates the polynomial coefficients[0] + coefficients[1]·x + … at x (Horner). */
function evaluate(coefficients: Uint8Array, x: number): number {
  let y = 0;
  for (let i = coefficients.length - 1; i >= 0; i--) y = gfMul(y, x) ^ coefficients[i]!;
  return y;
}

/** Splits `secret` into `n` shares, any `k` of which recover it. */
export function splitSecret(
  secret: Uint8Array,
  k: number,
  n: number,
  random: (n: number) => Uint8Array,
): Share[] {
  if (!Number.isInteger(k) || !Number.isInteger(n) || k < 2 || n < k || n > MAX_SHARES) {
    throw new RangeError(`need 2 <= threshold <= shares <= ${MAX_SHARES} (got ${k} of ${n})`);
  }
  const shares = Array.from({ length: n }, (_, i) => ({ x: i + 1, y: Buffer.alloc(secret.length) }));
  const coefficients = new Uint8Array(k);
  for (let b = 0; b < secret.length; b++) {
    coefficients[0] = secret[b]!;
    coefficients.set(random(k - 1).subarray(0, k - 1), 1);
    for (const s of shares) s.y[b] = evaluate(coefficients, s.x);
  }
  coefficients.fill(0);
  return shares;
}

/** Lagrange interpolation at x = 0. Gives a wrong value (not an error) for too few shares. */
export function combineShares(shares: readonly Share[]): Buffer {
  if (shares.length === 0) throw new RangeError('no shares');
  const length = shares[0]!.y.length;
  const xs = new Set<number>();
  for (const s of shares) {
    if (s.x < 1 || s.x > MAX_SHARES || !Number.isInteger(s.x)) throw new RangeError(`share x=${s.x} is out of range`);
    if (xs.has(s.x)) throw new RangeError(`share x=${s.x} is given twice`);
    if (s.y.length !== length) throw new RangeError('shares have different lengths');
    xs.add(s.x);
  }
  const secret = Buffer.alloc(length);
  for (const [i, si] of shares.entries()) {
    // basis_i(0) = Π_{j≠i} x_j / (x_j − x_i); subtraction is XOR in GF(2^8).
    let basis = 1;
    for (const [j, sj] of shares.entries()) {
      if (i !== j) basis = gfMul(basis, gfMul(sj.x, gfInv(sj.x ^ si.x)));
    }
    for (let b = 0; b < length; b++) secret[b] = secret[b]! ^ gfMul(si.y[b]!, basis);
  }
  return secret;
}
