//! The multi-head attention layer and its kernels against the f64 layer reference: every
//! positional encoding, GQA, cross-attention, packed projections, both layouts, the
//! attention options, odd sizes, f16 storage, and typed errors.

use wgattn::layer::{
    self, LayerNorm, Linear, LinearOptions, LinearWeights, MhaConfig, MhaInputs, MhaWeights,
    MultiHeadAttention, PositionEncoding, QkvWeights, Rope, RopePairing,
};
use wgattn::testdata::Rng;
use wgattn::{Broadcast, CausalAlign, DType, Error, ErrorStats, Kernel, Layout};

use crate::common;

fn normals(rng: &mut Rng, n: usize, std: f64) -> Vec<f32> {
    rng.normals(n, 0.0, std)
}

fn lin(rng: &mut Rng, out: usize, inp: usize, bias: bool) -> LinearWeights {
    let std = 1.0 / (inp as f64).sqrt();
    LinearWeights::new(
        out,
        inp,
        normals(rng, out * inp, std),
        bias.then(|| normals(rng, out, 0.5)),
    )
}

fn weights(rng: &mut Rng, c: &MhaConfig, packed: bool, bias: bool) -> MhaWeights {
    let (e, ekv, nq, nkv) = (c.embed_dim, c.kv_input_dim(), c.q_dim(), c.kv_dim());
    let qkv = if packed {
        QkvWeights::Packed(lin(rng, nq + 2 * nkv, e, bias))
    } else {
        QkvWeights::Separate {
            q: lin(rng, nq, e, bias),
            k: lin(rng, nkv, ekv, false),
            v: lin(rng, nkv, ekv, bias),
        }
    };
    let positions = match c.position {
        PositionEncoding::Learned { max_positions } => Some(normals(rng, max_positions * e, 0.5)),
        _ => None,
    };
    MhaWeights {
        qkv,
        o: lin(rng, e, nq, bias),
        positions,
    }
}

/// What one grid case runs.
#[derive(Clone)]
struct Case {
    name: &'static str,
    config: MhaConfig,
    batch: usize,
    seq: usize,
    seq_kv: usize,
    packed: bool,
    spec: fn(wgattn::AttentionSpec) -> wgattn::AttentionSpec,
    start: Vec<u32>,
}

fn run_case(ctx: &wgattn::Context, case: &Case, seed: u64, tol: f64) -> (f64, Option<f64>) {
    let mut rng = Rng::new(seed);
    let c = &case.config;
    let w = weights(&mut rng, c, case.packed, true);
    let mha = MultiHeadAttention::new(ctx, c, &w).unwrap_or_else(|e| panic!("{}: {e}", case.name));
    let spec = (case.spec)(mha.attention_spec(case.batch, case.seq, case.seq_kv));
    let x = normals(&mut rng, case.batch * case.seq * c.embed_dim, 1.0);
    let memory = c
        .kv_embed_dim
        .map(|ekv| normals(&mut rng, case.batch * case.seq_kv * ekv, 1.0));
    let bias = spec.bias.map(|b| normals(&mut rng, b.len(&spec), 1.0));
    let mask = spec.mask.map(|m| {
        (0..m.len(&spec))
            .map(|_| rng.uniform() > 0.3)
            .collect::<Vec<bool>>()
    });
    let mut inputs = MhaInputs::new(&x);
    inputs.memory = memory.as_deref();
    inputs.bias = bias.as_deref();
    inputs.mask = mask.as_deref();
    let gpu = mha
        .forward_at(ctx, &spec, &inputs, &case.start)
        .unwrap_or_else(|e| panic!("{}: {e}", case.name));
    let cpu = layer::reference::mha(c, &w, &spec, &inputs, &case.start).expect("reference");
    assert_eq!(gpu.out.len(), cpu.out.len());
    let err = ErrorStats::compare(&gpu.out, &cpu.out);
    assert_eq!(err.nan_count, 0, "{}: NaN in the output", case.name);
    assert!(
        err.rel_fro <= tol,
        "{}: relative Frobenius error {:.3e} > {tol:.0e} (max abs {:.3e})",
        case.name,
        err.rel_fro,
        err.max_abs
    );
    let werr = match (&gpu.weights, &cpu.weights) {
        (Some(g), Some(r)) => {
            let e = ErrorStats::compare(g, r);
            assert!(
                e.rel_fro <= tol,
                "{}: weights error {:.3e}",
                case.name,
                e.rel_fro
            );
            Some(e.rel_fro)
        }
        (None, None) => None,
        _ => panic!("{}: weights returned on one side only", case.name),
    };
    (err.rel_fro, werr)
}

fn cases() -> Vec<Case> {
    let rope = |p: RopePairing| PositionEncoding::Rotary(Rope::new().pairing(p).max_positions(300));
    let plain: fn(wgattn::AttentionSpec) -> wgattn::AttentionSpec = |s| s;
    vec![
        Case {
            name: "plain, odd sizes (E 33, 3 heads of 11), no PE",
            config: MhaConfig::new(33, 3),
            batch: 2,
            seq: 7,
            seq_kv: 7,
            packed: false,
            spec: plain,
            start: vec![0, 0],
        },
        Case {
            name: "sinusoidal PE, residual, causal, seq 33",
            config: MhaConfig::new(32, 4)
                .position(PositionEncoding::Sinusoidal { max_positions: 64 })
                .residual(true),
            batch: 1,
            seq: 33,
            seq_kv: 33,
            packed: false,
            spec: |s| s.causal(CausalAlign::TopLeft),
            start: vec![0],
        },
        Case {
            name: "learned absolute PE, start positions, packed qkv, kv_lens",
            config: MhaConfig::new(24, 2)
                .position(PositionEncoding::Learned { max_positions: 40 })
                .residual(true),
            batch: 3,
            seq: 7,
            seq_kv: 7,
            packed: true,
            spec: |s| s.kv_lens(vec![7, 1, 4]),
            start: vec![0, 5, 33],
        },
        Case {
            name: "rope rotate-half, GQA 4×2, bottom-right causal, positions 100+",
            config: MhaConfig::new(64, 4)
                .kv_heads(2)
                .position(rope(RopePairing::Half)),
            batch: 2,
            seq: 33,
            seq_kv: 33,
            packed: false,
            spec: |s| s.causal(CausalAlign::BottomRight),
            start: vec![100, 257],
        },
        Case {
            name: "rope interleaved, MQA 6×1, head_dim 10 ≠ E/H, bshd, window",
            config: MhaConfig::new(40, 6)
                .kv_heads(1)
                .head_dim(10)
                .layout(Layout::Bshd)
                .position(rope(RopePairing::Interleaved)),
            batch: 2,
            seq: 17,
            seq_kv: 17,
            packed: true,
            spec: |s| s.window(4, 0),
            start: vec![3, 0],
        },
        Case {
            name: "partial rope (8 of 16 dims), base 500, alibi + softcap",
            config: MhaConfig::new(32, 2).position(PositionEncoding::Rotary(
                Rope::new().dims(8).base(500.0).max_positions(64),
            )),
            batch: 1,
            seq: 20,
            seq_kv: 20,
            packed: false,
            spec: |s| s.alibi(wgattn::Alibi::Standard).softcap(20.0),
            start: vec![1],
        },
        Case {
            name: "cross-attention (E 48, memory 20 wide, S 7, S_kv 100), mask + bias, weights",
            config: MhaConfig::new(48, 4).cross(20).kv_heads(2).residual(true),
            batch: 2,
            seq: 7,
            seq_kv: 100,
            packed: false,
            spec: |s| {
                s.mask(Broadcast::FULL)
                    .bias(Broadcast {
                        per_batch: false,
                        per_head: true,
                    })
                    .with_weights(true)
            },
            start: vec![0, 0],
        },
        Case {
            name: "cross-attention with sinusoidal PE on the queries, seq 1, flash",
            config: MhaConfig::new(16, 2)
                .cross(16)
                .position(PositionEncoding::Sinusoidal { max_positions: 16 }),
            batch: 3,
            seq: 1,
            seq_kv: 33,
            packed: true,
            spec: |s| s.kernel(Kernel::Flash),
            start: vec![0, 7, 15],
        },
        Case {
            name: "split-kv decoding shape, rope, GQA",
            config: MhaConfig::new(64, 8)
                .kv_heads(2)
                .position(rope(RopePairing::Half)),
            batch: 1,
            seq: 257,
            seq_kv: 257,
            packed: false,
            spec: |s| s.causal(CausalAlign::BottomRight).kernel(Kernel::ThreePass),
            start: vec![0],
        },
    ]
}

#[test]
fn layer_matches_the_f64_reference_on_a_grid() {
    let Some(ctx) = common::ctx() else { return };
    for (n, case) in cases().into_iter().enumerate() {
        // Both projection variants (workgroup-memory tiles and direct loads) on every case.
        for tiled in [Some(true), Some(false)] {
            let case = Case {
                config: case.config.clone().tiled_projections(tiled),
                ..case.clone()
            };
            let (out, w) = run_case(ctx, &case, 100 + n as u64, 1e-5);
            eprintln!(
                "{} (tiled {tiled:?}): out {out:.2e}, weights {w:?}",
                case.name
            );
        }
    }
}

#[test]
fn f16_layer_is_close_to_the_reference() {
    let Some(ctx) = common::ctx() else { return };
    for case in cases().into_iter().filter(|c| c.config.head_dim % 4 == 0) {
        let case = Case {
            config: case.config.clone().dtype(DType::F16),
            ..case
        };
        let (out, _) = run_case(ctx, &case, 7, 2e-2);
        eprintln!("f16 {}: out {out:.2e}", case.name);
    }
}

#[test]
fn large_logits_stay_finite() {
    let Some(ctx) = common::ctx() else { return };
    // Inputs of std 30 give logits of order 1e3.
    let mut rng = Rng::new(5);
    let c = MhaConfig::new(32, 2).residual(true);
    let w = weights(&mut rng, &c, false, true);
    let mha = MultiHeadAttention::new(ctx, &c, &w).unwrap();
    let spec = mha.attention_spec(1, 33, 33).causal(CausalAlign::TopLeft);
    let x = normals(&mut rng, 33 * 32, 30.0);
    let gpu = mha.forward(ctx, &spec, &MhaInputs::new(&x)).unwrap();
    let cpu = layer::reference::mha(&c, &w, &spec, &MhaInputs::new(&x), &[0]).unwrap();
    let err = ErrorStats::compare(&gpu.out, &cpu.out);
    assert_eq!(err.nan_count, 0);
    assert!(err.rel_fro <= 1e-4, "{err:?}");
}

#[test]
fn fully_masked_rows_give_the_projection_of_zero() {
    let Some(ctx) = common::ctx() else { return };
    let mut rng = Rng::new(6);
    let c = MhaConfig::new(16, 2);
    let w = weights(&mut rng, &c, false, true);
    let mha = MultiHeadAttention::new(ctx, &c, &w).unwrap();
    let spec = mha.attention_spec(2, 5, 5).kv_lens(vec![0, 5]);
    let x = normals(&mut rng, 2 * 5 * 16, 1.0);
    let gpu = mha.forward(ctx, &spec, &MhaInputs::new(&x)).unwrap();
    // attention output 0 → out = b_o for every row of batch entry 0
    let bo = w.o.bias.as_ref().unwrap();
    for row in gpu.out[..5 * 16].chunks(16) {
        for (a, b) in row.iter().zip(bo) {
            assert!((a - b).abs() <= 1e-6, "{a} vs {b}");
        }
    }
    let cpu = layer::reference::mha(&c, &w, &spec, &MhaInputs::new(&x), &[0, 0]).unwrap();
    assert!(ErrorStats::compare(&gpu.out, &cpu.out).within(1e-5));
}

/// The projection kernel alone on odd shapes, both tile heights, f32 and f16, with GELU and
/// a residual.
#[test]
fn linear_kernel_matches_f64() {
    let Some(ctx) = common::ctx() else { return };
    let mut rng = Rng::new(9);
    for &(rows, n, k) in &[
        (1, 1, 1),
        (7, 7, 33),
        (33, 65, 7),
        (100, 64, 100),
        (257, 130, 16),
    ] {
        for dtype in [DType::F32, DType::F16] {
            if dtype == DType::F16 && n % 2 != 0 {
                continue;
            }
            for opts in [
                LinearOptions::default(),
                LinearOptions {
                    gelu: true,
                    residual: false,
                    tiled: Some(true),
                },
                LinearOptions {
                    gelu: false,
                    residual: true,
                    tiled: Some(false),
                },
                LinearOptions {
                    gelu: true,
                    residual: true,
                    tiled: Some(true),
                },
            ] {
                let w = lin(&mut rng, n, k, true);
                let x = normals(&mut rng, rows * k, 1.0);
                let r = normals(&mut rng, rows * n, 1.0);
                let lin_gpu = Linear::new(ctx, "w", &w, dtype).unwrap();
                let pass = lin_gpu.prepare(ctx, rows, opts).unwrap();
                let got = run_linear(ctx, &pass, &x, &r, rows * n, dtype, opts.residual);
                let round = |v: &[f32]| -> Vec<f64> {
                    v.iter()
                        .map(|&a| match dtype {
                            DType::F32 => a as f64,
                            DType::F16 => half::f16::from_f32(a).to_f64(),
                        })
                        .collect()
                };
                let wr = LinearWeights::new(
                    n,
                    k,
                    round(&w.weight).iter().map(|&v| v as f32).collect(),
                    w.bias.clone(),
                );
                let mut want = layer::reference::linear(&round(&x), rows, &wr);
                let rr = round(&r);
                for (i, v) in want.iter_mut().enumerate() {
                    if opts.gelu {
                        *v = 0.5 * *v * (1.0 + erf(*v / 2f64.sqrt()));
                    }
                    if opts.residual {
                        *v += rr[i];
                    }
                }
                let want: Vec<f32> = want.iter().map(|&v| v as f32).collect();
                let err = ErrorStats::compare(&got, &want);
                let tol = match dtype {
                    DType::F32 => 1e-5,
                    DType::F16 => 2e-3,
                };
                assert!(
                    err.rel_fro <= tol && err.nan_count == 0,
                    "rows {rows} n {n} k {k} {dtype:?} {opts:?}: {err:?}"
                );
            }
        }
    }
}

fn run_linear(
    ctx: &wgattn::Context,
    pass: &layer::LinearPass,
    x: &[f32],
    r: &[f32],
    out_len: usize,
    dtype: DType,
    residual: bool,
) -> Vec<f32> {
    let xb = upload(ctx, x, dtype);
    let rb = upload(ctx, r, dtype);
    let yb = output(ctx, out_len * 4);
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    pass.encode(ctx.device(), &mut enc, &xb, &yb, residual.then_some(&rb))
        .unwrap();
    ctx.queue().submit([enc.finish()]);
    read(ctx, &yb, out_len, dtype)
}

fn upload(ctx: &wgattn::Context, v: &[f32], dtype: DType) -> wgpu::Buffer {
    use wgpu::util::DeviceExt;
    let mut bytes: Vec<u8> = match dtype {
        DType::F32 => bytemuck::cast_slice(v).to_vec(),
        DType::F16 => v
            .iter()
            .flat_map(|&a| half::f16::from_f32(a).to_le_bytes())
            .collect(),
    };
    bytes.resize(bytes.len().next_multiple_of(4).max(4), 0);
    ctx.device()
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: &bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        })
}

fn output(ctx: &wgattn::Context, bytes: usize) -> wgpu::Buffer {
    ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: bytes.max(4) as u64,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    })
}

fn read(ctx: &wgattn::Context, b: &wgpu::Buffer, n: usize, dtype: DType) -> Vec<f32> {
    let bytes = (n * dtype.size()).next_multiple_of(4) as u64;
    let staging = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: bytes,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    enc.copy_buffer_to_buffer(b, 0, &staging, 0, bytes);
    ctx.queue().submit([enc.finish()]);
    let slice = staging.slice(..);
    slice.map_async(wgpu::MapMode::Read, |r| r.unwrap());
    ctx.device()
        .poll(wgpu::PollType::wait_indefinitely())
        .unwrap();
    let data = slice.get_mapped_range().unwrap().to_vec();
    match dtype {
        DType::F32 => bytemuck::pod_collect_to_vec::<u8, f32>(&data)[..n].to_vec(),
        DType::F16 => data
            .chunks_exact(2)
            .take(n)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
    }
}

/// erf in f64 (Abramowitz & Stegun 7.1.26 is not enough here): the series / continued
/// fraction via libm-quality `erfc` approximation of W. J. Cody is overkill; a 1e-15 series
/// for |x| < 3 and 1 beyond is exact to f32 for GELU's purposes.
fn erf(x: f64) -> f64 {
    if x.abs() > 6.0 {
        return x.signum();
    }
    // Maclaurin series, converges for all x; terms stay small for |x| ≤ 6 in f64.
    let mut sum = 0f64;
    let mut term = x;
    let mut n = 0.0;
    while term.abs() > 1e-17 * sum.abs().max(1e-300) || n < 3.0 {
        sum += term / (2.0 * n + 1.0);
        n += 1.0;
        term *= -x * x / n;
        if n > 200.0 {
            break;
        }
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

#[test]
fn layer_norm_matches_f64() {
    let Some(ctx) = common::ctx() else { return };
    let mut rng = Rng::new(11);
    for &(rows, n) in &[(1, 2), (7, 384), (33, 130), (3, 1000)] {
        for dtype in [DType::F32, DType::F16] {
            let x = normals(&mut rng, rows * n, 3.0);
            let g = normals(&mut rng, n, 1.0);
            let b = normals(&mut rng, n, 1.0);
            let ln = LayerNorm::new(ctx, "ln", &g, &b, 1e-12).unwrap();
            let pass = ln.prepare(ctx, rows, dtype).unwrap();
            let xb = upload(ctx, &x, dtype);
            let yb = output(ctx, rows * n * 4);
            let mut enc = ctx.device().create_command_encoder(&Default::default());
            pass.encode(ctx.device(), &mut enc, &xb, &yb).unwrap();
            ctx.queue().submit([enc.finish()]);
            let got = read(ctx, &yb, rows * n, dtype);
            let mut want = vec![0f32; rows * n];
            for r in 0..rows {
                let xr: Vec<f64> = x[r * n..(r + 1) * n]
                    .iter()
                    .map(|&v| match dtype {
                        DType::F32 => v as f64,
                        DType::F16 => half::f16::from_f32(v).to_f64(),
                    })
                    .collect();
                let mean = xr.iter().sum::<f64>() / n as f64;
                let var = xr.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
                for i in 0..n {
                    want[r * n + i] =
                        ((xr[i] - mean) / (var + 1e-12).sqrt() * g[i] as f64 + b[i] as f64) as f32;
                }
            }
            let err = ErrorStats::compare(&got, &want);
            let tol = if dtype == DType::F32 { 1e-5 } else { 2e-3 };
            assert!(err.rel_fro <= tol, "rows {rows} n {n} {dtype:?}: {err:?}");
        }
    }
}

#[test]
fn bad_configs_and_weights_are_typed_errors() {
    let Some(ctx) = common::ctx() else { return };
    let mut rng = Rng::new(3);
    let c = MhaConfig::new(32, 4);
    let mut w = weights(&mut rng, &c, false, true);
    if let QkvWeights::Separate { k, .. } = &mut w.qkv {
        *k = lin(&mut rng, 31, 32, false);
    }
    match MultiHeadAttention::new(ctx, &c, &w) {
        Err(Error::Weight { tensor, problem }) => {
            assert_eq!(tensor, "k");
            assert!(problem.contains("[31, 32]"), "{problem}");
        }
        other => panic!("expected a weight error, got {other:?}"),
    }
    assert!(matches!(
        MultiHeadAttention::new(ctx, &MhaConfig::new(32, 4).kv_heads(3), &w),
        Err(Error::InvalidLayer { .. })
    ));
    let odd_rope = MhaConfig::new(28, 4).position(PositionEncoding::Rotary(Rope::new()));
    assert!(matches!(
        odd_rope.validate(),
        Err(Error::InvalidLayer { field, .. }) if field == "rope.dims"
    ));
    let w = weights(&mut rng, &c, false, true);
    let mha = MultiHeadAttention::new(ctx, &c, &w).unwrap();
    // A spec of another shape.
    let spec = wgattn::AttentionSpec::new(1, 2, 2, 4, 4, 16);
    assert!(matches!(
        mha.plan(ctx, &spec),
        Err(Error::InvalidLayer { .. })
    ));
    let x = vec![0.0; 3];
    assert!(matches!(
        mha.forward(ctx, &mha.attention_spec(1, 4, 4), &MhaInputs::new(&x)),
        Err(Error::InputLength { tensor: "x", .. })
    ));
    let x = vec![f32::NAN; 4 * 32];
    assert!(matches!(
        mha.forward(ctx, &mha.attention_spec(1, 4, 4), &MhaInputs::new(&x)),
        Err(Error::NonFinite { tensor: "x", .. })
    ));
    // Positions beyond a sinusoidal table.
    let c = MhaConfig::new(8, 2).position(PositionEncoding::Sinusoidal { max_positions: 4 });
    let w = weights(&mut rng, &c, false, true);
    let mha = MultiHeadAttention::new(ctx, &c, &w).unwrap();
    assert!(matches!(
        mha.plan(ctx, &mha.attention_spec(1, 5, 5)),
        Err(Error::InvalidLayer { field, .. }) if field == "positions"
    ));
}

/// Rows `rows` of every batch entry of a `[B, S, E]` tensor.
fn rows_of(
    x: &[f32],
    batch: usize,
    seq: usize,
    e: usize,
    rows: std::ops::Range<usize>,
) -> Vec<f32> {
    let mut out = Vec::new();
    for b in 0..batch {
        out.extend_from_slice(&x[(b * seq + rows.start) * e..(b * seq + rows.end) * e]);
    }
    out
}

/// Cached decoding (a prompt, then steps of 1 and 3 tokens, through a cache that must grow
/// once) gives the rows of the full causal recomputation; steps within the capacity keep
/// the cache's buffers.
#[test]
fn cache_decoding_equals_full_recomputation() {
    let Some(ctx) = common::ctx() else { return };
    for (n, (config, kernel)) in [
        (
            MhaConfig::new(32, 4)
                .kv_heads(2)
                .position(PositionEncoding::Rotary(Rope::new().max_positions(64)))
                .residual(true),
            Kernel::SplitKv,
        ),
        (
            MhaConfig::new(24, 3).position(PositionEncoding::Rotary(
                Rope::new()
                    .pairing(RopePairing::Interleaved)
                    .max_positions(64),
            )),
            Kernel::Auto,
        ),
        (
            MhaConfig::new(16, 2).position(PositionEncoding::Sinusoidal { max_positions: 64 }),
            Kernel::Flash,
        ),
        (
            MhaConfig::new(32, 4)
                .kv_heads(1)
                .position(PositionEncoding::Rotary(Rope::new().max_positions(64)))
                .dtype(DType::F16),
            Kernel::SplitKv,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let mut rng = Rng::new(40 + n as u64);
        let w = weights(&mut rng, &config, n == 1, true);
        let mha = MultiHeadAttention::new(ctx, &config, &w).unwrap();
        let e = config.embed_dim;
        let total = 13;
        let x = normals(&mut rng, total * e, 1.0);
        // The full sequence, causal.
        let spec = mha
            .attention_spec(1, total, total)
            .causal(CausalAlign::TopLeft);
        let full = mha.forward(ctx, &spec, &MhaInputs::new(&x)).unwrap().out;
        let mut cache = layer::KvCache::new(ctx, &mha, 1, 8).unwrap();
        let mut got = Vec::new();
        let mut at = 0;
        let mut buffers = (cache.keys().clone(), cache.allocations());
        for step in [5, 1, 1, 3, 1, 2] {
            let out = cache
                .step(ctx, &mha, &x[at * e..(at + step) * e], kernel)
                .unwrap();
            at += step;
            assert_eq!(cache.lens(), &[at as u32]);
            if at <= 8 {
                assert_eq!(
                    cache.keys(),
                    &buffers.0,
                    "a step within capacity reallocated"
                );
                assert_eq!(cache.allocations(), buffers.1);
            }
            got.extend(out.out);
            buffers = (cache.keys().clone(), cache.allocations());
        }
        assert_eq!(
            cache.allocations(),
            2,
            "the cache grows exactly once (8 → 16)"
        );
        assert_eq!(at, total);
        let err = ErrorStats::compare(&got, &full);
        // f16: both sides round q, k, v and the output to f16, in different orders.
        let tol = if config.dtype == DType::F16 {
            5e-3
        } else {
            1e-5
        };
        eprintln!(
            "cache config {n} ({}): {:.2e}",
            config.dtype.name(),
            err.rel_fro
        );
        assert!(err.rel_fro <= tol, "config {n}: {err:?}");
    }
}

/// A batch of sequences of different lengths (a shorter prompt truncated in the cache) decodes
/// each sequence as if alone.
#[test]
fn batched_cache_with_different_lengths() {
    let Some(ctx) = common::ctx() else { return };
    let config = MhaConfig::new(32, 4)
        .kv_heads(1)
        .position(PositionEncoding::Rotary(Rope::new().max_positions(64)));
    let mut rng = Rng::new(77);
    let w = weights(&mut rng, &config, false, true);
    let mha = MultiHeadAttention::new(ctx, &config, &w).unwrap();
    let e = 32;
    let prompt = 6;
    let short = 3; // sequence 1's prompt is 3 tokens, padded to 6
    let steps = [1, 2, 1];
    let new: usize = steps.iter().sum();
    let xs: Vec<Vec<f32>> = (0..2)
        .map(|_| normals(&mut rng, (prompt + new) * e, 1.0))
        .collect();
    let mut cache = layer::KvCache::fixed(ctx, &mha, 2, 16).unwrap();
    let mut first = rows_of(&xs[0], 1, prompt + new, e, 0..prompt);
    first.extend(rows_of(&xs[1], 1, prompt + new, e, 0..prompt));
    cache.step(ctx, &mha, &first, Kernel::Auto).unwrap();
    cache.truncate(1, short).unwrap();
    let mut got = [Vec::new(), Vec::new()];
    let mut at = [prompt, short];
    for t in steps {
        // Sequence 1 continues right after its short prompt: its next tokens are the ones
        // after position `short` in its own stream.
        let mut x = Vec::new();
        for b in 0..2 {
            x.extend_from_slice(&xs[b][at[b] * e..(at[b] + t) * e]);
        }
        let out = cache.step(ctx, &mha, &x, Kernel::SplitKv).unwrap();
        for b in 0..2 {
            got[b].extend_from_slice(&out.out[b * t * e..(b + 1) * t * e]);
            at[b] += t;
        }
    }
    assert_eq!(cache.lens(), &[(prompt + new) as u32, (short + new) as u32]);
    for b in 0..2 {
        let len = at[b];
        let spec = mha.attention_spec(1, len, len).causal(CausalAlign::TopLeft);
        let full = mha
            .forward(ctx, &spec, &MhaInputs::new(&xs[b][..len * e]))
            .unwrap()
            .out;
        let want = &full[(len - new) * e..];
        let err = ErrorStats::compare(&got[b], want);
        assert!(err.rel_fro <= 1e-5, "sequence {b}: {err:?}");
    }
    // A fixed cache refuses to grow.
    let too_many = normals(&mut rng, 2 * 8 * e, 1.0);
    assert!(matches!(
        cache.step(ctx, &mha, &too_many, Kernel::Auto),
        Err(Error::InvalidLayer { .. })
    ));
    assert_eq!(cache.lens(), &[(prompt + new) as u32, (short + new) as u32]);
}

/// Weights by name from safetensors files in the BERT, GPT-2 (packed, Conv1D-transposed, f16)
/// and Llama schemes load exactly what was written; missing tensors and wrong shapes are
/// typed errors naming the tensor.
#[test]
fn weights_load_by_name_for_each_scheme() {
    use layer::{NamingScheme, TensorFile, load_mha};
    use wgattn::io::{TensorOut, write_typed};
    let dir = std::env::temp_dir().join(format!("wgattn-layer-weights-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = Rng::new(12);
    let config = MhaConfig::new(16, 4).kv_heads(2);
    let (e, nq, nkv) = (16, config.q_dim(), config.kv_dim());
    let transpose = |w: &LinearWeights| -> Vec<f32> {
        let mut t = vec![0f32; w.weight.len()];
        for o in 0..w.out_features {
            for i in 0..w.in_features {
                t[i * w.out_features + o] = w.weight[o * w.in_features + i];
            }
        }
        t
    };
    let round16 =
        |v: &[f32]| -> Vec<f32> { v.iter().map(|&a| half::f16::from_f32(a).to_f32()).collect() };
    // BERT: separate, with biases, f32.
    let (q, k, v, o) = (
        lin(&mut rng, nq, e, true),
        lin(&mut rng, nkv, e, true),
        lin(&mut rng, nkv, e, true),
        lin(&mut rng, e, nq, true),
    );
    let p = "encoder.layer.2.";
    let names: Vec<String> = NamingScheme::Bert.names(p);
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    for (name, w) in names.iter().zip([&q, &k, &v, &o]) {
        tensors.push((
            format!("{name}.weight"),
            vec![w.out_features, w.in_features],
            w.weight.clone(),
        ));
        tensors.push((
            format!("{name}.bias"),
            vec![w.out_features],
            w.bias.clone().unwrap(),
        ));
    }
    let write = |file: &str, t: &[(String, Vec<usize>, Vec<f32>)], f16: bool| {
        let path = dir.join(file);
        let typed: Vec<(&str, Vec<usize>, TensorOut)> = t
            .iter()
            .map(|(n, s, d)| {
                let data = if f16 {
                    TensorOut::F16(d)
                } else {
                    TensorOut::F32(d)
                };
                (n.as_str(), s.clone(), data)
            })
            .collect();
        write_typed(&path, &typed, Default::default()).unwrap();
        TensorFile::open(&path).unwrap()
    };
    let file = write("bert.safetensors", &tensors, false);
    let loaded = load_mha(&file, NamingScheme::Bert, p, &config).unwrap();
    assert_eq!(
        loaded.qkv,
        QkvWeights::Separate {
            q: q.clone(),
            k: k.clone(),
            v: v.clone()
        }
    );
    assert_eq!(loaded.o, o);
    // A wrong shape names the tensor.
    let mut bad = tensors.clone();
    bad[2].1 = vec![nkv, e - 1];
    bad[2].2.truncate(nkv * (e - 1));
    let file = write("bad.safetensors", &bad, false);
    match load_mha(&file, NamingScheme::Bert, p, &config) {
        Err(Error::Weight { tensor, problem }) => {
            assert_eq!(tensor, "encoder.layer.2.attention.self.key.weight");
            assert!(problem.contains("[8, 15]"), "{problem}");
        }
        other => panic!("expected a weight error, got {other:?}"),
    }
    // A missing tensor names it.
    let file = write("missing.safetensors", &tensors[2..], false);
    assert!(matches!(
        load_mha(&file, NamingScheme::Bert, p, &config),
        Err(Error::Weight { tensor, .. }) if tensor == "encoder.layer.2.attention.self.query.weight"
    ));
    // GPT-2: packed c_attn and c_proj stored [in, out], in f16.
    let packed = lin(&mut rng, nq + 2 * nkv, e, true);
    let proj = lin(&mut rng, e, nq, true);
    let gpt = vec![
        (
            "h.0.attn.c_attn.weight".to_string(),
            vec![e, nq + 2 * nkv],
            transpose(&packed),
        ),
        (
            "h.0.attn.c_attn.bias".to_string(),
            vec![nq + 2 * nkv],
            packed.bias.clone().unwrap(),
        ),
        (
            "h.0.attn.c_proj.weight".to_string(),
            vec![nq, e],
            transpose(&proj),
        ),
        (
            "h.0.attn.c_proj.bias".to_string(),
            vec![e],
            proj.bias.clone().unwrap(),
        ),
    ];
    let file = write("gpt2.safetensors", &gpt, true);
    let loaded = load_mha(&file, NamingScheme::Gpt2, "h.0.", &config).unwrap();
    let QkvWeights::Packed(got) = &loaded.qkv else {
        panic!("GPT-2 loads packed")
    };
    assert_eq!(got.weight, round16(&packed.weight));
    assert_eq!(
        got.bias.as_deref(),
        Some(&round16(packed.bias.as_ref().unwrap())[..])
    );
    assert_eq!(loaded.o.weight, round16(&proj.weight));
    // The loaded GPT-2 layer runs and matches its reference.
    if let Some(ctx) = common::ctx() {
        let mha = MultiHeadAttention::new(ctx, &config, &loaded).unwrap();
        let x = normals(&mut rng, 5 * e, 1.0);
        let spec = mha.attention_spec(1, 5, 5).causal(CausalAlign::TopLeft);
        let gpu = mha.forward(ctx, &spec, &MhaInputs::new(&x)).unwrap();
        let cpu =
            layer::reference::mha(&config, &loaded, &spec, &MhaInputs::new(&x), &[0]).unwrap();
        assert!(ErrorStats::compare(&gpu.out, &cpu.out).within(1e-5));
    }
    // Llama: no biases.
    let llama_names = NamingScheme::Llama.names("model.layers.0.");
    let ws = [
        lin(&mut rng, nq, e, false),
        lin(&mut rng, nkv, e, false),
        lin(&mut rng, nkv, e, false),
        lin(&mut rng, e, nq, false),
    ];
    let t: Vec<(String, Vec<usize>, Vec<f32>)> = llama_names
        .iter()
        .zip(&ws)
        .map(|(n, w)| {
            (
                format!("{n}.weight"),
                vec![w.out_features, w.in_features],
                w.weight.clone(),
            )
        })
        .collect();
    let file = write("llama.safetensors", &t, false);
    let loaded = load_mha(&file, NamingScheme::Llama, "model.layers.0.", &config).unwrap();
    assert_eq!(loaded.o, ws[3]);
    let (lq, lk, lv) = loaded.split(&config);
    assert_eq!([lq, lk, lv], [ws[0].clone(), ws[1].clone(), ws[2].clone()]);
    std::fs::remove_dir_all(&dir).ok();
}
