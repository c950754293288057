//! GPU-versus-reference checking shared by `wgattn validate`, `wgattn demo` and the tests:
//! the built-in shape grid and the comparison of case files with their stored `out`.

#[cfg(all(feature = "safetensors", not(target_arch = "wasm32")))]
use std::path::Path;

use crate::context::Context;
use crate::error::Result;
use crate::spec::{
    AttentionSpec, CausalAlign, DType, ErrorStats, Inputs, Kernel, Layout, Measure, Output, Tensor,
    TensorVerdict, Verdict,
};
use crate::testdata::{self, Dist};

/// Relative-Frobenius tolerance for f32 with unit-scale inputs.
pub const TOL_F32: f64 = 1e-5;
/// Relative-Frobenius tolerance for f32 with logits of order 10³ (N(0, 30) inputs), and for
/// case files (their README's tolerance).
pub const TOL_F32_LARGE: f64 = 1e-4;
/// Relative-Frobenius tolerance for f32 inputs of order 1 with
/// [`AttentionSpec::reduced_precision`] where it applies (Q, K, V and P rounded to f16,
/// products accumulated in f32): the bound its tests hold it to. Large logits lose more (an
/// f16 Q·K of order 10³ is off by about 0.5).
pub const TOL_REDUCED: f64 = 3e-3;

/// One case of a shape grid.
#[derive(Debug, Clone)]
pub struct GridCase {
    /// Short readable name.
    pub name: String,
    /// The problem.
    pub spec: AttentionSpec,
    /// Input distribution.
    pub dist: Dist,
    /// Input seed.
    pub seed: u64,
}

impl GridCase {
    /// The tolerance for this case.
    pub fn tolerance(&self) -> f64 {
        if self.dist == Dist::Normal30 {
            TOL_F32_LARGE
        } else {
            TOL_F32
        }
    }
}

/// The result of one checked case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// Case name.
    pub name: String,
    /// Kernel that ran it.
    pub kernel: Kernel,
    /// The verdict on out and lse.
    pub verdict: Verdict,
}

impl CaseResult {
    /// True when every checked tensor is within tolerance, NaN-free, with −∞ in place.
    pub fn passed(&self) -> bool {
        self.verdict.passed()
    }
}

/// The tolerances a result is held to, all derived from the inputs and the f64 reference,
/// never from the values being checked:
///
/// - **out**: f32, relative Frobenius error ≤ `f32_tol`; f16, FlashAttention's rule, max-abs
///   error ≤ 2 × the max-abs error of the plain f16 implementation
///   ([`reference::attention_f16_plain`](crate::reference::attention_f16_plain)) against the
///   f64 reference on the same inputs, + 1e-5;
/// - **lse**: max-abs error over the finite entries ≤ `f32_tol` × [`logit_scale`] (lse is a
///   logit-sized number whose f32 error grows with the logits' magnitude), and −∞ (fully
///   masked rows) in exactly the same places;
/// - **weights**: relative Frobenius error ≤ 10 × `f32_tol`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerances {
    /// Measure and bound for out.
    pub out: (Measure, f64),
    /// Bound on lse's max-abs error.
    pub lse: f64,
    /// Bound on the weights' relative Frobenius error.
    pub weights: f64,
}

impl Tolerances {
    /// The tolerances for `spec` on `inputs` (see the type). `plain_f16_error` is the max-abs
    /// error of the plain f16 implementation against the f64 reference, required for f16
    /// specs (ignored for f32).
    pub fn new(
        spec: &AttentionSpec,
        inputs: &Inputs,
        f32_tol: f64,
        plain_f16_error: Option<f64>,
    ) -> Self {
        let out = match (spec.dtype, plain_f16_error) {
            (DType::F16, Some(e)) => (Measure::MaxAbs, 2.0 * e + 1e-5),
            _ => (Measure::RelFro, f32_tol),
        };
        Tolerances {
            out,
            lse: f32_tol * logit_scale(spec, inputs),
            weights: 10.0 * f32_tol,
        }
    }

    /// [`Tolerances::new`], running the plain f16 implementation on `inputs` for f16 specs
    /// and comparing it with `reference_out` (the f64 reference's out on the same inputs).
    pub fn for_inputs(
        spec: &AttentionSpec,
        inputs: &Inputs,
        reference_out: &[f32],
        f32_tol: f64,
    ) -> Result<Self> {
        let plain = match spec.dtype {
            DType::F16 => {
                let plain = crate::reference::attention_f16_plain(spec, inputs)?.out;
                Some(ErrorStats::compare(&plain, reference_out).max_abs)
            }
            DType::F32 => None,
        };
        Ok(Tolerances::new(spec, inputs, f32_tol, plain))
    }

    /// The verdict on `got` against `expected`: out always, lse and weights when both have
    /// them.
    pub fn verdict(&self, got: &Output, expected: &Output) -> Verdict {
        let both = |g: &Option<Vec<f32>>, e: &Option<Vec<f32>>, measure, tol| match (g, e) {
            (Some(g), Some(e)) => Some(TensorVerdict::judge(g, e, measure, tol)),
            _ => None,
        };
        Verdict {
            out: TensorVerdict::judge(&got.out, &expected.out, self.out.0, self.out.1),
            lse: both(&got.lse, &expected.lse, Measure::MaxAbs, self.lse),
            weights: both(
                &got.weights,
                &expected.weights,
                Measure::RelFro,
                self.weights,
            ),
        }
    }
}

/// The magnitude the logits can reach, from the inputs alone: 1 + |scale| · max‖q row‖ ·
/// max‖k row‖ (Cauchy–Schwarz bound of |scale·q·k|, or the soft-cap when smaller) + the
/// largest finite |bias| + the largest ALiBi term |slope|·(Sq + Sk). lse's tolerance is
/// relative to it.
pub fn logit_scale(spec: &AttentionSpec, inputs: &Inputs) -> f64 {
    let d = spec.head_dim;
    let max_norm = |t: &Tensor, heads: usize, seq: usize| {
        let x = t.to_f32();
        let s = spec.strides(heads, seq);
        let mut m = 0f64;
        for b in 0..spec.batch {
            for h in 0..heads {
                for i in 0..seq {
                    let at = s.at(b, h, i);
                    let Some(row) = x.get(at..at + d) else {
                        continue;
                    };
                    m = m.max(row.iter().map(|&v| v as f64 * v as f64).sum::<f64>());
                }
            }
        }
        m.sqrt()
    };
    let mut qk = spec.effective_scale().abs() as f64
        * max_norm(&inputs.q, spec.q_heads, spec.seq_q)
        * max_norm(&inputs.k, spec.kv_heads, spec.seq_k);
    if let Some(cap) = spec.softcap {
        qk = qk.min(cap.abs() as f64);
    }
    let bias = inputs.bias.as_ref().map_or(0.0, |b| {
        b.to_f32()
            .iter()
            .filter(|x| x.is_finite())
            .fold(0f64, |m, &x| m.max(x.abs() as f64))
    });
    let alibi = spec.alibi.as_ref().map_or(0.0, |a| {
        a.slopes(spec.q_heads)
            .iter()
            .fold(0f64, |m, &s| m.max(s.abs() as f64))
            * (spec.seq_q + spec.seq_k) as f64
    });
    1.0 + qk + bias + alibi
}

/// Names a spec compactly, e.g. `b2 h8/2 q33 k100 d64 bshd causal-br kv_lens`.
pub fn describe(spec: &AttentionSpec) -> String {
    let mut s = format!(
        "b{} h{}/{} q{} k{} d{} {}",
        spec.batch,
        spec.q_heads,
        spec.kv_heads,
        spec.seq_q,
        spec.seq_k,
        spec.head_dim,
        spec.layout.name()
    );
    match spec.causal {
        Some(CausalAlign::TopLeft) => s.push_str(" causal-tl"),
        Some(CausalAlign::BottomRight) => s.push_str(" causal-br"),
        None => {}
    }
    if let Some(l) = &spec.kv_lens {
        s.push_str(&format!(
            " kv_lens={}",
            l.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(",")
        ));
    }
    if let Some(sc) = spec.scale {
        s.push_str(&format!(" scale={sc}"));
    }
    if spec.dtype != DType::F32 {
        s.push_str(&format!(" {}", spec.dtype.name()));
    }
    if let Some(w) = spec.window {
        s.push_str(&format!(" window={},{}", w.left, w.right));
    }
    if spec.alibi.is_some() {
        s.push_str(" alibi");
    }
    if let Some(c) = spec.softcap {
        s.push_str(&format!(" softcap={c}"));
    }
    if spec.reduced_precision {
        s.push_str(" reduced-precision");
    }
    for (name, b) in [("bias", spec.bias), ("mask", spec.mask)] {
        if let Some(b) = b {
            let dim = |full: bool, n: usize| if full { n.to_string() } else { "1".into() };
            s.push_str(&format!(
                " {name}[{},{}]",
                dim(b.per_batch, spec.batch),
                dim(b.per_head, spec.q_heads)
            ));
        }
    }
    s
}

/// The shape grid of the foundation tests: every seq in {1, 7, 33, 100, 257} with every
/// head_dim in {3, 16, 32, 64, 80, 128, 256}, and batch, heads (MHA, GQA 8:2, MQA 8:1, ...),
/// seq_k, layout, masks, scale and input distribution rotated through all their values; plus
/// edge cases (kv_lens of 0 and 1, fully masked rows, Sq > Sk with both causal alignments).
/// Each case stays under `max_flops` by shrinking batch, then heads.
pub fn grid(max_flops: f64) -> Vec<GridCase> {
    let seqs = [1usize, 7, 33, 100, 257];
    let dims = [3usize, 16, 32, 64, 80, 128, 256];
    let heads = [(1, 1), (8, 2), (2, 2), (8, 1), (3, 3), (6, 3), (4, 4)];
    let dists = [Dist::Normal, Dist::Offset3, Dist::Normal, Dist::Normal30];
    let mut cases = Vec::new();
    let mut n = 0usize;
    for (si, &sq) in seqs.iter().enumerate() {
        for &d in &dims {
            let sk = match n % 3 {
                0 => sq,
                1 => seqs[(si + 1) % seqs.len()],
                _ => seqs[(si + seqs.len() - 1) % seqs.len()],
            };
            let (hq, hkv) = heads[n % heads.len()];
            let batch = 1 + n % 3;
            let mut spec = AttentionSpec::new(batch, hq, hkv, sq, sk, d)
                .layout(if n.is_multiple_of(2) {
                    Layout::Bhsd
                } else {
                    Layout::Bshd
                })
                .with_lse(true);
            match n % 6 {
                1 => spec = spec.causal(CausalAlign::TopLeft),
                2 => spec = spec.causal(CausalAlign::BottomRight),
                3 => spec = spec.kv_lens(kv_lens_for(batch, sk, n)),
                4 => {
                    spec = spec
                        .causal(CausalAlign::TopLeft)
                        .kv_lens(kv_lens_for(batch, sk, n))
                }
                5 => {
                    spec = spec
                        .causal(CausalAlign::BottomRight)
                        .kv_lens(kv_lens_for(batch, sk, n))
                }
                _ => {}
            }
            if n % 5 == 4 {
                spec = spec.scale(0.3);
            }
            while spec.flops() > max_flops && spec.batch > 1 {
                spec.batch -= 1;
                if let Some(l) = spec.kv_lens.as_mut() {
                    l.truncate(spec.batch);
                }
            }
            while spec.flops() > max_flops && spec.q_heads > 1 {
                spec.q_heads = (spec.q_heads / 2).max(1);
                spec.kv_heads = spec.kv_heads.min(spec.q_heads);
                while !spec.q_heads.is_multiple_of(spec.kv_heads) {
                    spec.kv_heads -= 1;
                }
            }
            let dist = dists[n % dists.len()];
            cases.push(GridCase {
                name: format!("grid{n:02} {} {}", describe(&spec), dist.name()),
                spec,
                dist,
                seed: 1000 + n as u64,
            });
            n += 1;
        }
    }
    cases.extend(edge_cases());
    cases
}

/// kv_lens for a grid case: varied, including 1 and (for batch ≥ 3) 0.
fn kv_lens_for(batch: usize, sk: usize, n: usize) -> Vec<u32> {
    (0..batch)
        .map(|b| match (n + b) % 4 {
            0 => sk as u32,
            1 => 1,
            2 => (sk as u32).div_ceil(2),
            _ => (sk as u32 * 3 / 4).max(1),
        })
        .collect()
}

/// Cases aimed at single behaviours.
pub fn edge_cases() -> Vec<GridCase> {
    let case = |name: &str, spec: AttentionSpec, dist: Dist, seed: u64| GridCase {
        name: format!("{name} {}", describe(&spec)),
        spec: spec.with_lse(true),
        dist,
        seed,
    };
    vec![
        case(
            "kv_len 0 and 1 (fully masked rows)",
            AttentionSpec::new(3, 2, 1, 9, 40, 32).kv_lens(vec![0, 1, 40]),
            Dist::Normal,
            11,
        ),
        case(
            "bottom-right Sq>Sk (first rows fully masked)",
            AttentionSpec::new(1, 4, 2, 70, 20, 64).causal(CausalAlign::BottomRight),
            Dist::Normal,
            12,
        ),
        case(
            "top-left Sq>Sk",
            AttentionSpec::new(2, 2, 2, 70, 20, 16)
                .causal(CausalAlign::TopLeft)
                .layout(Layout::Bshd),
            Dist::Normal,
            13,
        ),
        case(
            "decode bottom-right kv cache",
            AttentionSpec::new(2, 8, 1, 1, 257, 128)
                .causal(CausalAlign::BottomRight)
                .kv_lens(vec![257, 100]),
            Dist::Normal,
            14,
        ),
        case(
            "large logits causal",
            AttentionSpec::new(1, 2, 2, 100, 100, 80).causal(CausalAlign::TopLeft),
            Dist::Normal30,
            15,
        ),
        case(
            "offset logits GQA",
            AttentionSpec::new(1, 8, 2, 33, 257, 128),
            Dist::Offset3,
            16,
        ),
        case(
            "head_dim 1",
            AttentionSpec::new(1, 1, 1, 7, 7, 1),
            Dist::Normal,
            17,
        ),
    ]
}

/// One option of [`option_grid`]: a name and how it changes a spec.
type Modifier = (&'static str, fn(AttentionSpec) -> AttentionSpec);

/// The options, each alone: f16 storage, bias and mask with each broadcast,
/// sliding windows, ALiBi (standard and explicit slopes) and soft-capping.
pub fn options() -> Vec<Modifier> {
    use crate::spec::{Alibi, Broadcast, DType};
    vec![
        ("f16", |s| s.dtype(DType::F16)),
        ("bias [1,1]", |s| s.bias(Broadcast::SHARED)),
        ("bias [B,1]", |s| {
            s.bias(Broadcast {
                per_batch: true,
                per_head: false,
            })
        }),
        ("bias [1,H]", |s| {
            s.bias(Broadcast {
                per_batch: false,
                per_head: true,
            })
        }),
        ("bias [B,H]", |s| s.bias(Broadcast::FULL)),
        ("mask [1,1]", |s| s.mask(Broadcast::SHARED)),
        ("mask [B,H]", |s| s.mask(Broadcast::FULL)),
        ("window 16,0", |s| s.window(16, 0)),
        ("window 5,5", |s| s.window(5, 5)),
        ("window -1,3", |s| s.window(-1, 3)),
        ("window 0,0", |s| s.window(0, 0)),
        ("alibi", |s| s.alibi(Alibi::Standard)),
        ("alibi slopes", |s| {
            let slopes = (0..s.q_heads).map(|h| 0.05 * (h + 1) as f32).collect();
            s.alibi(Alibi::Slopes(slopes))
        }),
        ("softcap 5", |s| s.softcap(5.0)),
        ("f16 bias mask alibi softcap", |s| {
            s.dtype(DType::F16)
                .bias(Broadcast::FULL)
                .mask(Broadcast::SHARED)
                .alibi(Alibi::Standard)
                .softcap(20.0)
                .window(40, -1)
        }),
    ]
}

/// Each option of [`options`] alone, and combined with causal, kv_lens and GQA, on shapes from
/// the foundation grid (odd sizes, Sq ≠ Sk both ways, both layouts).
pub fn option_grid() -> Vec<GridCase> {
    let bases = [
        AttentionSpec::new(2, 2, 2, 33, 33, 16),
        AttentionSpec::new(2, 4, 2, 33, 100, 64)
            .causal(CausalAlign::BottomRight)
            .kv_lens(vec![100, 57]),
        AttentionSpec::new(1, 8, 2, 100, 33, 32)
            .layout(Layout::Bshd)
            .causal(CausalAlign::TopLeft),
        AttentionSpec::new(3, 2, 1, 7, 257, 80).kv_lens(vec![1, 257, 100]),
        // decoding: 2 rows per kv head, the split-KV decoding variant
        AttentionSpec::new(2, 4, 2, 1, 300, 64)
            .causal(CausalAlign::BottomRight)
            .kv_lens(vec![300, 77]),
    ];
    let mut cases = Vec::new();
    for (n, (name, modify)) in options().into_iter().enumerate() {
        for (b, base) in bases.iter().enumerate() {
            let spec = modify(base.clone()).with_lse(true);
            let dist = if name.starts_with("softcap") && b == 0 {
                Dist::Normal30
            } else {
                Dist::Normal
            };
            cases.push(GridCase {
                name: format!("{name}: {} {}", describe(&spec), dist.name()),
                spec,
                dist,
                seed: 5000 + (n * 10 + b) as u64,
            });
        }
    }
    cases
}

/// Runs one grid case with `kernel` on the GPU and judges out and lse against the reference
/// (bias and mask generated as `testdata::generate` does) with [`Tolerances`]: f32 out within
/// the case's relative Frobenius tolerance, f16 out within FlashAttention's rule, lse within
/// the tolerance × the logit scale with −∞ in place.
#[cfg(not(target_arch = "wasm32"))]
pub fn run_grid_case(ctx: &Context, case: &GridCase, kernel: Kernel) -> Result<CaseResult> {
    pollster::block_on(run_grid_case_async(ctx, case, kernel))
}

/// [`run_grid_case`] as a future (the only form on the web).
pub async fn run_grid_case_async(
    ctx: &Context,
    case: &GridCase,
    kernel: Kernel,
) -> Result<CaseResult> {
    let spec = case.spec.clone().kernel(kernel).with_lse(true);
    let data = testdata::generate(&spec, case.dist, case.seed);
    let inputs = data.inputs();
    let gpu = ctx.attention_with_async(&spec, &inputs).await?;
    let cpu = crate::reference::attention_with(&spec, &inputs)?;
    let tolerances = Tolerances::for_inputs(&spec, &inputs, &cpu.out, case.tolerance())?;
    Ok(CaseResult {
        name: case.name.clone(),
        kernel: crate::planner::choose(&spec, ctx)?,
        verdict: tolerances.verdict(&gpu, &cpu),
    })
}

/// Runs a case file with `kernel` and compares out with its stored `out`, and lse with the
/// f64 reference computed from the file's inputs. The tolerances come from those inputs (see
/// [`Tolerances`]), never from the stored `out`: f32 out within a relative Frobenius error of
/// 1e-4 (as the cases' README sets for f32 engines), f16 out within twice the max-abs error
/// of a plain f16 implementation against the f64 reference (+ 1e-5).
#[cfg(all(feature = "safetensors", not(target_arch = "wasm32")))]
pub fn run_case_file(ctx: &Context, path: &Path, kernel: Kernel) -> Result<CaseResult> {
    let case = crate::io::read_case(path)?;
    let stored = case
        .out
        .clone()
        .ok_or_else(|| crate::error::Error::BadFile {
            path: path.to_path_buf(),
            message: "has no `out` tensor to compare with".into(),
        })?;
    let spec = case.spec.clone().kernel(kernel).with_lse(true);
    let inputs = case.inputs();
    let gpu = ctx.attention_with(&spec, &inputs)?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    let cpu = crate::reference::attention_with(&spec, &inputs)?;
    let tolerances = Tolerances::for_inputs(&spec, &inputs, &cpu.out, TOL_F32_LARGE)?;
    let expected = Output {
        out: stored,
        lse: cpu.lse,
        weights: None,
    };
    Ok(CaseResult {
        name,
        kernel: crate::planner::choose(&spec, ctx)?,
        verdict: tolerances.verdict(&gpu, &expected),
    })
}

/// The `*.safetensors` files of a directory, sorted.
#[cfg(all(feature = "safetensors", not(target_arch = "wasm32")))]
pub fn case_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|source| crate::error::Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    Ok(files)
}
