//! GPU-versus-reference checking shared by `wgattn validate`, `wgattn demo` and the tests:
//! the built-in shape grid and the comparison of case files with their stored `out`.

#[cfg(feature = "safetensors")]
use std::path::Path;

use crate::context::Context;
use crate::error::Result;
use crate::output::ErrorStats;
use crate::spec::{AttentionSpec, CausalAlign, Kernel, Layout};
use crate::testdata::{self, Dist};

/// Relative-Frobenius tolerance for f32 with unit-scale inputs.
pub const TOL_F32: f64 = 1e-5;
/// Relative-Frobenius tolerance for f32 with logits of order 10³ (N(0, 30) inputs), and for
/// case files (their README's tolerance).
pub const TOL_F32_LARGE: f64 = 1e-4;

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
    /// Error of `out`.
    pub out: ErrorStats,
    /// Error of lse (grid cases only).
    pub lse: Option<ErrorStats>,
    /// Relative Frobenius tolerance it was held to (f32), or the bound on the max-abs error
    /// (f16: 2× the plain f16 implementation's max-abs error + 1e-5).
    pub tolerance: f64,
    /// True when `tolerance` bounds the max-abs error (f16) rather than rel_fro.
    pub max_abs_rule: bool,
}

impl CaseResult {
    /// True when within tolerance and NaN-free.
    pub fn passed(&self) -> bool {
        let out_ok = if self.max_abs_rule {
            self.out.nan_count == 0 && self.out.max_abs <= self.tolerance
        } else {
            self.out.within(self.tolerance)
        };
        out_ok
            && self
                .lse
                .is_none_or(|l| l.nan_count == 0 && l.max_abs.is_finite())
    }
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
    if spec.dtype != crate::DType::F32 {
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

/// How a result of `spec` is judged against `expected`: f32 by relative Frobenius error
/// `f32_tol`; f16 by FlashAttention's rule, max-abs error at most twice the max-abs error of
/// the plain f16 implementation `plain` (+ 1e-5). Returns (tolerance, is it on max-abs).
pub fn tolerance_for(
    spec: &AttentionSpec,
    plain: Option<&[f32]>,
    expected: &[f32],
    f32_tol: f64,
) -> (f64, bool) {
    match (spec.dtype, plain) {
        (crate::DType::F16, Some(plain)) => (
            2.0 * ErrorStats::compare(plain, expected).max_abs + 1e-5,
            true,
        ),
        _ => (f32_tol, false),
    }
}

/// The plain f16 implementation's output for f16 specs (None for f32).
fn plain_f16(spec: &AttentionSpec, inputs: &crate::Inputs) -> Result<Option<Vec<f32>>> {
    Ok(match spec.dtype {
        crate::DType::F16 => Some(crate::reference::attention_f16_plain(spec, inputs)?.out),
        crate::DType::F32 => None,
    })
}

/// One option of [`option_grid`]: a name and how it changes a spec.
type Modifier = (&'static str, fn(AttentionSpec) -> AttentionSpec);

/// The options of issue 6, each alone: f16 storage, bias and mask with each broadcast,
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

/// Runs one grid case with `kernel` on the GPU and compares out and lse with the reference
/// (bias and mask generated as `testdata::generate` does). f32 cases are held to a relative
/// Frobenius tolerance; f16 cases to FlashAttention's rule: max-abs error at most twice the
/// plain f16 implementation's, + 1e-5.
pub fn run_grid_case(ctx: &Context, case: &GridCase, kernel: Kernel) -> Result<CaseResult> {
    let spec = case.spec.clone().kernel(kernel);
    let data = testdata::generate(&spec, case.dist, case.seed);
    let inputs = data.inputs();
    let gpu = ctx.attention_with(&spec, &inputs)?;
    let cpu = crate::reference::attention_with(&spec, &inputs)?;
    let lse = match (&gpu.lse, &cpu.lse) {
        (Some(g), Some(c)) => Some(ErrorStats::compare(g, c)),
        _ => None,
    };
    let plain = plain_f16(&spec, &inputs)?;
    let (tolerance, max_abs_rule) =
        tolerance_for(&spec, plain.as_deref(), &cpu.out, case.tolerance());
    Ok(CaseResult {
        name: case.name.clone(),
        kernel: crate::planner::choose(&spec, ctx)?,
        out: ErrorStats::compare(&gpu.out, &cpu.out),
        lse,
        tolerance,
        max_abs_rule,
    })
}

/// Runs a case file with `kernel` and compares with its stored `out`: f32 cases within a
/// relative Frobenius error of 1e-4 (as the cases' README sets for f32 engines), f16 cases
/// within twice the max-abs error of a plain f16 implementation (+ 1e-5).
#[cfg(feature = "safetensors")]
pub fn run_case_file(ctx: &Context, path: &Path, kernel: Kernel) -> Result<CaseResult> {
    let case = crate::io::read_case(path)?;
    let expected = case.out.clone().ok_or_else(|| crate::Error::BadFile {
        path: path.to_path_buf(),
        message: "has no `out` tensor to compare with".into(),
    })?;
    let spec = case.spec.clone().kernel(kernel);
    let gpu = ctx.attention_with(&spec, &case.inputs())?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    let plain = plain_f16(&spec, &case.inputs())?;
    let (tolerance, max_abs_rule) =
        tolerance_for(&spec, plain.as_deref(), &expected, TOL_F32_LARGE);
    Ok(CaseResult {
        name,
        kernel: crate::planner::choose(&spec, ctx)?,
        out: ErrorStats::compare(&gpu.out, &expected),
        lse: None,
        tolerance,
        max_abs_rule,
    })
}

/// The `*.safetensors` files of a directory, sorted.
#[cfg(feature = "safetensors")]
pub fn case_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|source| crate::Error::Io {
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
