//! burn (wgpu backend) attention peer.
//!
//!   burn-attn bench [--impl fused|unfused|both] [--min-runs N] [--target-s S] [--sync device|readback]
//!                   [--only LABEL_SUBSTR] [--unfused-max-scores-mib N] [--check] [--dtype f32|f16]
//!   burn-attn bench-backward [--impl fused|unfused|both] [--min-runs N] [--target-s S]
//!                   [--only LABEL_SUBSTR] [--causal] [--max-scores-mib N] [--json]
//!                   [--check | --check-only]
//!                                         (forward + backward through burn's autodiff backend,
//!                                          Autodiff<Wgpu>; see the section "backward mode")
//!   burn-attn cases CASE_DIR OUT_DIR [--burn-causal]
//!                                         (run burn's attention op on the safetensors cases;
//!                                          --burn-causal: use burn's bottom-right is_causal for
//!                                          every causal case, to show where it differs)
//!
//! `fused`   = burn::tensor::module::attention (burn's own attention op; on the cubecl
//!             backends it is autotuned between flash-attention kernels and a
//!             multi-kernel fallback).
//! `unfused` = the same thing written with burn tensor ops: matmul, (causal mask_fill),
//!             softmax, matmul.
//! `--unfused-max-scores-mib N` skips unfused shapes whose f32 score matrix is over N MiB: on a
//! device whose maxStorageBufferRange is smaller (lavapipe in Mesa 22.3: 128 MiB) the unfused
//! kernels are not run and the timings are meaningless (1x32x2048x128 "ran" at ~1 TFLOP/s).
//! Every bench row also reads one output back after timing and reports FAILED if it errors.
//! `--check` then compares fused and unfused outputs on every bench shape.
//! Device: Device::wgpu(DeviceKind::DefaultDevice); on this machine that is Mesa
//! lavapipe (software Vulkan). Tensors are [batch, heads, seq, head_dim], f32, or f16 with
//! `--dtype f16` (random f32 inputs cast to f16 before timing; outputs cast back to f32 only
//! for the readback checks).

use burn::tensor::{
    Bool, Device, DeviceKind, Distribution, FloatDType, Tensor, TensorData, activation::softmax,
    module::attention, ops::AttentionModuleOptions,
};
mod backward;
use backward::cmd_bench_backward;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq)]
enum Impl {
    Fused,
    Unfused,
}

#[derive(Clone, Copy, PartialEq)]
enum SyncMode {
    Device,
    Readback,
}

struct BenchShape {
    b: usize,
    h: usize,
    sq: usize,
    sk: usize,
    d: usize,
    causal: bool,
    label: &'static str,
}

const SHAPES: &[BenchShape] = &[
    BenchShape { b: 1, h: 8, sq: 512, sk: 512, d: 64, causal: false, label: "1x8x512x64" },
    BenchShape { b: 1, h: 8, sq: 1024, sk: 1024, d: 64, causal: false, label: "1x8x1024x64" },
    BenchShape { b: 1, h: 8, sq: 1024, sk: 1024, d: 64, causal: true, label: "1x8x1024x64 causal" },
    BenchShape { b: 4, h: 12, sq: 256, sk: 256, d: 64, causal: false, label: "4x12x256x64" },
    BenchShape { b: 1, h: 32, sq: 2048, sk: 2048, d: 128, causal: true, label: "1x32x2048x128 causal" },
    // 1/4 of the heads of the shape above: its f32 score matrix (8*2048*2048*4 B = 128 MiB) is
    // the largest that fits a 128 MiB maxStorageBufferRange (Mesa 22.3 lavapipe), so the
    // unfused path can run it there (see --unfused-max-scores-mib).
    BenchShape { b: 1, h: 8, sq: 2048, sk: 2048, d: 128, causal: true, label: "1x8x2048x128 causal" },
    BenchShape { b: 1, h: 8, sq: 1, sk: 4096, d: 64, causal: false, label: "1x8x1(q)x4096(k)x64 decode" },
];

/// The adapter wgpu settled on (cubecl's DeviceIdentity: wgpu AdapterInfo::name).
fn print_adapter(device: &Device) {
    match device.as_dispatch().identity() {
        Some(id) => println!("adapter: {} (fingerprint {})", id.name, id.fingerprint),
        None => println!("adapter: <not reported>"),
    }
}

fn opts(causal: bool, scale: Option<f64>) -> AttentionModuleOptions {
    AttentionModuleOptions { scale, softcap: None, is_causal: causal }
}

/// Upper-triangular "masked" matrix for causal attention, bottom-right aligned like burn's
/// own causal option (identical to top-left when sq == sk, which is all the bench uses).
fn causal_mask(sq: usize, sk: usize, device: &Device) -> Tensor<2, Bool> {
    let off = sk as i64 - sq as i64;
    let mut m = vec![false; sq * sk];
    for i in 0..sq {
        for j in 0..sk {
            m[i * sk + j] = (j as i64) > (i as i64) + off;
        }
    }
    Tensor::<2, Bool>::from_data(TensorData::new(m, [sq, sk]), device)
}

fn unfused(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: Option<&Tensor<4, Bool>>,
    scale: f64,
) -> Tensor<4> {
    let mut s = q.matmul(k.swap_dims(2, 3)) * scale;
    if let Some(m) = mask {
        s = s.mask_fill(m.clone(), f32::NEG_INFINITY);
    }
    softmax(s, 3).matmul(v)
}

/// Bytes of the f32 [b, h, sq, sk] score matrix the unfused path materializes.
fn scores_bytes(s: &BenchShape) -> usize {
    s.b * s.h * s.sq * s.sk * 4
}

/// The most specific line of a burn execution error ("can't allocate buffer of size: ...").
fn short_err(e: &str) -> String {
    e.lines()
        .map(|l| l.trim().trim_end_matches(')'))
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with("Caused by")
                && !l.starts_with("No backtrace")
                && !l.starts_with("Asked at")
                && !l.starts_with("skipped")
                && !l.starts_with('(')
        })
        .last()
        .unwrap_or(e)
        .to_string()
}

/// Fused vs unfused on one bench shape (fresh random inputs): (max |fused - unfused|, max |unfused|).
fn check_shape(device: &Device, s: &BenchShape) -> Result<(f32, f32), String> {
    let dist = Distribution::Normal(0.0, 1.0);
    let q = Tensor::<4>::random([s.b, s.h, s.sq, s.d], dist, device);
    let k = Tensor::<4>::random([s.b, s.h, s.sk, s.d], dist, device);
    let v = Tensor::<4>::random([s.b, s.h, s.sk, s.d], dist, device);
    let mask = s
        .causal
        .then(|| causal_mask(s.sq, s.sk, device).unsqueeze::<4>().expand([s.b, s.h, s.sq, s.sk]));
    let a = attention(q.clone(), k.clone(), v.clone(), None, None, opts(s.causal, None));
    let r = unfused(q, k, v, mask.as_ref(), 1.0 / (s.d as f64).sqrt());
    let ref_max: f32 = r.clone().abs().max().try_into_scalar().map_err(|e| short_err(&format!("{e:?}")))?;
    let err: f32 = (a - r).abs().max().try_into_scalar().map_err(|e| short_err(&format!("{e:?}")))?;
    Ok((err, ref_max))
}

fn flops(s: &BenchShape) -> f64 {
    let f = 4.0 * (s.b * s.h * s.sq * s.sk * s.d) as f64;
    if s.causal { f / 2.0 } else { f }
}

#[allow(clippy::too_many_arguments)]
fn bench_one(
    device: &Device,
    s: &BenchShape,
    imp: Impl,
    sync: SyncMode,
    min_runs: usize,
    target_s: f64,
    dtype: FloatDType,
) -> Result<(f64, f64, usize, f64), String> {
    let dist = Distribution::Normal(0.0, 1.0);
    let q = Tensor::<4>::random([s.b, s.h, s.sq, s.d], dist, device).cast(dtype);
    let k = Tensor::<4>::random([s.b, s.h, s.sk, s.d], dist, device).cast(dtype);
    let v = Tensor::<4>::random([s.b, s.h, s.sk, s.d], dist, device).cast(dtype);
    let mask = if s.causal && imp == Impl::Unfused {
        Some(causal_mask(s.sq, s.sk, device).unsqueeze::<4>().expand([s.b, s.h, s.sq, s.sk]))
    } else {
        None
    };
    let scale = 1.0 / (s.d as f64).sqrt();
    device.sync().expect("sync");

    let run = || -> Duration {
        let t0 = Instant::now();
        let out = match imp {
            Impl::Fused => attention(q.clone(), k.clone(), v.clone(), None, None, opts(s.causal, None)),
            Impl::Unfused => unfused(q.clone(), k.clone(), v.clone(), mask.as_ref(), scale),
        };
        match sync {
            SyncMode::Device => {
                device.sync().expect("sync");
                let dt = t0.elapsed();
                drop(out);
                dt
            }
            SyncMode::Readback => {
                let data = out.cast(FloatDType::F32).into_data();
                let dt = t0.elapsed();
                let x: &[f32] = data.as_slice().expect("f32");
                assert!(x[0].is_finite());
                dt
            }
        }
    };

    // warm-up: the first call compiles shaders and runs autotune
    let first = run().as_secs_f64();
    let est = run().as_secs_f64();
    let n = min_runs.max(((target_s / est.max(1e-6)) as usize).min(200));
    let mut times: Vec<f64> = (0..n).map(|_| run().as_secs_f64()).collect();
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let med = if n % 2 == 1 { times[n / 2] } else { 0.5 * (times[n / 2 - 1] + times[n / 2]) };
    // device.sync() does not report a failed allocation (the kernels are just skipped), so read
    // one more output back and make sure it exists and is finite.
    let out = match imp {
        Impl::Fused => attention(q.clone(), k.clone(), v.clone(), None, None, opts(s.causal, None)),
        Impl::Unfused => unfused(q.clone(), k.clone(), v.clone(), mask.as_ref(), scale),
    };
    let data = out.cast(FloatDType::F32).try_into_data().map_err(|e| short_err(&format!("{e:?}")))?;
    let x: &[f32] = data.as_slice().expect("f32");
    if !x.iter().all(|v| v.is_finite()) {
        return Err("non-finite output".into());
    }
    Ok((med, times[0], n, first))
}

/// Max |fused - reference| on a small problem, to make sure the op is not skipped.
fn sanity(device: &Device) {
    for causal in [false, true] {
        let dist = Distribution::Normal(0.0, 1.0);
        let (b, h, s, d) = (1, 2, 70, 64);
        let q = Tensor::<4>::random([b, h, s, d], dist, device);
        let k = Tensor::<4>::random([b, h, s, d], dist, device);
        let v = Tensor::<4>::random([b, h, s, d], dist, device);
        let mask = causal.then(|| causal_mask(s, s, device).unsqueeze::<4>().expand([b, h, s, s]));
        let a = attention(q.clone(), k.clone(), v.clone(), None, None, opts(causal, None));
        let r = unfused(q, k, v, mask.as_ref(), 1.0 / (d as f64).sqrt());
        let err: f32 = (a - r).abs().max().into_scalar();
        println!("sanity: fused vs unfused (1x2x70x64, causal={causal}): max abs diff {err:.3e}");
        assert!(err < 1e-3, "fused attention disagrees with unfused reference");
    }
}

fn cmd_bench(args: &[String]) {
    let mut imps = vec![Impl::Fused, Impl::Unfused];
    let mut min_runs = 5usize;
    let mut target_s = 1.0f64;
    let mut sync = SyncMode::Device;
    let mut only: Option<String> = None;
    let mut unfused_max_scores_mib: Option<usize> = None;
    let mut check = false;
    let mut dtype = FloatDType::F32;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--dtype" => {
                i += 1;
                dtype = match args[i].as_str() {
                    "f32" => FloatDType::F32,
                    "f16" => FloatDType::F16,
                    x => panic!("bad --dtype {x}"),
                }
            }
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
            "--unfused-max-scores-mib" => { i += 1; unfused_max_scores_mib = Some(args[i].parse().unwrap()) }
            "--check" => check = true,
            "--sync" => {
                i += 1;
                sync = match args[i].as_str() {
                    "device" => SyncMode::Device,
                    "readback" => SyncMode::Readback,
                    x => panic!("bad --sync {x}"),
                }
            }
            x => panic!("unknown argument {x}"),
        }
        i += 1;
    }
    let device = Device::wgpu(DeviceKind::DefaultDevice);
    println!("device: {device:?}");
    print_adapter(&device);
    sanity(&device);
    let sync_name = if sync == SyncMode::Device { "device.sync()" } else { "full readback" };
    for imp in imps {
        let name = if imp == Impl::Fused {
            "burn::tensor::module::attention (fused op, autotuned)"
        } else {
            "burn tensor ops: matmul -> mask_fill -> softmax -> matmul"
        };
        println!("\n{name}; {dtype:?} inputs; timing ends with {sync_name}");
        println!(
            "| {:30} | {:>10} | {:>10} | {:>8} | {:>4} | {:>9} |",
            "shape (B x H x S x D)", "median ms", "min ms", "GFLOP/s", "runs", "1st call s"
        );
        println!("|{}|{}|{}|{}|{}|{}|", "-".repeat(32), "-".repeat(12), "-".repeat(12), "-".repeat(10), "-".repeat(6), "-".repeat(11));
        for s in SHAPES {
            if let Some(o) = &only {
                if !s.label.contains(o.as_str()) {
                    continue;
                }
            }
            let mib = scores_bytes(s) as f64 / (1u64 << 20) as f64;
            if imp == Impl::Unfused && unfused_max_scores_mib.is_some_and(|m| mib > m as f64) {
                println!(
                    "| {:30} | skipped: f32 scores {mib:.0} MiB > --unfused-max-scores-mib {} |",
                    s.label,
                    unfused_max_scores_mib.unwrap()
                );
                continue;
            }
            let (med, min, n, first) = match bench_one(&device, s, imp, sync, min_runs, target_s, dtype) {
                Ok(r) => r,
                Err(e) => {
                    println!("| {:30} | FAILED (timings discarded): {e} |", s.label);
                    continue;
                }
            };
            println!(
                "| {:30} | {:10.3} | {:10.3} | {:8.2} | {:4} | {:9.2} |",
                s.label,
                med * 1e3,
                min * 1e3,
                flops(s) / med / 1e9,
                n,
                first
            );
        }
    }
    if check {
        // After the tables, so the "1st call s" column above still includes autotune.
        println!("\ncheck: fused vs unfused on each bench shape (fresh random inputs, one call each)");
        for s in SHAPES {
            if let Some(o) = &only {
                if !s.label.contains(o.as_str()) {
                    continue;
                }
            }
            let mib = scores_bytes(s) as f64 / (1u64 << 20) as f64;
            if unfused_max_scores_mib.is_some_and(|m| mib > m as f64) {
                println!("check {:30}: skipped (unfused scores {mib:.0} MiB over the limit)", s.label);
                continue;
            }
            match check_shape(&device, s) {
                Ok((err, ref_max)) => println!(
                    "check {:30}: max |fused - unfused| {err:.3e}  (max |unfused| {ref_max:.3e})",
                    s.label
                ),
                Err(e) => println!("check {:30}: FAILED: {e}", s.label),
            }
        }
    }
}

// ---------------------------------------------------------------- cases mode

fn f32s(view: &safetensors::tensor::TensorView) -> Vec<f32> {
    assert_eq!(view.dtype(), safetensors::Dtype::F32);
    view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// [a, b, c, d] -> [a, c, b, d]
fn swap12(x: &[f32], s: [usize; 4]) -> Vec<f32> {
    let [a, b, c, d] = s;
    let mut y = vec![0f32; x.len()];
    for i in 0..a {
        for j in 0..b {
            for k in 0..c {
                let src = ((i * b + j) * c + k) * d;
                let dst = ((i * c + k) * b + j) * d;
                y[dst..dst + d].copy_from_slice(&x[src..src + d]);
            }
        }
    }
    y
}

/// `burn_causal`: pass every causal case to burn as `is_causal` (burn's own, bottom-right
/// aligned causal mask) instead of an explicit top-left mask; only to show where the two differ.
fn cmd_cases(case_dir: &Path, out_dir: &Path, burn_causal: bool) {
    std::fs::create_dir_all(out_dir).unwrap();
    let device = Device::wgpu(DeviceKind::DefaultDevice);
    println!("device: {device:?}");
    print_adapter(&device);
    let mut paths: Vec<_> = std::fs::read_dir(case_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    paths.sort();
    for path in paths {
        let bytes = std::fs::read(&path).unwrap();
        let (_, md) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let meta: HashMap<String, String> = md.metadata().clone().unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let g = |k: &str| meta[k].clone();
        let u = |k: &str| g(k).parse::<usize>().unwrap();
        let (b, hq, hkv, sq, sk, d) =
            (u("batch"), u("num_q_heads"), u("num_kv_heads"), u("seq_q"), u("seq_k"), u("head_dim"));
        let bshd = g("layout") == "bshd";
        let causal = g("causal") == "true";
        assert_eq!(g("causal_align"), "top_left");
        let scale: f64 = g("scale").parse().unwrap();
        let kv_lens: Vec<usize> = if g("kv_lens").is_empty() {
            vec![]
        } else {
            g("kv_lens").split(',').map(|x| x.parse().unwrap()).collect()
        };
        let load = |name: &str, h: usize, s: usize| -> Vec<f32> {
            let x = f32s(&st.tensor(name).unwrap());
            if bshd { swap12(&x, [b, s, h, d]) } else { x }
        };
        let q = load("q", hq, sq);
        // GQA / MQA: replicate kv heads on the host (q head h uses kv head h / (hq/hkv));
        // burn's attention op takes equal head counts.
        let expand = |x: Vec<f32>| -> Vec<f32> {
            let grp = hq / hkv;
            let mut y = Vec::with_capacity(b * hq * sk * d);
            for bi in 0..b {
                for h in 0..hq {
                    let src = (bi * hkv + h / grp) * sk * d;
                    y.extend_from_slice(&x[src..src + sk * d]);
                }
            }
            y
        };
        let k = expand(load("k", hkv, sk));
        let v = expand(load("v", hkv, sk));
        let qt = Tensor::<4>::from_data(TensorData::new(q, [b, hq, sq, d]), &device);
        let kt = Tensor::<4>::from_data(TensorData::new(k, [b, hq, sk, d]), &device);
        let vt = Tensor::<4>::from_data(TensorData::new(v, [b, hq, sk, d]), &device);
        // burn's is_causal is bottom-right aligned; the cases are top-left. Use burn's flag
        // only where the two agree (sq == sk, no padding); otherwise pass an explicit mask.
        let use_flag = causal && (burn_causal || (sq == sk && kv_lens.is_empty()));
        let mask = if (causal && !use_flag) || !kv_lens.is_empty() {
            let mut m = vec![false; b * hq * sq * sk];
            for bi in 0..b {
                for h in 0..hq {
                    for i in 0..sq {
                        for j in 0..sk {
                            let masked = (causal && !use_flag && j > i)
                                || (!kv_lens.is_empty() && j >= kv_lens[bi]);
                            m[((bi * hq + h) * sq + i) * sk + j] = masked;
                        }
                    }
                }
            }
            Some(Tensor::<4, Bool>::from_data(TensorData::new(m, [b, hq, sq, sk]), &device))
        } else {
            None
        };
        let default_scale = 1.0 / (d as f64).sqrt();
        let sc = if (scale - default_scale).abs() > 1e-9 * default_scale { Some(scale) } else { None };
        let out = attention(qt, kt, vt, mask, None, opts(use_flag, sc));
        let data = out.into_data();
        let mut o: Vec<f32> = data.as_slice::<f32>().unwrap().to_vec();
        if bshd {
            o = swap12(&o, [b, hq, sq, d]);
        }
        let shape = if bshd { vec![b, sq, hq, d] } else { vec![b, hq, sq, d] };
        let raw: Vec<u8> = o.iter().flat_map(|x| x.to_le_bytes()).collect();
        let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, &raw).unwrap();
        let name = path.file_name().unwrap();
        safetensors::serialize_to_file([("out", view)], None, &out_dir.join(name)).unwrap();
        println!(
            "{:40} mask={} causal_flag={} scale={}",
            name.to_string_lossy(),
            if mask_desc(causal, use_flag, &kv_lens) { "explicit" } else { "none" },
            use_flag,
            if sc.is_some() { "custom" } else { "default" }
        );
    }
}

fn mask_desc(causal: bool, use_flag: bool, kv_lens: &[usize]) -> bool {
    (causal && !use_flag) || !kv_lens.is_empty()
}

fn main() {
    // Mesa's loader prints "XDG_RUNTIME_DIR is invalid or not set" once per ICD otherwise.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        let dir = std::env::temp_dir().join("burn-attn-xdg");
        if std::fs::create_dir_all(&dir).is_ok() {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
            }
            // SAFETY: single-threaded at this point (before any device or thread is created).
            unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
        }
    }
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("bench") => cmd_bench(&args[2..]),
        Some("bench-backward") => cmd_bench_backward(&args[2..]),
        Some("cases") if args.len() == 4 => cmd_cases(Path::new(&args[2]), Path::new(&args[3]), false),
        Some("cases") if args.len() == 5 && args[4] == "--burn-causal" => {
            cmd_cases(Path::new(&args[2]), Path::new(&args[3]), true)
        }
        _ => {
            eprintln!(
                "usage:\n  burn-attn bench [--impl fused|unfused|both] [--min-runs N] [--target-s S] [--sync device|readback] [--only LABEL_SUBSTR] [--unfused-max-scores-mib N] [--check] [--dtype f32|f16]\n  burn-attn bench-backward [--impl fused|unfused|both] [--min-runs N] [--target-s S] [--only LABEL_SUBSTR] [--causal] [--max-scores-mib N] [--json] [--check | --check-only]\n  burn-attn cases CASE_DIR OUT_DIR [--burn-causal]"
            );
            std::process::exit(2);
        }
    }
}
