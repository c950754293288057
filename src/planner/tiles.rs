//! Register-tile shapes of the workgroup-tiled fused variant (`shaders/fused/tiled.wgsl`) and
//! the template constants each shape and head_dim class specialise it with.
//!
//! A shape is `tm` query rows × `tn` keys of scores per invocation, `wg` invocations, and Q/K
//! staged in slices of `kd` dims. Keys come in blocks of [`TILED_KEYS`], so a row of scores is
//! shared by `64 / tn` invocations and a workgroup owns `tm · wg · tn / 64` query rows.
//! [`TILED_DEFAULTS`] are what the untuned planner uses (the first that fits); `wgattn tune`
//! times every shape of [`TILED_SHAPES`] that fits.

use super::{Caps, HeadClass};

/// Keys per block of the tiled variant (every shape).
pub const TILED_KEYS: u32 = 64;

/// Most 32-bit registers per invocation an untuned shape may plan for (score tile and its
/// per-slice partial sums, output accumulators, prefetched Q/K and V): beyond it a GPU
/// compiler may spill or run too few workgroups per core.
pub const TILED_REGISTER_BUDGET: u32 = 192;

/// Most 32-bit registers per invocation any shape may plan for (the 255 of NVIDIA's
/// register file per thread, rounded): tuned shapes may go past [`TILED_REGISTER_BUDGET`],
/// where timing decides.
pub const TILED_REGISTER_LIMIT: u32 = 256;

/// Most V vec4 one invocation prefetches per chunk (the chunk's keys are cut to fit).
const TILED_MAX_V_PREFETCH: u32 = 8;

/// A register-tile shape of the tiled variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "tune-cache", derive(serde::Serialize, serde::Deserialize))]
pub struct TiledShape {
    /// Query rows per invocation (4 or 8).
    pub tm: u32,
    /// Keys per invocation (4 or 8).
    pub tn: u32,
    /// Invocations per workgroup.
    pub wg: u32,
    /// Dims per staged Q/K slice (16 or 32).
    pub kd: u32,
}

/// Shapes the untuned planner tries, in order: 8 rows × 4 keys per invocation in 128
/// invocations (64 rows) with Q/K slices of 32 dims (half the barriers of 16; needs 48 KiB of
/// workgroup memory), the same with slices of 16 (32 KiB), then 4×4 in 256 (64 rows: fewer
/// registers, for head_dim > 128).
pub const TILED_DEFAULTS: [TiledShape; 3] = [
    TiledShape::new(8, 4, 128, 32),
    TiledShape::new(8, 4, 128, 16),
    TiledShape::new(4, 4, 256, 16),
];

/// Every shape `wgattn tune` times (those that fit the device and head_dim class). All own
/// 32 or 64 rows: 128 rows would need 32 KiB for P alone.
pub const TILED_SHAPES: [TiledShape; 8] = [
    TiledShape::new(8, 4, 128, 16),
    TiledShape::new(8, 4, 128, 32),
    TiledShape::new(4, 4, 256, 16),
    TiledShape::new(4, 4, 256, 32),
    TiledShape::new(4, 4, 128, 16),
    TiledShape::new(4, 4, 128, 32),
    TiledShape::new(4, 8, 128, 16),
    TiledShape::new(8, 8, 64, 16),
];

/// The template constants of one shape for one head_dim class (names as in the shader).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TiledConsts {
    /// Row quads per invocation.
    pub ti: u32,
    /// Key quads per invocation.
    pub tj: u32,
    /// Invocations per row band (`64 / tn`).
    pub ct: u32,
    /// Row bands (`wg / ct`).
    pub rt: u32,
    /// Dims per slice.
    pub kd: u32,
    /// Slices per head_dim class.
    pub ns: u32,
    /// Staging units (4 rows × 4 dims) per invocation.
    pub su: u32,
    /// Keys per V chunk.
    pub vk: u32,
    /// V vec4 per invocation and chunk.
    pub vu: u32,
    /// Output vec4 per row and invocation.
    pub nu: u32,
    /// Vec4 of the staging area.
    pub sa: u32,
    /// Vec4 of the P tile.
    pub sp: u32,
}

impl TiledShape {
    /// A shape (not checked: see [`TiledShape::consts`]).
    pub const fn new(tm: u32, tn: u32, wg: u32, kd: u32) -> TiledShape {
        TiledShape { tm, tn, wg, kd }
    }

    /// Invocations that share a row band: one per `tn` keys of the block.
    fn band(&self) -> u32 {
        TILED_KEYS / self.tn.max(1)
    }

    /// Query rows per workgroup.
    pub fn rows(&self) -> u32 {
        self.tm * (self.wg / self.band().max(1))
    }

    /// The template constants for head_dim class `class`, or `None` when the shape cannot
    /// be built: `tm`, `tn` not 4 or 8, `kd` not 16 or 32, `wg` not a multiple of the
    /// invocations per row band, fewer than 32 rows (the swizzles need 8 row quads), or a
    /// staging area too small for the row exchanges.
    pub fn consts(&self, class: HeadClass) -> Option<TiledConsts> {
        let ok = matches!(self.tm, 4 | 8) && matches!(self.tn, 4 | 8) && matches!(self.kd, 16 | 32);
        let ct = self.band();
        if !ok || self.wg == 0 || !self.wg.is_multiple_of(ct) {
            return None;
        }
        let rt = self.wg / ct;
        let qc = self.tm * rt / 4;
        if !qc.is_multiple_of(8) {
            return None;
        }
        let d4 = class.d16 * 4;
        let str_ = qc + TILED_KEYS / 4;
        let sa = 2 * self.kd * str_;
        let units = str_ * self.kd / 4;
        // V chunks: a power of two of keys whose rows fill the staging area at most, with
        // at most TILED_MAX_V_PREFETCH vec4 per invocation
        let vk = (sa / d4)
            .min(TILED_KEYS)
            .min(TILED_MAX_V_PREFETCH * self.wg / d4);
        let vk = 1 << vk.max(1).ilog2();
        let c = TiledConsts {
            ti: self.tm / 4,
            tj: self.tn / 4,
            ct,
            rt,
            kd: self.kd,
            ns: (class.d16 * 16).div_ceil(self.kd),
            su: units.div_ceil(self.wg),
            vk,
            vu: (vk * d4).div_ceil(self.wg),
            nu: d4.div_ceil(ct),
            sa,
            sp: TILED_KEYS * qc,
        };
        (qc * ct <= sa).then_some(c)
    }

    /// Workgroup memory (bytes) for head_dim class `class`.
    pub fn workgroup_bytes(&self, class: HeadClass) -> Option<u32> {
        self.consts(class).map(|c| 16 * (c.sa + c.sp))
    }

    /// 32-bit registers per invocation the shape plans for with head_dim class `class`.
    pub fn registers(&self, class: HeadClass) -> Option<u32> {
        self.consts(class)
            .map(|c| 2 * self.tm * self.tn + self.tm * c.nu * 4 + c.su * 16 + c.vu * 4)
    }

    /// True when the shape can run head_dim class `class` on a device with `caps`: it can be
    /// built, its workgroup memory and invocations fit, and it stays within
    /// [`TILED_REGISTER_LIMIT`].
    pub fn fits(&self, class: HeadClass, caps: &Caps) -> bool {
        self.workgroup_bytes(class)
            .is_some_and(|b| b <= caps.limits.max_workgroup_storage)
            && self.wg <= caps.limits.max_invocations
            && self
                .registers(class)
                .is_some_and(|r| r <= TILED_REGISTER_LIMIT)
    }

    /// The untuned shape for head_dim class `class`: the first of [`TILED_DEFAULTS`] that
    /// fits within [`TILED_REGISTER_BUDGET`].
    pub fn default_for(class: HeadClass, caps: &Caps) -> Option<TiledShape> {
        TILED_DEFAULTS.iter().copied().find(|s| {
            s.fits(class, caps)
                && s.registers(class)
                    .is_some_and(|r| r <= TILED_REGISTER_BUDGET)
        })
    }

    /// True when the variant exchanges row maxima and sums by subgroup shuffles on a device
    /// with `caps`: one fixed subgroup size that is a multiple of the invocations per row
    /// band (`64 / tn`) and divides `wg`.
    pub fn subgroups_on(&self, caps: &Caps) -> bool {
        caps.subgroup_size
            .is_some_and(|sg| sg.is_multiple_of(self.band()) && self.wg.is_multiple_of(sg))
    }

    /// A short description, e.g. `tiled(8×4, wg=128, 64 rows, kd=16)`.
    pub fn describe(&self) -> String {
        format!(
            "tiled({}×{}, wg={}, {} rows, kd={})",
            self.tm,
            self.tn,
            self.wg,
            self.rows(),
            self.kd
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(d16: u32) -> HeadClass {
        HeadClass { d16, vec4: true }
    }

    #[test]
    fn constants_of_the_default_shapes() {
        let c = TILED_DEFAULTS[1].consts(class(8)).unwrap();
        assert_eq!((c.ti, c.tj, c.ct, c.rt), (2, 1, 16, 8));
        assert_eq!((c.ns, c.su, c.vk, c.vu, c.nu), (8, 1, 32, 8, 2));
        assert_eq!(TILED_DEFAULTS[1].rows(), 64);
        // 32 KiB, as the 4×4 kernel it replaces
        assert_eq!(TILED_DEFAULTS[1].workgroup_bytes(class(8)), Some(32 * 1024));
        assert_eq!(TILED_DEFAULTS[1].registers(class(8)), Some(176));
        // slices of 32 dims: half the slices (barriers), 48 KiB
        let c = TILED_DEFAULTS[0].consts(class(8)).unwrap();
        assert_eq!((c.ns, c.su, c.vk, c.vu), (4, 2, 32, 8));
        assert_eq!(TILED_DEFAULTS[0].workgroup_bytes(class(8)), Some(48 * 1024));
        assert_eq!(TILED_DEFAULTS[0].registers(class(8)), Some(192));
    }

    /// Every head_dim class has an untuned shape on a GPU with 32 KiB and 256 invocations
    /// (and one with 32-dim slices up to head_dim 128 with 48 KiB), and every shape the tuner
    /// times can run some class with 48 KiB.
    #[test]
    fn defaults_cover_every_class_and_no_shape_is_dead() {
        let mut caps = super::super::caps_classes()
            .into_iter()
            .find(|c| c.device_type == wgpu::DeviceType::DiscreteGpu)
            .unwrap();
        for (bytes, first) in [(32 * 1024, 1), (48 * 1024, 0)] {
            caps.limits.max_workgroup_storage = bytes;
            for d16 in 1..=16 {
                let s = TiledShape::default_for(class(d16), &caps).unwrap();
                assert!(s.registers(class(d16)).unwrap() <= TILED_REGISTER_BUDGET);
                let want = if d16 <= 8 {
                    TILED_DEFAULTS[first]
                } else {
                    TILED_DEFAULTS[2]
                };
                assert_eq!(s, want, "{bytes} B, d16 {d16}");
            }
        }
        for s in TILED_SHAPES {
            assert!(
                (1..=16).any(|d16| s.fits(class(d16), &caps)),
                "{s:?} fits no head_dim class"
            );
        }
    }

    #[test]
    fn subgroup_exchange_needs_whole_row_bands() {
        let mut caps = super::super::caps_classes()[0];
        for (sg, tn, on) in [
            (Some(32), 4, true),
            (Some(8), 4, false),
            (Some(8), 8, true),
            (None, 8, false),
            (Some(64), 4, true),
        ] {
            caps.subgroup_size = sg;
            let wg = if sg == Some(64) { 128 } else { 64 };
            assert_eq!(
                TiledShape::new(8, tn, wg, 16).subgroups_on(&caps),
                on,
                "{sg:?} {tn}"
            );
        }
        // a subgroup larger than the workgroup
        caps.subgroup_size = Some(64);
        assert!(!TiledShape::new(8, 8, 32, 16).subgroups_on(&caps));
    }

    #[test]
    fn invalid_shapes_are_refused() {
        for s in [
            TiledShape::new(2, 4, 128, 16),
            TiledShape::new(8, 4, 100, 16),
            TiledShape::new(8, 4, 128, 8),
            // 16 rows: fewer than 8 row quads
            TiledShape::new(4, 4, 64, 16),
            TiledShape::new(8, 8, 0, 16),
        ] {
            assert_eq!(s.consts(class(4)), None, "{s:?}");
        }
        for s in TILED_SHAPES {
            for d16 in 1..=16 {
                let c = s.consts(class(d16)).unwrap();
                assert!(c.vk >= 1 && c.vk <= TILED_KEYS && c.vk * d16 * 4 <= c.sa);
                assert!(c.su * s.wg >= (c.sp / TILED_KEYS + 16) * s.kd / 4);
            }
        }
    }
}
