//! Values of command-line flags as clap parses them: enums (`--help` lists their values),
//! shapes and checked numbers. Each enum converts into the core type it names; the core crate
//! itself knows nothing of clap.

use clap::ValueEnum;
use wgattn::testdata::Dist;
use wgattn::{AttentionSpec, Broadcast, CausalAlign, DType, Kernel, Layout, bench::Timing};

/// `--kernel`: which kernel computes the attention.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KernelArg {
    /// The planner decides (three-pass for weights, split-KV for decoding, else flash).
    #[default]
    Auto,
    /// QKᵀ, softmax and P·V as three passes; the only kernel that returns the weights.
    #[value(alias = "threepass")]
    ThreePass,
    /// Fused online softmax (FlashAttention-style).
    Flash,
    /// Keys split across workgroups and combined (flash-decoding).
    #[value(alias = "flash-decoding")]
    SplitKv,
}

impl From<KernelArg> for Kernel {
    fn from(k: KernelArg) -> Self {
        match k {
            KernelArg::Auto => Kernel::Auto,
            KernelArg::ThreePass => Kernel::ThreePass,
            KernelArg::Flash => Kernel::Flash,
            KernelArg::SplitKv => Kernel::SplitKv,
        }
    }
}

/// `--layout`: how q, k, v and out are laid out in memory.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayoutArg {
    /// [batch, heads, sequence, head_dim].
    #[default]
    Bhsd,
    /// [batch, sequence, heads, head_dim].
    Bshd,
}

impl From<LayoutArg> for Layout {
    fn from(l: LayoutArg) -> Self {
        match l {
            LayoutArg::Bhsd => Layout::Bhsd,
            LayoutArg::Bshd => Layout::Bshd,
        }
    }
}

/// `--timing`: how `bench` measures.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimingArg {
    /// GPU timestamps when the adapter has them, else wall time.
    #[default]
    Auto,
    /// GPU timestamp queries (fails where the adapter has none).
    Gpu,
    /// Wall time from submit to completion.
    Wall,
}

impl From<TimingArg> for Timing {
    fn from(t: TimingArg) -> Self {
        match t {
            TimingArg::Auto => Timing::Auto,
            TimingArg::Gpu => Timing::Gpu,
            TimingArg::Wall => Timing::Wall,
        }
    }
}

/// `--causal`: the causal mask and where its diagonal sits.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CausalArg {
    /// Query i sees keys j ≤ i.
    #[value(alias = "top_left")]
    TopLeft,
    /// Query i sees keys j ≤ i + Sk − Sq (KV-cache decoding).
    #[value(alias = "bottom_right")]
    BottomRight,
    /// No causal mask.
    #[value(alias = "false")]
    None,
}

impl From<CausalArg> for Option<CausalAlign> {
    fn from(c: CausalArg) -> Self {
        match c {
            CausalArg::TopLeft => Some(CausalAlign::TopLeft),
            CausalArg::BottomRight => Some(CausalAlign::BottomRight),
            CausalArg::None => None,
        }
    }
}

/// `--dtype`: storage type of q, k, v and out.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DTypeArg {
    /// 32-bit floats.
    F32,
    /// 16-bit floats (f32 data is rounded on the way in; arithmetic stays f32).
    F16,
}

impl From<DTypeArg> for DType {
    fn from(d: DTypeArg) -> Self {
        match d {
            DTypeArg::F32 => DType::F32,
            DTypeArg::F16 => DType::F16,
        }
    }
}

/// `--dist`: distribution of generated inputs.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DistArg {
    /// Standard normal.
    #[default]
    Normal,
    /// Normal with standard deviation 30 (large logits).
    Normal30,
    /// Normal shifted by 3 (a large common offset).
    Offset3,
}

impl From<DistArg> for Dist {
    fn from(d: DistArg) -> Self {
        match d {
            DistArg::Normal => Dist::Normal,
            DistArg::Normal30 => Dist::Normal30,
            DistArg::Offset3 => Dist::Offset3,
        }
    }
}

/// `--bias` / `--mask` of `gen` and `bench`: how a generated tensor broadcasts.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BroadcastArg {
    /// [1, 1, Sq, Sk]: one matrix for every batch entry and head.
    Shared,
    /// [B, 1, Sq, Sk]: one per batch entry.
    Batch,
    /// [1, Hq, Sq, Sk]: one per query head.
    Head,
    /// [B, Hq, Sq, Sk].
    Full,
}

impl From<BroadcastArg> for Broadcast {
    fn from(b: BroadcastArg) -> Self {
        match b {
            BroadcastArg::Shared => Broadcast::SHARED,
            BroadcastArg::Batch => Broadcast {
                per_batch: true,
                per_head: false,
            },
            BroadcastArg::Head => Broadcast {
                per_batch: false,
                per_head: true,
            },
            BroadcastArg::Full => Broadcast::FULL,
        }
    }
}

/// `--preset` of `bench`: a named set of shapes.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresetArg {
    /// The shapes of BENCHMARKS.md.
    Standard,
}

/// A shape `B,Hq,Hkv,Sq,Sk,D` as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Batch size.
    pub batch: usize,
    /// Query heads.
    pub q_heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Query rows.
    pub seq_q: usize,
    /// Keys.
    pub seq_k: usize,
    /// Head dimension.
    pub head_dim: usize,
}

impl Shape {
    /// A spec of this shape with every option at its default.
    pub fn spec(self) -> AttentionSpec {
        AttentionSpec::new(
            self.batch,
            self.q_heads,
            self.kv_heads,
            self.seq_q,
            self.seq_k,
            self.head_dim,
        )
    }
}

/// Parses `B,Hq,Hkv,Sq,Sk,D` (six non-negative integers); the message says what is wrong.
pub fn shape(s: &str) -> Result<Shape, String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    if parts.len() != 6 {
        return Err(format!(
            "expected six integers B,Hq,Hkv,Sq,Sk,D, got {} value(s)",
            parts.len()
        ));
    }
    let mut v = [0usize; 6];
    for (slot, (part, name)) in v
        .iter_mut()
        .zip(parts.iter().zip(["B", "Hq", "Hkv", "Sq", "Sk", "D"]))
    {
        *slot = part
            .parse()
            .map_err(|_| format!("{name} = {part:?} is not a non-negative integer"))?;
    }
    let [batch, q_heads, kv_heads, seq_q, seq_k, head_dim] = v;
    Ok(Shape {
        batch,
        q_heads,
        kv_heads,
        seq_q,
        seq_k,
        head_dim,
    })
}

/// Parses a number of seconds: finite and above zero.
pub fn seconds(s: &str) -> Result<f64, String> {
    let x: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if x.is_finite() && x > 0.0 {
        Ok(x)
    } else {
        Err(format!("{s} is not a finite number above 0"))
    }
}

/// Parses a finite float (softmax scale, soft-cap).
pub fn finite(s: &str) -> Result<f32, String> {
    let x: f32 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if x.is_finite() {
        Ok(x)
    } else {
        Err(format!("{s} is not finite"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_parse_and_name_the_bad_part() {
        assert_eq!(shape("1, 2,2,64,64,32").map(|s| s.seq_q), Ok(64));
        assert!(shape("1,2,2,64,64").unwrap_err().contains("six integers"));
        assert!(shape("-1,2,2,64,64,32").unwrap_err().contains("B = \"-1\""));
    }

    #[test]
    fn seconds_must_be_finite_and_positive() {
        assert_eq!(seconds("0.5"), Ok(0.5));
        for bad in ["0", "-1", "NaN", "inf", "x"] {
            assert!(seconds(bad).is_err(), "{bad}");
        }
    }
}
