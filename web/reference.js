// The attention reference in plain JavaScript, accumulated in f64: the page checks the GPU
// against it, and the Deno test checks it against wgattn's Rust reference. It takes the same
// spec objects as `Wgattn.attention` (see pkg/wgattn.d.ts) and implements every option they
// have: layouts, GQA, causal alignments, kvLens, sliding windows, ALiBi, soft-capping, scale,
// f16 storage, and the masking rule (a logit ≤ −1e38 masks its key; a row with no visible key
// returns out 0 and lse −∞).

/** Logits at or below this mask their key (wgattn's MASKED_LOGIT). */
export const MASKED_LOGIT = -1.0e38;

/** f16 bits to a number. */
export function halfToFloat(h) {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** The f16 exponent of |x| (clamped to the subnormal range) and its spacing there. */
function halfSpacing(a) {
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e -= 1;
  if (2 ** (e + 1) <= a) e += 1;
  e = Math.max(e, -14);
  return 2 ** (e - 10);
}

/** A number rounded to the nearest f16 (ties to even), as a number (±∞ beyond 65504). */
export function roundHalf(x) {
  if (!Number.isFinite(x) || x === 0) return x;
  const a = Math.abs(x);
  const ulp = halfSpacing(a);
  const r = a / ulp; // exact: ulp is a power of two
  let f = Math.floor(r);
  const frac = r - f;
  if (frac > 0.5 || (frac === 0.5 && f % 2 === 1)) f += 1;
  const y = f * ulp;
  return Math.sign(x) * (y > 65504 ? Infinity : y);
}

/** The f16 bits of x rounded to f16. */
export function floatToHalfBits(x) {
  const y = roundHalf(x);
  const sign = y < 0 || Object.is(y, -0) ? 0x8000 : 0;
  const a = Math.abs(y);
  if (Number.isNaN(y)) return 0x7e00;
  if (a === Infinity) return sign | 0x7c00;
  if (a === 0) return sign;
  if (a < 2 ** -14) return sign | Math.round(a / 2 ** -24); // subnormal
  const e = Math.round(Math.log2(halfSpacing(a))) + 10;
  return sign | ((e + 15) << 10) | Math.round((a / 2 ** e - 1) * 1024);
}

/** The ALiBi paper's slopes for n heads (wgattn's standard_alibi_slopes). */
export function standardAlibiSlopes(n) {
  if (n === 0) return [];
  const pow2 = (k) => {
    const start = 2 ** (-8 / k);
    return Array.from({ length: k }, (_, i) => Math.fround(start ** (i + 1)));
  };
  const m = 2 ** Math.floor(Math.log2(n));
  const slopes = pow2(m);
  if (m < n) slopes.push(...pow2(2 * m).filter((_, i) => i % 2 === 0).slice(0, n - m));
  return slopes;
}

/** The spec with its defaults filled in. */
export function normalise(spec) {
  const s = {
    layout: "bhsd",
    causal: "none",
    returnLse: false,
    ...spec,
  };
  // Stored as f32, as wgattn stores them.
  s.scale = Math.fround(spec.scale ?? 1 / Math.sqrt(Math.max(spec.headDim, 1)));
  if (spec.softcap != null) s.softcap = Math.fround(spec.softcap);
  return s;
}

/** Index of row (b, h, i) of a [B, H, S, D] (bhsd) or [B, S, H, D] (bshd) tensor. */
function rowAt(layout, heads, seq, d, b, h, i) {
  return layout === "bshd" ? ((b * seq + i) * heads + h) * d : ((b * heads + h) * seq + i) * d;
}

/** Reads a tensor as numbers, rounded to f16 when the spec stores f16. */
function values(t, f16) {
  if (t instanceof Uint16Array) return Float64Array.from(t, halfToFloat);
  const x = Float64Array.from(t);
  if (f16) { for (let i = 0; i < x.length; i++) x[i] = roundHalf(Math.fround(x[i])); }
  return x;
}

/**
 * softmax(scale·q·kᵀ + masks)·v in f64. Returns {out: Float64Array, lse: Float64Array}
 * (lse [B, Hq, Sq], −∞ for fully masked rows); `out` has q's shape and layout.
 */
export function attentionReference(q, k, v, spec) {
  const s = normalise(spec);
  const { batch: B, qHeads: Hq, kvHeads: Hkv, seqQ: Sq, seqK: Sk, headDim: D } = s;
  const f16 = s.dtype === "f16" || q instanceof Uint16Array;
  const [Q, K, V] = [values(q, f16), values(k, f16), values(v, f16)];
  const group = Hq / Hkv;
  const causalOffset = s.causal === "top-left" ? 0 : s.causal === "bottom-right" ? Sk - Sq : null;
  const alignOffset = causalOffset ?? Sk - Sq;
  let window = s.window ?? null;
  if (window && !Array.isArray(window)) window = [window.left, window.right];
  const slopes = s.alibi === true
    ? standardAlibiSlopes(Hq)
    : s.alibi && s.alibi !== false
    ? Array.from(s.alibi, Math.fround)
    : null;
  const out = new Float64Array(B * Hq * Sq * D);
  const lse = new Float64Array(B * Hq * Sq);
  const logits = new Float64Array(Sk);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < Hq; h++) {
      const kvh = Math.floor(h / group);
      for (let i = 0; i < Sq; i++) {
        // Visible keys lo..hi (causal, key padding, window).
        let lo = 0;
        let hi = Sk;
        if (s.kvLens) hi = Math.min(hi, Number(s.kvLens[b]));
        if (causalOffset !== null) hi = Math.min(hi, i + causalOffset + 1);
        const diag = i + alignOffset;
        if (window) {
          if (window[0] >= 0) lo = Math.max(lo, diag - window[0]);
          if (window[1] >= 0) hi = Math.min(hi, diag + window[1] + 1);
        }
        hi = Math.max(hi, 0);
        lo = Math.min(Math.max(lo, 0), hi);
        const qa = rowAt(s.layout, Hq, Sq, D, b, h, i);
        const oa = qa;
        let max = -Infinity;
        for (let j = lo; j < hi; j++) {
          const ka = rowAt(s.layout, Hkv, Sk, D, b, kvh, j);
          let dot = 0;
          for (let x = 0; x < D; x++) dot += Q[qa + x] * K[ka + x];
          let l = dot * s.scale;
          if (s.softcap != null) l = s.softcap * Math.tanh(l / s.softcap);
          if (slopes) l -= slopes[h] * Math.abs(diag - j);
          logits[j] = l <= MASKED_LOGIT ? -Infinity : l;
          if (logits[j] > max) max = logits[j];
        }
        const row = (b * Hq + h) * Sq + i;
        if (max === -Infinity) {
          lse[row] = -Infinity; // fully masked: out stays 0
          continue;
        }
        let sum = 0;
        for (let j = lo; j < hi; j++) sum += Math.exp(logits[j] - max);
        for (let j = lo; j < hi; j++) {
          const p = Math.exp(logits[j] - max) / sum;
          if (p === 0) continue;
          const va = rowAt(s.layout, Hkv, Sk, D, b, kvh, j);
          for (let x = 0; x < D; x++) out[oa + x] += p * V[va + x];
        }
        lse[row] = max + Math.log(sum);
      }
    }
  }
  return { out, lse };
}

/** Relative Frobenius distance ‖got − want‖ / ‖want‖ (absolute when want is 0). */
export function relFro(got, want) {
  let num = 0;
  let den = 0;
  for (let i = 0; i < want.length; i++) {
    num += (got[i] - want[i]) ** 2;
    den += want[i] ** 2;
  }
  return den > 0 ? Math.sqrt(num / den) : Math.sqrt(num);
}

/** Largest |got − want| over the entries where want is finite. */
export function maxAbs(got, want) {
  let m = 0;
  for (let i = 0; i < want.length; i++) {
    if (Number.isFinite(want[i])) m = Math.max(m, Math.abs(got[i] - want[i]));
  }
  return m;
}

/** Seeded normal samples (mulberry32 + Box–Muller) as a Float32Array. */
export function normals(n, seed, mean = 0, std = 1) {
  let a = seed >>> 0;
  const uniform = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = Math.max(uniform(), 1e-12);
    x[i] = mean + std * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * uniform());
  }
  return x;
}

/** Element counts of q (and out) and of k (and v) for a spec. */
export function lengths(spec) {
  return {
    q: spec.batch * spec.qHeads * spec.seqQ * spec.headDim,
    kv: spec.batch * spec.kvHeads * spec.seqK * spec.headDim,
  };
}
