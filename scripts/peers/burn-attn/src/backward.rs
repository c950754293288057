//! backward mode: `burn-attn bench-backward`.
//!
//! Times burn's attention gradient on the autodiff backend (`Device::wgpu(..).autodiff()`, i.e.
//! `Autodiff<Wgpu>` behind burn's dispatch): q, k, v are leaves with `require_grad()`, d_out is
//! a random upstream gradient (a constant), and one timed run is
//!
//!   out = attention(q, k, v); loss = sum(out * d_out); grads = loss.backward();
//!   dq, dk, dv = q.grad(&grads), k.grad(&grads), v.grad(&grads); device.sync()
//!
//! so dq, dk, dv are the vector-Jacobian products of attention with d_out. The forward alone
//! (same autodiff device, same tracked leaves, graph recorded but no backward, ending with
//! device.sync()) is timed in the same loop, alternating with the forward + backward runs, so
//! backward-only ~= fwd_bwd - fwd. `fwd_infer` is the forward on the plain (non-autodiff) wgpu
//! device, for reference: that is where burn's fused op uses its flash kernels.
//!
//! NOTE: burn 0.22.1's autodiff backend implements `attention` with `attention_fallback`
//! (burn-autodiff src/ops/module.rs): matmul -> scale -> mask_fill -> NaN-safe softmax -> matmul,
//! all differentiated op by op. So under autodiff `fused` does NOT run a flash kernel, forward or
//! backward; it and `unfused` (the harness's matmul -> mask_fill -> softmax -> matmul) both
//! materialize [B, H, Sq, Sk] f32 score matrices (several, in the backward).
//!
//! FLOPs: forward = 4*B*H*Sq*Sk*D (halved for causal with Sq == Sk), backward = 2.5 x forward.

use super::{Impl, SHAPES, causal_mask, opts, print_adapter, short_err, unfused};
use burn::tensor::{Device, DeviceKind, Distribution, Tensor, TensorData, module::attention};
use std::time::Instant;

struct Shape {
    b: usize,
    h: usize,
    sq: usize,
    sk: usize,
    d: usize,
    causal: bool,
    label: String,
}

impl Shape {
    fn fwd_flops(&self) -> f64 {
        let f = 4.0 * (self.b * self.h * self.sq * self.sk * self.d) as f64;
        if self.causal && self.sq == self.sk { f / 2.0 } else { f }
    }
    fn bwd_flops(&self) -> f64 {
        2.5 * self.fwd_flops()
    }
    fn scores_mib(&self) -> f64 {
        (self.b * self.h * self.sq * self.sk * 4) as f64 / (1u64 << 20) as f64
    }
    /// "BxHxSxD" (or "BxHxSq(q)xSk(k)xD"), plus " causal".
    fn dims(&self) -> String {
        if self.sq == self.sk {
            format!("{}x{}x{}x{}", self.b, self.h, self.sq, self.d)
        } else {
            format!("{}x{}x{}(q)x{}(k)x{}", self.b, self.h, self.sq, self.sk, self.d)
        }
    }
}

/// The harness's standard bench shapes; with `force_causal` every shape is made causal (burn's
/// causal is bottom-right aligned, so for the Sq = 1 decode shape it masks nothing) and the
/// duplicates that creates are dropped.
fn shapes(force_causal: bool) -> Vec<Shape> {
    let mut out: Vec<Shape> = Vec::new();
    for s in SHAPES {
        let causal = s.causal || force_causal;
        let label = if causal && !s.causal { format!("{} causal", s.label) } else { s.label.to_string() };
        if out.iter().any(|o| (o.b, o.h, o.sq, o.sk, o.d, o.causal) == (s.b, s.h, s.sq, s.sk, s.d, causal)) {
            continue;
        }
        out.push(Shape { b: s.b, h: s.h, sq: s.sq, sk: s.sk, d: s.d, causal, label });
    }
    out
}

fn forward(imp: Impl, q: &Tensor<4>, k: &Tensor<4>, v: &Tensor<4>, s: &Shape, device: &Device) -> Tensor<4> {
    match imp {
        Impl::Fused => attention(q.clone(), k.clone(), v.clone(), None, None, opts(s.causal, None)),
        Impl::Unfused => {
            let mask = s
                .causal
                .then(|| causal_mask(s.sq, s.sk, device).unsqueeze::<4>().expand([s.b, s.h, s.sq, s.sk]));
            unfused(q.clone(), k.clone(), v.clone(), mask.as_ref(), 1.0 / (s.d as f64).sqrt())
        }
    }
}

/// Forward + backward; returns (out, dq, dk, dv) (not synced).
fn fwd_bwd(
    imp: Impl,
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    d_out: &Tensor<4>,
    s: &Shape,
    device: &Device,
) -> (Tensor<4>, Tensor<4>, Tensor<4>, Tensor<4>) {
    let out = forward(imp, q, k, v, s, device);
    let loss = (out.clone() * d_out.clone()).sum();
    let grads = loss.backward();
    let dq = q.grad(&grads).expect("no gradient for q");
    let dk = k.grad(&grads).expect("no gradient for k");
    let dv = v.grad(&grads).expect("no gradient for v");
    (out.without_autodiff(), dq, dk, dv)
}

struct BwdResult {
    fwd_med: f64,
    fwd_min: f64,
    fb_med: f64,
    fb_min: f64,
    infer_med: f64,
    runs: usize,
    first_s: f64,
}

fn median(mut t: Vec<f64>) -> (f64, f64) {
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = t.len();
    let med = if n % 2 == 1 { t[n / 2] } else { 0.5 * (t[n / 2 - 1] + t[n / 2]) };
    (med, t[0])
}

fn finite(t: Tensor<4>, what: &str) -> Result<(), String> {
    let data = t.try_into_data().map_err(|e| format!("{what}: {}", short_err(&format!("{e:?}"))))?;
    let x: &[f32] = data.as_slice().expect("f32");
    if x.iter().all(|v| v.is_finite()) { Ok(()) } else { Err(format!("{what}: non-finite values")) }
}

fn bench_one(plain: &Device, ad: &Device, s: &Shape, imp: Impl, min_runs: usize, target_s: f64) -> Result<BwdResult, String> {
    let dist = Distribution::Normal(0.0, 1.0);
    let q = Tensor::<4>::random([s.b, s.h, s.sq, s.d], dist, ad).require_grad();
    let k = Tensor::<4>::random([s.b, s.h, s.sk, s.d], dist, ad).require_grad();
    let v = Tensor::<4>::random([s.b, s.h, s.sk, s.d], dist, ad).require_grad();
    let d_out = Tensor::<4>::random([s.b, s.h, s.sq, s.d], dist, ad);
    ad.sync().expect("sync");

    let run_fwd = || -> f64 {
        let t0 = Instant::now();
        let out = forward(imp, &q, &k, &v, s, ad);
        ad.sync().expect("sync");
        let dt = t0.elapsed().as_secs_f64();
        drop(out);
        dt
    };
    let run_fb = || -> f64 {
        let t0 = Instant::now();
        let r = fwd_bwd(imp, &q, &k, &v, &d_out, s, ad);
        ad.sync().expect("sync");
        let dt = t0.elapsed().as_secs_f64();
        drop(r);
        dt
    };

    // warm-up: the first calls compile shaders and run autotune
    let first_s = run_fb();
    run_fwd();
    let est = run_fb() + run_fwd();
    let n = min_runs.max(((target_s / est.max(1e-6)) as usize).min(200)).max(1);
    let (mut tf, mut tfb) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        tf.push(run_fwd());
        tfb.push(run_fb());
    }
    let (fwd_med, fwd_min) = median(tf);
    let (fb_med, fb_min) = median(tfb);

    // inference forward (plain wgpu device) for reference
    let qi = q.clone().without_autodiff().to_device(plain);
    let ki = k.clone().without_autodiff().to_device(plain);
    let vi = v.clone().without_autodiff().to_device(plain);
    let run_inf = || -> f64 {
        let t0 = Instant::now();
        let out = forward(imp, &qi, &ki, &vi, s, plain);
        plain.sync().expect("sync");
        let dt = t0.elapsed().as_secs_f64();
        drop(out);
        dt
    };
    run_inf();
    let (infer_med, _) = median((0..n).map(|_| run_inf()).collect());

    // device.sync() does not report a failed allocation (kernels are just skipped): read the
    // output and all three gradients of one more run back and make sure they are finite.
    let (out, dq, dk, dv) = fwd_bwd(imp, &q, &k, &v, &d_out, s, ad);
    finite(out, "out")?;
    finite(dq, "dq")?;
    finite(dk, "dk")?;
    finite(dv, "dv")?;
    Ok(BwdResult { fwd_med, fwd_min, fb_med, fb_min, infer_med, runs: n, first_s })
}

// ------------------------------------------------------------------ f64 reference gradient

/// Attention forward and gradient in f64 on the CPU, [b, h, s, d] row-major, bottom-right
/// causal like burn. Returns (out, dq, dk, dv).
#[allow(clippy::too_many_arguments)]
fn reference(
    q: &[f64], k: &[f64], v: &[f64], d_out: &[f64],
    (b, h, sq, sk, d): (usize, usize, usize, usize, usize),
    causal: bool,
) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let scale = 1.0 / (d as f64).sqrt();
    let off = sk as i64 - sq as i64;
    let (mut o, mut dq) = (vec![0.0; b * h * sq * d], vec![0.0; b * h * sq * d]);
    let (mut dk, mut dv) = (vec![0.0; b * h * sk * d], vec![0.0; b * h * sk * d]);
    for bh in 0..b * h {
        let (qo, ko) = (bh * sq * d, bh * sk * d);
        // P = softmax(scale * Q K^T, masked)
        let mut p = vec![0.0f64; sq * sk];
        for i in 0..sq {
            let mut m = f64::NEG_INFINITY;
            for j in 0..sk {
                let masked = causal && (j as i64) > (i as i64) + off;
                let x = if masked {
                    f64::NEG_INFINITY
                } else {
                    scale * (0..d).map(|c| q[qo + i * d + c] * k[ko + j * d + c]).sum::<f64>()
                };
                p[i * sk + j] = x;
                m = m.max(x);
            }
            let mut z = 0.0;
            for j in 0..sk {
                let e = if p[i * sk + j] == f64::NEG_INFINITY { 0.0 } else { (p[i * sk + j] - m).exp() };
                p[i * sk + j] = e;
                z += e;
            }
            for j in 0..sk {
                p[i * sk + j] /= z;
            }
        }
        for i in 0..sq {
            // O = P V
            for c in 0..d {
                o[qo + i * d + c] = (0..sk).map(|j| p[i * sk + j] * v[ko + j * d + c]).sum();
            }
            // dP = dO V^T; dS = P * (dP - rowsum(dO * O))
            let dp: Vec<f64> = (0..sk)
                .map(|j| (0..d).map(|c| d_out[qo + i * d + c] * v[ko + j * d + c]).sum())
                .collect();
            let delta: f64 = (0..sk).map(|j| p[i * sk + j] * dp[j]).sum();
            for j in 0..sk {
                let ds = p[i * sk + j] * (dp[j] - delta);
                for c in 0..d {
                    dq[qo + i * d + c] += scale * ds * k[ko + j * d + c];
                    dk[ko + j * d + c] += scale * ds * q[qo + i * d + c];
                    dv[ko + j * d + c] += p[i * sk + j] * d_out[qo + i * d + c];
                }
            }
        }
    }
    (o, dq, dk, dv)
}

fn to_vec(t: Tensor<4>) -> Vec<f64> {
    t.into_data().as_slice::<f32>().expect("f32").iter().map(|&x| x as f64).collect()
}

/// Max |burn - ref| / max |ref| over a tensor.
fn rel_err(got: &[f64], want: &[f64]) -> (f64, f64) {
    let err = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    let scale = want.iter().map(|x| x.abs()).fold(0.0, f64::max);
    (err, err / scale.max(1e-30))
}

/// burn's out, dq, dk, dv vs the f64 reference on tiny shapes. Returns false on a mismatch.
/// With `to_stderr` (--json) the lines go to stderr, keeping stdout JSON-only.
fn check(ad: &Device, imps: &[Impl], to_stderr: bool) -> bool {
    macro_rules! out { ($($t:tt)*) => { if to_stderr { eprintln!($($t)*) } else { println!($($t)*) } } }
    const TOL: f64 = 1e-4; // relative to max |ref| of each tensor; f32 gives ~1e-6
    let mut ok = true;
    // (b, h, sq, sk, d, causal): one square shape, plain and causal, and Sq != Sk
    for (b, h, sq, sk, d, causal) in
        [(1usize, 2usize, 6usize, 6usize, 8usize, false), (1, 2, 6, 6, 8, true), (2, 1, 5, 7, 4, false)]
    {
        let n_q = b * h * sq * d;
        let n_k = b * h * sk * d;
        // deterministic inputs (a small LCG), f32-representable so both sides see the same numbers
        let mut seed = 0x2545f4914f6cdd1du64 ^ (sq * 31 + sk * 7 + causal as usize) as u64;
        let mut rnd = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((seed >> 40) as f64 / (1u64 << 24) as f64 * 4.0 - 2.0) as f32
                })
                .collect()
        };
        let (qf, kf, vf, gf) = (rnd(n_q), rnd(n_k), rnd(n_k), rnd(n_q));
        let f64s = |x: &[f32]| x.iter().map(|&v| v as f64).collect::<Vec<f64>>();
        let (ro, rdq, rdk, rdv) =
            reference(&f64s(&qf), &f64s(&kf), &f64s(&vf), &f64s(&gf), (b, h, sq, sk, d), causal);
        let shape = Shape { b, h, sq, sk, d, causal, label: String::new() };
        for &imp in imps {
            let t = |x: &[f32], s: usize| Tensor::<4>::from_data(TensorData::new(x.to_vec(), [b, h, s, d]), ad);
            let q = t(&qf, sq).require_grad();
            let k = t(&kf, sk).require_grad();
            let v = t(&vf, sk).require_grad();
            let g = t(&gf, sq);
            let (out, dq, dk, dv) = fwd_bwd(imp, &q, &k, &v, &g, &shape, ad);
            let name = if imp == Impl::Fused { "fused" } else { "unfused" };
            let mut line = format!(
                "check {name:7} {}{}:",
                shape.dims(),
                if causal { " causal" } else { "" }
            );
            for (what, got, want) in
                [("out", to_vec(out), &ro), ("dq", to_vec(dq), &rdq), ("dk", to_vec(dk), &rdk), ("dv", to_vec(dv), &rdv)]
            {
                let (abs, rel) = rel_err(&got, want);
                line += &format!("  {what} max|err| {abs:.2e} (rel {rel:.1e})");
                if !(rel < TOL) {
                    ok = false;
                    line += " MISMATCH";
                }
            }
            out!("{line}");
        }
    }
    out!(
        "check: {} (burn's out/dq/dk/dv vs an f64 CPU attention gradient; tolerance {TOL:.0e} relative to max |ref|)",
        if ok { "PASS" } else { "FAIL" }
    );
    ok
}

// ------------------------------------------------------------------ command

pub fn cmd_bench_backward(args: &[String]) {
    let mut imps = vec![Impl::Fused, Impl::Unfused];
    let mut min_runs = 5usize;
    let mut target_s = 1.0f64;
    let mut only: Option<String> = None;
    let mut force_causal = false;
    let mut max_scores_mib: Option<f64> = None;
    let mut json = false;
    let (mut do_check, mut check_only) = (false, false);
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--impl" => {
                i += 1;
                imps = match args[i].as_str() {
                    "fused" => vec![Impl::Fused],
                    "unfused" => vec![Impl::Unfused],
                    "both" => vec![Impl::Fused, Impl::Unfused],
                    x => panic!("bad --impl {x}"),
                }
            }
            "--min-runs" => { i += 1; min_runs = args[i].parse().unwrap() }
            "--target-s" => { i += 1; target_s = args[i].parse().unwrap() }
            "--only" => { i += 1; only = Some(args[i].clone()) }
            "--causal" => force_causal = true,
            "--max-scores-mib" => { i += 1; max_scores_mib = Some(args[i].parse().unwrap()) }
            "--json" => json = true,
            "--check" => do_check = true,
            "--check-only" => { do_check = true; check_only = true }
            x => panic!("unknown argument {x}"),
        }
        i += 1;
    }
    let plain = Device::wgpu(DeviceKind::DefaultDevice);
    let ad = plain.clone().autodiff();
    // with --json, stdout is one JSON object per line; everything else goes to stderr
    macro_rules! info { ($($t:tt)*) => { if json { eprintln!($($t)*) } else { println!($($t)*) } } }
    info!("device: {plain:?} (autodiff: {})", ad.is_autodiff());
    if json {
        match plain.as_dispatch().identity() {
            Some(id) => eprintln!("adapter: {} (fingerprint {})", id.name, id.fingerprint),
            None => eprintln!("adapter: <not reported>"),
        }
    } else {
        print_adapter(&plain);
    }
    let mut ok = true;
    if check_only {
        ok = check(&ad, &imps, json);
        std::process::exit(if ok { 0 } else { 1 });
    }
    info!(
        "\nforward + backward (dq, dk, dv) through Autodiff<Wgpu>; each timing ends with device.sync(); \
         bwd = fwd_bwd - fwd (medians); GFLOP/s bwd = 2.5 x fwd FLOPs / bwd; fwd_infer = forward without autodiff"
    );
    if !json {
        println!(
        "| {:7} | {:28} | {:>9} | {:>9} | {:>9} | {:>9} | {:>9} | {:>9} | {:>10} | {:>4} | {:>8} |",
        "impl", "shape (B x H x S x D)", "fwd ms", "fwd min", "f+b ms", "f+b min", "bwd ms", "GFLOP/s", "fwd_infer", "runs", "1st s"
    );
    }
    for imp in &imps {
        let name = if *imp == Impl::Fused { "fused" } else { "unfused" };
        for s in shapes(force_causal) {
            if let Some(o) = &only {
                if !s.label.contains(o.as_str()) {
                    continue;
                }
            }
            if max_scores_mib.is_some_and(|m| s.scores_mib() > m) {
                info!(
                    "| {name:7} | {:28} | skipped: f32 scores {:.0} MiB > --max-scores-mib {} |",
                    s.label,
                    s.scores_mib(),
                    max_scores_mib.unwrap()
                );
                continue;
            }
            match bench_one(&plain, &ad, &s, *imp, min_runs, target_s) {
                Ok(r) => {
                    let bwd = r.fb_med - r.fwd_med;
                    let gf = s.bwd_flops() / bwd / 1e9;
                    if json {
                        println!(
                            "{{\"shape\":\"{}\",\"causal\":{},\"impl\":\"{name}\",\"fwd_ms\":{:.4},\"fwd_bwd_ms\":{:.4},\"bwd_ms\":{:.4},\"gflops_bwd\":{:.3},\"fwd_min_ms\":{:.4},\"fwd_bwd_min_ms\":{:.4},\"fwd_infer_ms\":{:.4},\"runs\":{},\"first_call_s\":{:.3}}}",
                            s.dims(), s.causal, r.fwd_med * 1e3, r.fb_med * 1e3, bwd * 1e3, gf,
                            r.fwd_min * 1e3, r.fb_min * 1e3, r.infer_med * 1e3, r.runs, r.first_s
                        );
                    } else {
                        println!(
                            "| {name:7} | {:28} | {:9.3} | {:9.3} | {:9.3} | {:9.3} | {:9.3} | {:9.2} | {:10.3} | {:4} | {:8.2} |",
                            s.label, r.fwd_med * 1e3, r.fwd_min * 1e3, r.fb_med * 1e3, r.fb_min * 1e3,
                            bwd * 1e3, gf, r.infer_med * 1e3, r.runs, r.first_s
                        );
                    }
                }
                Err(e) => {
                    if json {
                        println!(
                            "{{\"shape\":\"{}\",\"causal\":{},\"impl\":\"{name}\",\"error\":\"{}\"}}",
                            s.dims(), s.causal, e.replace('\\', "\\\\").replace('"', "\\\"")
                        );
                    } else {
                        println!("| {name:7} | {:28} | FAILED (timings discarded): {e} |", s.label);
                    }
                }
            }
        }
    }
    if do_check {
        info!("");
        ok = check(&ad, &imps, json);
    }
    if !ok {
        std::process::exit(1);
    }
}
