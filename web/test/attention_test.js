// The browser build (web/pkg, from scripts/build-web.sh) run headless in Deno, whose WebGPU is
// wgpu (lavapipe on a machine without a GPU): every GPU result is compared with wgattn's f64
// Rust reference (compiled into the module) and with the JavaScript reference of
// web/reference.js, at the tolerances of the native tests, over the shape grid (odd sizes,
// GQA/MQA, seqQ ≠ seqK, both layouts, causal alignments, kvLens with 0 and 1, windows, ALiBi,
// soft-capping, f16, large logits, fully masked rows) and the public case files against their
// stored outputs.
//
//   deno test --allow-read --allow-env web/test/
//
// Without a WebGPU adapter every test fails, unless WGATTN_ALLOW_NO_GPU=1 (then SKIPPED).
// WGATTN_CASES: the directory of case files (default tests/data/validation).

import init, {
  caseFromSafetensors,
  describeSpec,
  referenceAttention,
  standardPreset,
  tolerances,
  Wgattn,
} from "../pkg/wgattn.js";
import {
  attentionReference,
  floatToHalfBits,
  lengths,
  maxAbs,
  normals,
  relFro,
} from "../reference.js";

const TOL_F32 = 1e-5;
const TOL_F32_LARGE = 1e-4;
/** Largest FLOPs (4·B·Hq·Sq·Sk·D) of a grid case: the JavaScript reference runs each one. */
const MAX_FLOPS = 4e7;

await init({
  module_or_path: await Deno.readFile(new URL("../pkg/wgattn_bg.wasm", import.meta.url)),
});

let ctx = null;
let noAdapter = null;
try {
  ctx = await Wgattn.create();
} catch (e) {
  noAdapter = e;
}
const allowNoGpu = Deno.env.get("WGATTN_ALLOW_NO_GPU") === "1";
if (ctx) {
  const info = ctx.adapterInfo();
  console.log(`adapter: ${info.name} (${info.backend}), features: ${info.features.join(", ")}`);
}

/** A test that needs the adapter: fails without one unless WGATTN_ALLOW_NO_GPU=1. */
function gpuTest(name, fn) {
  Deno.test(name, async () => {
    if (!ctx) {
      if (allowNoGpu) {
        console.log(`SKIPPED: no WebGPU adapter (${noAdapter?.message ?? noAdapter})`);
        return;
      }
      throw new Error(
        `no WebGPU adapter: ${noAdapter?.message ?? noAdapter} (set WGATTN_ALLOW_NO_GPU=1 to skip)`,
      );
    }
    await fn(ctx);
  });
}

/** Inputs of a distribution: normal, offset3 (q, k ~ N(3, 1)) or normal30 (logits ~10³). */
function inputs(spec, dist, seed) {
  const n = lengths(spec);
  const [mean, std] = dist === "offset3" ? [3, 1] : dist === "normal30" ? [0, 30] : [0, 1];
  return {
    q: normals(n.q, seed, mean, std),
    k: normals(n.kv, seed + 7919, mean, std),
    v: normals(n.kv, seed + 15887, 0, 1),
  };
}

const flops = (s) => 4 * s.batch * s.qHeads * s.seqQ * s.seqK * s.headDim;

/** −∞ in exactly the same places, finite elsewhere. */
function sameInfinities(got, want, what) {
  for (let i = 0; i < want.length; i++) {
    const wi = want[i] === -Infinity;
    const gi = got[i] === -Infinity;
    if (wi !== gi || (!wi && !Number.isFinite(got[i]))) {
      throw new Error(`${what}[${i}] is ${got[i]}, expected ${want[i]}`);
    }
  }
}

/**
 * Runs one case on the GPU and checks it: out against the Rust reference and the JavaScript
 * reference within the native tolerance, lse (−∞ in place, max-abs within tolerance × logit
 * scale), no NaN, fully masked rows exactly 0; and the two references against each other.
 */
async function check(ctx, spec, { q, k, v }, f32Tol) {
  spec = { ...spec, returnLse: true };
  const gpu = await ctx.attention(q, k, v, spec);
  const rust = referenceAttention(q, k, v, spec);
  const js = attentionReference(q, k, v, spec);
  const tol = tolerances(q, k, v, spec, f32Tol);
  const measure = tol.out.measure === "rel_fro" ? relFro : maxAbs;
  const name = describeSpec(spec);
  if (gpu.out.some(Number.isNaN)) throw new Error(`${name}: NaN in out`);
  const errRust = measure(gpu.out, rust.out);
  const errJs = measure(gpu.out, js.out);
  if (!(errRust <= tol.out.bound) || !(errJs <= tol.out.bound)) {
    throw new Error(
      `${name}: out ${tol.out.measure} ${errRust} (Rust reference), ${errJs} (JS reference) > ${tol.out.bound}`,
    );
  }
  sameInfinities(gpu.lse, rust.lse, `${name}: lse`);
  sameInfinities(Float32Array.from(js.lse), rust.lse, `${name}: JS reference lse`);
  const lseErr = maxAbs(gpu.lse, rust.lse);
  if (!(lseErr <= tol.lse)) throw new Error(`${name}: lse max-abs ${lseErr} > ${tol.lse}`);
  // The two references agree to f32 rounding.
  const refs = relFro(js.out, rust.out);
  if (!(refs <= 1e-6)) throw new Error(`${name}: JS and Rust references differ by ${refs}`);
  // Fully masked rows: out exactly 0.
  const d = spec.headDim;
  const bshd = spec.layout === "bshd";
  for (let row = 0; row < rust.lse.length; row++) {
    if (rust.lse[row] !== -Infinity) continue;
    const i = row % spec.seqQ;
    const bh = (row - i) / spec.seqQ;
    const h = bh % spec.qHeads;
    const b = (bh - h) / spec.qHeads;
    const at = bshd
      ? ((b * spec.seqQ + i) * spec.qHeads + h) * d
      : ((b * spec.qHeads + h) * spec.seqQ + i) * d;
    for (let x = 0; x < d; x++) {
      if (gpu.out[at + x] !== 0) throw new Error(`${name}: fully masked row ${row} not 0`);
    }
  }
  return { errRust, masked: rust.lse.filter((x) => x === -Infinity).length };
}

/** The shape grid of the native foundation tests, sized for the JavaScript reference. */
function grid() {
  const seqs = [1, 7, 33, 100, 257];
  const dims = [3, 16, 32, 64, 80, 128];
  const heads = [[1, 1], [8, 2], [2, 2], [8, 1], [3, 3], [6, 3], [4, 4]];
  const dists = ["normal", "offset3", "normal", "normal30"];
  const cases = [];
  let n = 0;
  for (const [si, sq] of seqs.entries()) {
    for (const d of dims) {
      const sk = [sq, seqs[(si + 1) % 5], seqs[(si + 4) % 5]][n % 3];
      const [hq, hkv] = heads[n % heads.length];
      const batch = 1 + (n % 3);
      const lens = Array.from(
        { length: batch },
        (_, b) => [sk, 1, Math.ceil(sk / 2), Math.max(Math.floor((sk * 3) / 4), 1)][(n + b) % 4],
      );
      const spec = {
        batch,
        qHeads: hq,
        kvHeads: hkv,
        seqQ: sq,
        seqK: sk,
        headDim: d,
        layout: n % 2 === 0 ? "bhsd" : "bshd",
        causal: ["none", "top-left", "bottom-right", "none", "top-left", "bottom-right"][n % 6],
      };
      if (n % 6 >= 3) spec.kvLens = lens;
      if (n % 5 === 4) spec.scale = 0.3;
      while (flops(spec) > MAX_FLOPS && spec.batch > 1) {
        spec.batch -= 1;
        if (spec.kvLens) spec.kvLens = spec.kvLens.slice(0, spec.batch);
      }
      while (flops(spec) > MAX_FLOPS && spec.qHeads > 1) {
        spec.qHeads = Math.max(Math.floor(spec.qHeads / 2), 1);
        spec.kvHeads = Math.min(spec.kvHeads, spec.qHeads);
        while (spec.qHeads % spec.kvHeads !== 0) spec.kvHeads -= 1;
      }
      cases.push({ spec, dist: dists[n % 4], seed: 1000 + n });
      n += 1;
    }
  }
  return cases;
}

/** Single behaviours: fully masked rows, Sq > Sk both ways, decoding, large logits. */
const edges = [
  [
    { batch: 3, qHeads: 2, kvHeads: 1, seqQ: 9, seqK: 40, headDim: 32, kvLens: [0, 1, 40] },
    "normal",
  ],
  [
    { batch: 1, qHeads: 4, kvHeads: 2, seqQ: 70, seqK: 20, headDim: 64, causal: "bottom-right" },
    "normal",
  ],
  [{
    batch: 2,
    qHeads: 2,
    kvHeads: 2,
    seqQ: 70,
    seqK: 20,
    headDim: 16,
    causal: "top-left",
    layout: "bshd",
  }, "normal"],
  [{
    batch: 2,
    qHeads: 8,
    kvHeads: 1,
    seqQ: 1,
    seqK: 257,
    headDim: 128,
    causal: "bottom-right",
    kvLens: [257, 100],
  }, "normal"],
  [
    { batch: 1, qHeads: 2, kvHeads: 2, seqQ: 100, seqK: 100, headDim: 80, causal: "top-left" },
    "normal30",
  ],
  [{ batch: 1, qHeads: 8, kvHeads: 2, seqQ: 33, seqK: 257, headDim: 128 }, "offset3"],
  [{ batch: 1, qHeads: 1, kvHeads: 1, seqQ: 7, seqK: 7, headDim: 1 }, "normal"],
  // A window that leaves some rows without keys (fully masked by the window alone).
  [{
    batch: 1,
    qHeads: 2,
    kvHeads: 1,
    seqQ: 33,
    seqK: 7,
    headDim: 16,
    window: [0, 0],
    causal: "top-left",
  }, "normal"],
];

/** The options the JavaScript spec takes, each on the bases of the native option grid. */
const optionBases = [
  { batch: 2, qHeads: 2, kvHeads: 2, seqQ: 33, seqK: 33, headDim: 16 },
  {
    batch: 2,
    qHeads: 4,
    kvHeads: 2,
    seqQ: 33,
    seqK: 100,
    headDim: 64,
    causal: "bottom-right",
    kvLens: [100, 57],
  },
  {
    batch: 1,
    qHeads: 8,
    kvHeads: 2,
    seqQ: 100,
    seqK: 33,
    headDim: 32,
    layout: "bshd",
    causal: "top-left",
  },
  { batch: 3, qHeads: 2, kvHeads: 1, seqQ: 7, seqK: 257, headDim: 80, kvLens: [1, 257, 100] },
  {
    batch: 2,
    qHeads: 4,
    kvHeads: 2,
    seqQ: 1,
    seqK: 300,
    headDim: 64,
    causal: "bottom-right",
    kvLens: [300, 77],
  },
];
const options = [
  ["f16", (s) => ({ ...s, dtype: "f16" })],
  ["window 16,0", (s) => ({ ...s, window: [16, 0] })],
  ["window 5,5", (s) => ({ ...s, window: { left: 5, right: 5 } })],
  ["window -1,3", (s) => ({ ...s, window: [-1, 3] })],
  ["window 0,0", (s) => ({ ...s, window: [0, 0] })],
  ["alibi", (s) => ({ ...s, alibi: true })],
  [
    "alibi slopes",
    (s) => ({ ...s, alibi: Array.from({ length: s.qHeads }, (_, h) => 0.05 * (h + 1)) }),
  ],
  ["softcap 5", (s) => ({ ...s, softcap: 5 })],
  [
    "f16 alibi softcap window",
    (s) => ({ ...s, dtype: "f16", alibi: true, softcap: 20, window: [40, -1] }),
  ],
];

for (const [i, c] of grid().entries()) {
  gpuTest(`grid ${String(i).padStart(2, "0")} ${c.dist}`, async (ctx) => {
    const tol = c.dist === "normal30" ? TOL_F32_LARGE : TOL_F32;
    await check(ctx, c.spec, inputs(c.spec, c.dist, c.seed), tol);
  });
}

for (const [i, [spec, dist]] of edges.entries()) {
  gpuTest(`edge ${i}: ${JSON.stringify(spec)}`, async (ctx) => {
    const r = await check(
      ctx,
      spec,
      inputs(spec, dist, 20 + i),
      dist === "normal30" ? TOL_F32_LARGE : TOL_F32,
    );
    if (i === 0 || i === 1 || i === 7) {
      if (r.masked === 0) throw new Error("expected fully masked rows in this case");
    }
  });
}

for (const [n, [name, modify]] of options.entries()) {
  gpuTest(`option ${name}`, async (ctx) => {
    for (const [b, base] of optionBases.entries()) {
      const spec = modify(base);
      const dist = name.startsWith("softcap") && b === 0 ? "normal30" : "normal";
      await check(
        ctx,
        spec,
        inputs(spec, dist, 5000 + n * 10 + b),
        dist === "normal30" ? TOL_F32_LARGE : TOL_F32,
      );
    }
  });
}

gpuTest("every kernel on GQA, seqQ ≠ seqK, kvLens, bshd", async (ctx) => {
  const base = {
    batch: 2,
    qHeads: 6,
    kvHeads: 2,
    seqQ: 33,
    seqK: 100,
    headDim: 64,
    layout: "bshd",
    causal: "bottom-right",
    kvLens: [100, 1],
  };
  for (const kernel of ["three-pass", "flash", "split-kv"]) {
    const spec = { ...base, kernel };
    await check(ctx, spec, inputs(spec, "normal", 77), TOL_F32);
  }
  const decode = {
    batch: 2,
    qHeads: 8,
    kvHeads: 2,
    seqQ: 1,
    seqK: 257,
    headDim: 64,
    kernel: "split-kv",
  };
  await check(ctx, decode, inputs(decode, "normal30", 78), TOL_F32_LARGE);
});

gpuTest("f16 inputs as Uint16Array bits", async (ctx) => {
  const spec = {
    batch: 1,
    qHeads: 4,
    kvHeads: 2,
    seqQ: 33,
    seqK: 7,
    headDim: 32,
    causal: "bottom-right",
  };
  const x = inputs(spec, "normal", 90);
  const bits = (t) => Uint16Array.from(t, floatToHalfBits);
  await check(ctx, spec, { q: bits(x.q), k: bits(x.k), v: bits(x.v) }, TOL_F32);
});

gpuTest("attention weights (returnWeights)", async (ctx) => {
  const spec = {
    batch: 1,
    qHeads: 2,
    kvHeads: 1,
    seqQ: 7,
    seqK: 33,
    headDim: 16,
    causal: "top-left",
    returnWeights: true,
  };
  const { q, k, v } = inputs(spec, "normal", 91);
  const gpu = await ctx.attention(q, k, v, spec);
  const rust = referenceAttention(q, k, v, spec);
  const tol = tolerances(q, k, v, spec, TOL_F32);
  if (!gpu.weights || gpu.weights.length !== 2 * 7 * 33) throw new Error("no weights");
  const err = relFro(gpu.weights, rust.weights);
  if (!(err <= tol.weights)) throw new Error(`weights rel_fro ${err} > ${tol.weights}`);
});

gpuTest("public case files match their stored outputs", async (ctx) => {
  const dir = Deno.env.get("WGATTN_CASES") ??
    new URL("../../tests/data/validation/", import.meta.url).pathname;
  const files = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.isFile && e.name.endsWith(".safetensors")) files.push(e.name);
  }
  files.sort();
  if (files.length === 0) throw new Error(`no case files in ${dir}`);
  for (const file of files) {
    const c = caseFromSafetensors(await Deno.readFile(`${dir}/${file}`), file);
    const spec = { ...c.spec, returnLse: true };
    const gpu = await ctx.attention(c.q, c.k, c.v, spec);
    // out against the file's stored out (the cases' own f64 oracle), the cases' tolerance.
    const tol = tolerances(c.q, c.k, c.v, spec, TOL_F32_LARGE);
    const measure = tol.out.measure === "rel_fro" ? relFro : maxAbs;
    const err = measure(gpu.out, c.out);
    const rust = referenceAttention(c.q, c.k, c.v, spec);
    sameInfinities(gpu.lse, rust.lse, `${file}: lse`);
    const lseErr = maxAbs(gpu.lse, rust.lse);
    console.log(
      `  ${file}: out ${tol.out.measure} ${err.toExponential(2)}, lse max-abs ${
        lseErr.toExponential(2)
      }`,
    );
    if (!(err <= tol.out.bound)) throw new Error(`${file}: out ${err} > ${tol.out.bound}`);
    if (!(lseErr <= tol.lse)) throw new Error(`${file}: lse ${lseErr} > ${tol.lse}`);
  }
});

/** Rejects with a message containing `part`. */
async function rejects(promise, part) {
  try {
    await promise;
  } catch (e) {
    if (!(e instanceof Error)) throw new Error(`rejected with a non-Error: ${e}`);
    if (!e.message.includes(part)) throw new Error(`message "${e.message}" lacks "${part}"`);
    return e.message;
  }
  throw new Error(`resolved; expected a rejection with "${part}"`);
}

gpuTest("bad input rejects with the Rust error's message", async (ctx) => {
  const spec = { batch: 1, qHeads: 2, kvHeads: 1, seqQ: 4, seqK: 5, headDim: 8 };
  const { q, k, v } = inputs(spec, "normal", 3);
  await rejects(
    ctx.attention(q, k, v, { ...spec, seqQ: 5 }),
    "tensor `q` has 64 elements, expected 80",
  );
  await rejects(
    ctx.attention(q, k, v, { ...spec, qHeads: 3, kvHeads: 2 }),
    "q_heads = 3 is not a multiple of kv_heads",
  );
  await rejects(ctx.attention(q, k, v, { ...spec, seqq: 4 }), "seqq is not a spec field");
  await rejects(
    ctx.attention(q, k, v, { ...spec, causal: "sideways" }),
    "is not `top-left` or `bottom-right`",
  );
  await rejects(ctx.attention(q, k, v, { ...spec, layout: "sbhd" }), "is not `bhsd` or `bshd`");
  await rejects(
    ctx.attention(q, k, v, { ...spec, headDim: 8.5 }),
    "headDim = 8.5 must be a whole number",
  );
  await rejects(ctx.attention(q, k, v, { ...spec, kvLens: [9] }), "kv_lens");
  await rejects(ctx.attention(q, Uint16Array.from(k), v, spec), "must all be Float32Arrays");
  await rejects(ctx.attention([1, 2], k, v, spec), "must be a Float32Array");
  const nan = q.slice();
  nan[3] = NaN;
  await rejects(ctx.attention(nan, k, v, spec), "NaN");
  const { out } = await ctx.attention(q, k, v, spec); // the context still works
  if (out.length !== q.length) throw new Error("bad out length after errors");
  // The same messages from the reference (thrown synchronously).
  try {
    referenceAttention(q, k, v, { ...spec, seqQ: 5 });
    throw new Error("referenceAttention accepted a bad length");
  } catch (e) {
    if (!e.message.includes("tensor `q` has 64 elements")) throw e;
  }
});

gpuTest("bench returns the record of `wgattn bench --json`", async (ctx) => {
  const preset = standardPreset();
  if (preset.length !== 6 || preset[0].seqQ !== 512) throw new Error("unexpected preset");
  const spec = { batch: 1, qHeads: 2, kvHeads: 2, seqQ: 64, seqK: 64, headDim: 32, layout: "bshd" };
  const progress = [];
  const r = await ctx.bench(spec, { runs: 3 }, (done, expected) => progress.push([done, expected]));
  const keys = [
    "adapter",
    "shape",
    "kernel",
    "splits",
    "shaders",
    "dtype",
    "options",
    "median_ms",
    "min_ms",
    "max_ms",
    "runs",
    "gflops",
    "kv_gbps",
    "timing",
    "tuned",
    "variant",
  ];
  if (JSON.stringify(Object.keys(r)) !== JSON.stringify(keys)) {
    throw new Error(`keys ${Object.keys(r)}`);
  }
  if (r.runs !== 3 || progress.length !== 3) {
    throw new Error(`runs ${r.runs}, progress ${progress}`);
  }
  const expected = flops(spec) / (r.median_ms * 1e-3) / 1e9;
  if (Math.abs(r.gflops - expected) > 1e-9 * expected) {
    throw new Error(`gflops ${r.gflops} vs ${expected}`);
  }
  if (!(r.min_ms <= r.median_ms && r.median_ms <= r.max_ms)) {
    throw new Error("min/median/max order");
  }
  if (r.shape.causal !== null || r.kernel === "auto" || !r.options.includes("bshd")) {
    throw new Error(JSON.stringify(r));
  }
  const causal = await ctx.bench({ ...spec, causal: "top-left" }, { runs: 1 });
  if (causal.shape.causal !== "top-left") throw new Error(JSON.stringify(causal));
  await rejects(ctx.bench(spec, { runs: 0 }), "runs = 0 must be a whole number ≥ 1");
});
