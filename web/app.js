// The wgattn page: demo against the JavaScript reference, the standard benchmark with a chart
// and a JSON download, and one head's attention weights as a heat map. `?auto` runs all three
// at load (with `&runs=N` or `&seconds=S` per benchmark shape, `&kernels=auto,flash`, and
// `&kernel=K` for the demo) and sets
// `document.body.dataset.state` to "done" (or "failed") at the end, for headless browsers.

import init, { describeSpec, standardPreset, Wgattn } from "./pkg/wgattn.js";
import { attentionReference, lengths, normals, relFro } from "./reference.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
/** Kernel of the demo: `?kernel=…`, else the planner's choice (but see `start`). */
let demoKernel = params.get("kernel") ?? "auto";
let ctx = null;
const records = [];

/** Escapes text for innerHTML. */
const esc = (s) =>
  String(s).replace(
    /[&<>"]/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c],
  );

function showAdapter(info) {
  const limits = Object.entries(info.limits).map(([k, v]) => `${k} ${v}`).join(", ");
  $("adapter").innerHTML = `<dl class="info">
    <dt>adapter</dt><dd><b>${esc(info.name || "(unnamed)")}</b> (${esc(info.deviceType)}, ${
    esc(info.backend)
  })</dd>
    <dt>features</dt><dd>${esc(info.features.join(", ") || "none")}</dd>
    <dt>kernels use</dt><dd>${info.shaderF16 ? "f16 arithmetic" : "f16 packed in u32"}, ${
    info.subgroupSize ? `subgroups of ${info.subgroupSize}` : "workgroup-memory reductions"
  }</dd>
    <dt>limits</dt><dd>${esc(limits)}</dd></dl>`;
}

async function start() {
  try {
    await init();
  } catch (e) {
    $("adapter").innerHTML = `<span class="error">Could not load pkg/wgattn.js (${
      esc(e.message)
    }): build it with <code>scripts/build-web.sh</code>.</span>`;
    return false;
  }
  if (!navigator.gpu) {
    $("adapter").innerHTML = `<span class="error">This browser has no WebGPU
      (<code>navigator.gpu</code> is missing). Chrome and Edge 113+ have it on Windows, macOS and
      ChromeOS, Chrome 121+ on Android; Firefox 141+ on Windows; Safari 26+.</span>`;
    return false;
  }
  try {
    ctx = await Wgattn.create();
  } catch (e) {
    $("adapter").innerHTML = `<span class="error">${esc(e.message)}</span>`;
    return false;
  }
  const info = ctx.adapterInfo();
  showAdapter(info);
  if (/swiftshader/i.test(info.name) && !params.has("kernel") && !params.has("kernels")) {
    // SwiftShader's compiler takes the GPU process down on the flash kernels (Chromium 156):
    // stay with the three-pass kernel there.
    demoKernel = "three-pass";
    for (const c of document.querySelectorAll('input[name="kernel"]')) {
      c.checked = c.value === "three-pass";
    }
    $("adapter").insertAdjacentHTML(
      "beforeend",
      `<p class="note">SwiftShader (software WebGPU): the demo and benchmark use the three-pass
      kernel, since compiling the flash kernels there crashes the browser's GPU process.</p>`,
    );
  }
  for (const id of ["demo-run", "bench-run", "hm-run"]) $(id).disabled = false;
  return true;
}

// ---------------------------------------------------------------- demo

const demoCases = [
  [{ batch: 1, qHeads: 8, kvHeads: 2, seqQ: 100, seqK: 100, headDim: 64 }, 1],
  [{
    batch: 2,
    qHeads: 4,
    kvHeads: 1,
    seqQ: 33,
    seqK: 257,
    headDim: 80,
    causal: "bottom-right",
    kvLens: [257, 100],
  }, 1],
  [{
    batch: 1,
    qHeads: 6,
    kvHeads: 3,
    seqQ: 257,
    seqK: 33,
    headDim: 32,
    layout: "bshd",
    causal: "top-left",
  }, 1],
  [{ batch: 1, qHeads: 8, kvHeads: 8, seqQ: 1, seqK: 1000, headDim: 128 }, 1],
  [{
    batch: 1,
    qHeads: 4,
    kvHeads: 2,
    seqQ: 128,
    seqK: 128,
    headDim: 64,
    window: [16, 0],
    alibi: true,
  }, 1],
  [{
    batch: 1,
    qHeads: 2,
    kvHeads: 2,
    seqQ: 100,
    seqK: 100,
    headDim: 64,
    causal: "top-left",
    softcap: 30,
  }, 30],
  [{ batch: 1, qHeads: 2, kvHeads: 2, seqQ: 100, seqK: 100, headDim: 80, causal: "top-left" }, 30],
];

async function runDemo() {
  const kernel = demoKernel;
  const body = $("demo-table").tBodies[0];
  body.innerHTML = "";
  $("demo-table").hidden = false;
  let failed = 0;
  for (const [i, [base, std]] of demoCases.entries()) {
    const spec = { ...base, kernel };
    const n = lengths(spec);
    const q = normals(n.q, 100 + i, 0, std);
    const k = normals(n.kv, 200 + i, 0, std);
    const v = normals(n.kv, 300 + i);
    const tol = std > 1 ? 1e-4 : 1e-5;
    const row = body.insertRow();
    try {
      let t = performance.now();
      const gpu = await ctx.attention(q, k, v, spec);
      const gpuMs = performance.now() - t;
      t = performance.now();
      const ref = attentionReference(q, k, v, spec);
      const refMs = performance.now() - t;
      const err = relFro(gpu.out, ref.out);
      const ok = err <= tol && !gpu.out.some(Number.isNaN);
      if (!ok) failed++;
      row.innerHTML = `<td>${esc(describeSpec(spec))}${std > 1 ? " (logits ~10³)" : ""}</td>
        <td>${gpuMs.toFixed(1)}</td><td>${refMs.toFixed(1)}</td><td>${err.toExponential(2)}</td>
        <td>${tol.toExponential(0)}</td><td class="${ok ? "pass" : "fail"}">${
        ok ? "pass" : "FAIL"
      }</td>`;
    } catch (e) {
      failed++;
      row.innerHTML = `<td>${esc(describeSpec(spec))}</td><td colspan="5" class="error">${
        esc(e.message)
      }</td>`;
    }
  }
  return failed;
}

// ---------------------------------------------------------------- benchmark

const COLORS = ["#3b6fd8", "#e07b39", "#3aa76d", "#b04fb4"];
const shapeText = (r) => {
  const s = r.shape;
  return `${s.batch}x${s.q_heads}x${s.kv_heads}x${s.seq_q}x${s.seq_k}x${s.head_dim}${
    s.causal ? " causal" : ""
  }`;
};

/** A duration for a bar label. */
const time = (ms) => ms < 1000 ? `${ms.toPrecision(3)} ms` : `${(ms / 1000).toPrecision(3)} s`;

function drawChart() {
  const canvas = $("bench-chart");
  const g = canvas.getContext("2d");
  const W = canvas.width;
  const H = canvas.height;
  g.clearRect(0, 0, W, H);
  const shapes = [...new Set(records.map(shapeText))];
  const kernels = [...new Set(records.map((r) => r.requested))];
  if (shapes.length === 0) return;
  const left = 60;
  const bottom = H - 60;
  const top = 30;
  const max = Math.max(...records.map((r) => r.gflops), 1e-9) * 1.15;
  g.font = "12px system-ui, sans-serif";
  g.strokeStyle = "#ccd3da";
  g.fillStyle = "#5a6570";
  for (let t = 0; t <= 4; t++) {
    const y = bottom - ((bottom - top) * t) / 4;
    g.beginPath();
    g.moveTo(left, y);
    g.lineTo(W - 10, y);
    g.stroke();
    g.textAlign = "right";
    g.fillText(((max * t) / 4).toPrecision(3), left - 6, y + 4);
  }
  g.save();
  g.translate(14, (top + bottom) / 2);
  g.rotate(-Math.PI / 2);
  g.textAlign = "center";
  g.fillText("GFLOP/s (median)", 0, 0);
  g.restore();
  const slot = (W - left - 10) / shapes.length;
  const bar = Math.min(40, (slot * 0.8) / kernels.length);
  for (const r of records) {
    const x = left + shapes.indexOf(shapeText(r)) * slot + slot / 2 +
      (kernels.indexOf(r.requested) - kernels.length / 2) * bar;
    const h = ((bottom - top) * r.gflops) / max;
    g.fillStyle = COLORS[kernels.indexOf(r.requested) % COLORS.length];
    g.fillRect(x, bottom - h, bar - 2, h);
    g.fillStyle = "#1d232a";
    g.textAlign = "center";
    g.fillText(time(r.median_ms), x + bar / 2, bottom - h - 4);
  }
  g.textAlign = "center";
  g.fillStyle = "#1d232a";
  g.font = "11px system-ui, sans-serif";
  shapes.forEach((s, i) => {
    const [dims, causal] = s.split(" ");
    g.fillText(dims, left + i * slot + slot / 2, bottom + 15);
    if (causal) g.fillText(causal, left + i * slot + slot / 2, bottom + 28);
  });
  g.font = "12px system-ui, sans-serif";
  kernels.forEach((k, i) => {
    g.fillStyle = COLORS[i % COLORS.length];
    g.fillRect(left + i * 110, H - 22, 12, 12);
    g.fillStyle = "#1d232a";
    g.textAlign = "left";
    g.fillText(k, left + i * 110 + 16, H - 12);
  });
  g.textAlign = "left";
  g.fillText(records[0].adapter.name, left, 16);
}

async function runBench() {
  const kernels = [...document.querySelectorAll('input[name="kernel"]:checked')].map((c) =>
    c.value
  );
  const runs = Number(params.get("runs") ?? $("bench-runs").value) || undefined;
  const seconds = Number(params.get("seconds") ?? $("bench-seconds").value) || 2;
  const specs = standardPreset();
  const jobs = kernels.flatMap((kernel) => specs.map((s) => ({ ...s, kernel })));
  records.length = 0;
  const body = $("bench-table").tBodies[0];
  body.innerHTML = "";
  $("bench-table").hidden = false;
  $("bench-run").disabled = true;
  $("bench-download").disabled = true;
  let errors = 0;
  for (const [i, spec] of jobs.entries()) {
    $("bench-status").textContent = `${i + 1}/${jobs.length}: ${
      describeSpec(spec)
    } (${spec.kernel})`;
    const progress = (done, expected) => {
      $("bench-progress").value = (i + done / expected) / jobs.length;
    };
    const row = body.insertRow();
    try {
      const r = await ctx.bench(spec, runs ? { runs } : { seconds }, progress);
      records.push({ ...r, requested: spec.kernel });
      row.innerHTML = `<td>${esc(shapeText(r))}</td><td>${esc(r.kernel)}${
        r.splits > 1 ? ` (${r.splits} splits)` : ""
      }</td><td>${r.median_ms.toFixed(3)}</td><td>${r.min_ms.toFixed(3)}</td><td>${
        r.max_ms.toFixed(3)
      }</td><td>${r.runs}</td><td>${r.gflops.toFixed(2)}</td><td>${esc(r.timing)}</td>`;
      drawChart();
    } catch (e) {
      errors++;
      row.innerHTML = `<td>${esc(describeSpec(spec))}</td><td>${esc(spec.kernel)}</td>
        <td colspan="6" class="error">${esc(e.message)}</td>`;
    }
  }
  $("bench-progress").value = 1;
  $("bench-status").textContent = `done: ${records.length} timed, ${errors} failed`;
  $("bench-run").disabled = false;
  $("bench-download").disabled = records.length === 0;
  return errors;
}

function download() {
  // One object per line, as `wgattn bench --json` prints them.
  const text = records.map(({ requested: _, ...r }) => JSON.stringify(r)).join("\n") + "\n";
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([text], { type: "application/json" }));
  a.download = "wgattn-bench.json";
  a.click();
  URL.revokeObjectURL(a.href);
}

// ---------------------------------------------------------------- heat map

/** Viridis, by linear interpolation between 6 stops; t in [0, 1]. */
function viridis(t) {
  const stops = [[68, 1, 84], [65, 68, 135], [42, 120, 142], [34, 168, 132], [122, 209, 81], [
    253,
    231,
    37,
  ]];
  const x = Math.min(Math.max(t, 0), 1) * (stops.length - 1);
  const i = Math.min(Math.floor(x), stops.length - 2);
  const f = x - i;
  return stops[i].map((c, j) => Math.round(c + f * (stops[i + 1][j] - c)));
}

async function drawHeatmap() {
  const sq = Number($("hm-sq").value);
  const sk = Number($("hm-sk").value);
  const head = Number($("hm-head").value);
  const left = Number($("hm-window").value);
  const spec = {
    batch: 1,
    qHeads: 4,
    kvHeads: 2,
    seqQ: sq,
    seqK: sk,
    headDim: 32,
    causal: $("hm-causal").value,
    alibi: $("hm-alibi").checked,
    returnWeights: true,
    kernel: "three-pass",
  };
  if (left >= 0) spec.window = [left, -1];
  const canvas = $("heatmap");
  const g = canvas.getContext("2d");
  try {
    if (!(head >= 0 && head < 4)) throw new Error(`head = ${head} must be 0…3`);
    const n = lengths(spec);
    const { weights } = await ctx.attention(
      normals(n.q, 7, 0, 2),
      normals(n.kv, 8, 0, 2),
      normals(n.kv, 9),
      spec,
    );
    const w = weights.subarray(head * sq * sk, (head + 1) * sq * sk);
    const max = w.reduce((m, x) => Math.max(m, x), 0) || 1;
    const img = new ImageData(sk, sq);
    for (let i = 0; i < sq * sk; i++) {
      const [r, gr, b] = viridis(Math.sqrt(w[i] / max));
      img.data.set([r, gr, b, 255], i * 4);
    }
    const scale = Math.max(1, Math.floor(512 / Math.max(sq, sk)));
    canvas.width = sk * scale;
    canvas.height = sq * scale;
    const tile = new OffscreenCanvas(sk, sq);
    tile.getContext("2d").putImageData(img, 0, 0);
    g.imageSmoothingEnabled = false;
    g.drawImage(tile, 0, 0, sk * scale, sq * scale);
    canvas.title = `${describeSpec(spec)}, head ${head}: rows are queries, columns keys; ` +
      `colour = √(p / max p), max p = ${max.toPrecision(3)}`;
    return 0;
  } catch (e) {
    g.clearRect(0, 0, canvas.width, canvas.height);
    g.fillStyle = "#b3261e";
    g.fillText(e.message, 10, 20);
    return 1;
  }
}

$("demo-run").onclick = () => runDemo();
$("bench-run").onclick = () => runBench();
$("bench-download").onclick = download;
$("hm-run").onclick = () => drawHeatmap();

if (params.has("kernels")) {
  const wanted = params.get("kernels").split(",");
  for (const c of document.querySelectorAll('input[name="kernel"]')) {
    c.checked = wanted.includes(c.value);
  }
}
const ready = await start();
if (params.has("auto")) {
  let failures = ready ? 0 : 1;
  if (ready) {
    failures += await runDemo();
    failures += await drawHeatmap();
    failures += await runBench();
  }
  document.body.dataset.failures = String(failures);
  document.body.dataset.state = failures === 0 ? "done" : "failed";
}
