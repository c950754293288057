//! The tuned-choice model: the classes of shapes one tuned choice serves ([`ShapeClass`]), the
//! choices (`TunedChoice`), what a device's tuning holds ([`Tuning`]), and the candidates the
//! tuner times. Plain data: the tuner (`wgattn::tune`) measures and stores them, a context
//! reads them from its cache file, and the planner applies them.

use std::collections::HashMap;

#[cfg(feature = "tune-cache")]
use serde::{Deserialize, Serialize};

use super::{
    Caps, DECODE_MAX_SEQ_Q, FusedVariant, HeadClass, KvSharing, MMA_SHAPES, MmaShape, Storage,
    TILED_DEFAULTS, TILED_SHAPES, TiledShape, half_operands, reduced_precision_applies,
};
use crate::spec::{Alibi, AttentionSpec, Kernel};

/// Query rows per kv head above which a prefill shape counts as long.
pub const LONG_ROWS: usize = 1024;

/// How many query rows per kv head a shape has, as the tuner classes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "tune-cache", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "tune-cache", serde(rename_all = "lowercase"))]
pub enum RowsClass {
    /// `seq_q ≤` [`DECODE_MAX_SEQ_Q`]: decoding.
    Decode,
    /// Up to [`LONG_ROWS`] query rows per kv head.
    Short,
    /// More.
    Long,
}

/// The class of shapes one tuned choice serves.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "tune-cache", derive(Serialize, Deserialize))]
pub struct ShapeClass {
    /// `f32`, `f32-reduced` (f32 with [`AttentionSpec::reduced_precision`] where it
    /// applies), `f16` or `packed` (f16 in u32 words).
    pub storage: String,
    /// head_dim rounded up to a multiple of 16, / 16.
    pub d16: u32,
    /// q/k/v read as vec4.
    pub vec4: bool,
    /// Decoding, short or long.
    pub rows: RowsClass,
}

impl ShapeClass {
    /// The class of `spec` on a device with `caps`.
    pub fn of(spec: &AttentionSpec, caps: &Caps) -> ShapeClass {
        let class = HeadClass::of(spec, caps);
        let rows_per_kv_head = spec.group() * spec.seq_q;
        ShapeClass {
            storage: match Storage::of(spec, caps) {
                // f16 products: another class than exact f32
                Storage::F32 if reduced_precision_applies(spec, caps) => "f32-reduced",
                Storage::F32 => "f32",
                Storage::F16 => "f16",
                Storage::Packed => "packed",
            }
            .into(),
            d16: class.d16,
            vec4: class.vec4,
            rows: if spec.seq_q <= DECODE_MAX_SEQ_Q {
                RowsClass::Decode
            } else if rows_per_kv_head <= LONG_ROWS {
                RowsClass::Short
            } else {
                RowsClass::Long
            },
        }
    }

    /// E.g. `f16 d≤128 vec4 long`.
    pub fn describe(&self) -> String {
        format!(
            "{} d≤{}{} {}",
            self.storage,
            self.d16 * 16,
            if self.vec4 { " vec4" } else { "" },
            match self.rows {
                RowsClass::Decode => "decode",
                RowsClass::Short => "short",
                RowsClass::Long => "long",
            }
        )
    }
}

/// One tunable choice of the fused kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "tune-cache", derive(Serialize, Deserialize))]
#[cfg_attr(
    feature = "tune-cache",
    serde(tag = "family", rename_all = "snake_case")
)]
pub enum TunedChoice {
    /// The rows variant (`fused/rows.wgsl`) with `rows` query rows per invocation and `wg`
    /// invocations; K/V shared as the device allows (subgroups of a fixed size, else
    /// workgroup memory).
    Rows {
        /// Query rows per invocation (1, 2 or 4).
        rows: u32,
        /// Invocations per workgroup.
        wg: u32,
    },
    /// The workgroup-tiled variant (`fused/tiled.wgsl`) with this register-tile shape.
    Tiled(TiledShape),
    /// The matrix-tile variant (`fused/mma.wgsl`).
    Mma {
        /// Query rows per workgroup.
        rows: u32,
        /// Keys per block.
        keys: u32,
        /// Invocations per workgroup.
        wg: u32,
        /// Tile edge.
        tile: u32,
        /// Cooperative matrices.
        coop: bool,
    },
    /// Split-KV's key splits: the untuned count times 2^`shift`.
    Splits {
        /// Power of two applied to the untuned split count (−2 ..= 2).
        shift: i32,
    },
}

impl TunedChoice {
    /// The fused variant this choice means for `spec` on `caps`, if it can run it there
    /// ([`FusedVariant::fits`]; `None` for [`TunedChoice::Splits`], which is no variant).
    pub fn variant(&self, spec: &AttentionSpec, caps: &Caps) -> Option<FusedVariant> {
        let class = HeadClass::of(spec, caps);
        let variant = match *self {
            TunedChoice::Rows { rows, wg } => FusedVariant::Rows {
                class,
                wg,
                rows,
                sharing: KvSharing::on(caps),
            },
            TunedChoice::Tiled(shape) => FusedVariant::Tiled {
                class,
                shape,
                subgroups: shape.subgroups_on(caps),
            },
            TunedChoice::Mma {
                rows,
                keys,
                wg,
                tile,
                coop,
            } => FusedVariant::Mma {
                class,
                shape: MmaShape {
                    rows,
                    keys,
                    wg,
                    tile,
                    coop,
                    half: half_operands(spec, caps),
                },
            },
            TunedChoice::Splits { .. } => return None,
        };
        variant.fits(caps).then_some(variant)
    }

    /// The choice that selects `variant`, if it is tunable.
    pub fn of_variant(variant: &FusedVariant) -> Option<TunedChoice> {
        match *variant {
            FusedVariant::Rows { rows, wg, .. } => Some(TunedChoice::Rows { rows, wg }),
            FusedVariant::Tiled { shape, .. } => Some(TunedChoice::Tiled(shape)),
            FusedVariant::Mma { shape, .. } => Some(TunedChoice::Mma {
                rows: shape.rows,
                keys: shape.keys,
                wg: shape.wg,
                tile: shape.tile,
                coop: shape.coop,
            }),
            FusedVariant::Decode { .. } => None,
        }
    }

    /// A short description.
    pub fn describe(&self) -> String {
        match *self {
            TunedChoice::Rows { rows, wg } => format!("rows(r={rows}, wg={wg})"),
            TunedChoice::Tiled(shape) => shape.describe(),
            TunedChoice::Mma {
                rows,
                keys,
                wg,
                tile,
                coop,
            } => MmaShape {
                rows,
                keys,
                wg,
                tile,
                coop,
                // (cooperative matrices always multiply f16 operands)
                half: coop,
            }
            .describe(),
            TunedChoice::Splits { shift } => format!("splits ×2^{shift}"),
        }
    }
}

/// The tuned choices of one adapter, per shape class: what the planner consults. Plain data
/// (build one by hand to ask the planner about tuned devices).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tuning {
    /// Choice per class.
    pub choices: HashMap<ShapeClass, TunedChoice>,
}

impl Tuning {
    /// No tuned choices.
    pub fn none() -> Tuning {
        Tuning::default()
    }

    /// One choice for one class.
    pub fn one(class: ShapeClass, choice: TunedChoice) -> Tuning {
        Tuning {
            choices: HashMap::from([(class, choice)]),
        }
    }

    /// The choice for `spec`'s class on `caps`, if any.
    pub fn get(&self, spec: &AttentionSpec, caps: &Caps) -> Option<TunedChoice> {
        if self.choices.is_empty() {
            return None;
        }
        self.choices.get(&ShapeClass::of(spec, caps)).copied()
    }

    /// True when nothing is tuned.
    pub fn is_empty(&self) -> bool {
        self.choices.is_empty()
    }
}

/// The candidates the tuner times for `spec` on `caps` (the untuned default among them).
pub fn candidates(spec: &AttentionSpec, caps: &Caps) -> Vec<TunedChoice> {
    let class = ShapeClass::of(spec, caps);
    if class.rows == RowsClass::Decode {
        return (-2..=2)
            .map(|shift| TunedChoice::Splits { shift })
            .collect();
    }
    // the rows variant: 1, 2 or 4 rows per invocation, in workgroups of 64 (the untuned
    // default for all but the shortest problems) or 128
    let mut out = Vec::new();
    for rows in [1, 2, 4] {
        for wg in [64, 128] {
            out.push(TunedChoice::Rows { rows, wg });
        }
    }
    // every register-tile shape on GPUs; CPU adapters run the tiled variant far slower than
    // the rows variant (lavapipe), so they time the untuned shapes only
    if caps.device_type == wgpu::DeviceType::Cpu {
        out.extend(TILED_DEFAULTS.map(TunedChoice::Tiled));
    } else {
        out.extend(TILED_SHAPES.map(TunedChoice::Tiled));
    }
    let coop_edge = caps.coop_f16.filter(|_| half_operands(spec, caps));
    // The portable tile multiplies are a correctness fallback; on CPU adapters they are an
    // order of magnitude slower than the rows variant (lavapipe), so only GPUs time them.
    let portable = (caps.device_type != wgpu::DeviceType::Cpu).then_some((16, false));
    for &(rows, keys, wg) in &MMA_SHAPES {
        for (tile, coop) in coop_edge.map(|e| (e, true)).into_iter().chain(portable) {
            out.push(TunedChoice::Mma {
                rows,
                keys,
                wg,
                tile,
                coop,
            });
        }
    }
    out.retain(|c| c.variant(spec, caps).is_some());
    out
}

/// A small problem of the same class as `spec` (≤ ~2e8 FLOPs) that a candidate is checked on
/// against the CPU reference before it is timed.
pub fn check_spec(spec: &AttentionSpec) -> AttentionSpec {
    let group = spec.group();
    let (seq_q, seq_k) = if spec.seq_q <= DECODE_MAX_SEQ_Q {
        (spec.seq_q, spec.seq_k.min(1500))
    } else if group * spec.seq_q <= LONG_ROWS {
        (spec.seq_q.min(130), spec.seq_k.min(300))
    } else {
        ((LONG_ROWS / group + 33).max(17), spec.seq_k.min(150))
    };
    let alibi = spec.alibi.as_ref().map(|a| match a {
        // the slopes of the first kv head's query heads
        Alibi::Slopes(s) => Alibi::Slopes(s[..group].to_vec()),
        other => other.clone(),
    });
    AttentionSpec {
        batch: 1,
        q_heads: group,
        kv_heads: 1,
        seq_q,
        seq_k,
        kv_lens: None,
        alibi,
        return_weights: false,
        return_lse: false,
        ..spec.clone()
    }
}

/// True when the kernel of `spec` may use tuned choices (everything but three-pass).
pub fn tunable(spec: &AttentionSpec) -> bool {
    spec.kernel != Kernel::ThreePass && !spec.return_weights
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_check_shapes() {
        let caps = super::super::caps_classes()[0];
        let long = AttentionSpec::new(1, 32, 8, 4096, 4096, 128);
        let c = ShapeClass::of(&long, &caps);
        assert_eq!(
            (c.rows, c.d16, c.storage.as_str()),
            (RowsClass::Long, 8, "f32")
        );
        for spec in [
            long,
            AttentionSpec::new(1, 8, 8, 512, 512, 64),
            AttentionSpec::new(2, 8, 2, 1, 32768, 128).dtype(crate::spec::DType::F16),
            AttentionSpec::new(1, 4, 1, 300, 200, 80).kv_lens(vec![100]),
        ] {
            let small = check_spec(&spec);
            assert_eq!(ShapeClass::of(&small, &caps), ShapeClass::of(&spec, &caps));
            assert!(small.flops() <= 2e8, "{}", small.flops());
            small
                .validate(&crate::spec::DeviceLimits::unbounded())
                .unwrap();
        }
    }
}
