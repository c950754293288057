//! The GPU interface's binding numbers, named once. The template step prepends every entry as
//! a WGSL constant (`const B_Q: u32 = 1u;`), the shaders write `@binding(B_Q)`, and the bind
//! groups are built from [`of_variant`], so no binding number is written twice. A unit test
//! checks every shader variant's bindings (reflected by naga) against [`of_variant`].

use crate::shaders::ShaderVariant;

/// One binding slot of group 0, the same in every kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Binding {
    /// The per-dispatch parameters (uniform: `Params`, or the packing pass's own).
    Params,
    /// Queries.
    Q,
    /// Keys.
    K,
    /// Values.
    V,
    /// kv_lens followed by the ALiBi slopes (f32 bits).
    Aux,
    /// The output (packing pass: the caller's f16 output).
    Out,
    /// Log-sum-exp.
    Lse,
    /// Additive bias.
    Bias,
    /// Boolean mask, bytes packed 4 per u32.
    Mask,
    /// Scores (three-pass), per-split partial outputs (split-KV), the f32 output (packing).
    Scratch,
    /// Weights (three-pass), per-split partial lse (split-KV).
    Scratch2,
    /// Backward: the upstream gradient dO (shape and layout of q).
    DOut,
    /// Backward: dQ.
    Dq,
    /// Backward: dK.
    Dk,
    /// Backward: dV.
    Dv,
    /// Backward: dbias (the bias's broadcast shape).
    Dbias,
}

impl Binding {
    /// Every binding, in index order.
    pub const ALL: [Binding; 16] = [
        Binding::Params,
        Binding::Q,
        Binding::K,
        Binding::V,
        Binding::Aux,
        Binding::Out,
        Binding::Lse,
        Binding::Bias,
        Binding::Mask,
        Binding::Scratch,
        Binding::Scratch2,
        Binding::DOut,
        Binding::Dq,
        Binding::Dk,
        Binding::Dv,
        Binding::Dbias,
    ];

    /// The `@binding` index.
    pub fn index(self) -> u32 {
        self as u32
    }

    /// The WGSL constant that names the index in the shaders.
    pub fn wgsl_name(self) -> &'static str {
        match self {
            Binding::Params => "B_PARAMS",
            Binding::Q => "B_Q",
            Binding::K => "B_K",
            Binding::V => "B_V",
            Binding::Aux => "B_AUX",
            Binding::Out => "B_OUT",
            Binding::Lse => "B_LSE",
            Binding::Bias => "B_BIAS",
            Binding::Mask => "B_MASK",
            Binding::Scratch => "B_SCRATCH",
            Binding::Scratch2 => "B_SCRATCH2",
            Binding::DOut => "B_DOUT",
            Binding::Dq => "B_DQ",
            Binding::Dk => "B_DK",
            Binding::Dv => "B_DV",
            Binding::Dbias => "B_DBIAS",
        }
    }

    /// True for storage buffers (everything but the uniform parameters).
    pub fn is_storage(self) -> bool {
        self != Binding::Params
    }

    /// The WGSL declarations of every binding constant, prepended to every shader.
    pub(crate) fn wgsl_constants() -> String {
        Binding::ALL
            .iter()
            .map(|b| format!("const {}: u32 = {}u;\n", b.wgsl_name(), b.index()))
            .collect()
    }
}

/// The bindings shader `variant` declares, in index order: what its bind group holds.
pub fn of_variant(variant: &ShaderVariant) -> Vec<Binding> {
    use Binding::*;
    let has = |flag: &str| variant.flags.contains(&flag);
    let modifiers = [(has("BIAS"), Bias), (has("MASK"), Mask)];
    let mut list: Vec<Binding> = match variant.template {
        "qk.wgsl" => vec![Params, Q, K, Aux, Scratch],
        "softmax.wgsl" => {
            let mut l = vec![Params, Scratch, Lse];
            if has("WEIGHTS") {
                l.push(Scratch2);
            }
            l
        }
        "pv.wgsl" => vec![Params, V, Aux, Scratch, Out],
        "flash.wgsl" | "flash_tiled.wgsl" | "flash_mma.wgsl" | "decode.wgsl" => {
            let mut l = vec![Params, Q, K, V, Aux];
            if has("SPLIT") {
                l.extend([Scratch, Scratch2]);
            } else {
                l.extend([Out, Lse]);
            }
            l
        }
        "combine.wgsl" => vec![Params, Out, Lse, Scratch, Scratch2],
        "pack.wgsl" => vec![Params, Out, Scratch],
        // Backward: Scratch holds the pre-pass's row statistics, Lse/Out the forward's
        // outputs (read by the pre-pass of FlashAttention-2's scheme only).
        "backward_prep.wgsl" if has("RECOMPUTE") => vec![Params, Q, K, V, Aux, Scratch, DOut],
        "backward_prep.wgsl" => vec![Params, Aux, Out, Lse, Scratch, DOut],
        "backward_dq.wgsl" => vec![Params, Q, K, V, Aux, Scratch, DOut, Dq],
        "backward_dkv.wgsl" => vec![Params, Q, K, V, Aux, Scratch, DOut, Dk, Dv],
        "backward_dbias.wgsl" => vec![Params, Q, K, V, Aux, Scratch, DOut, Dbias],
        _ => Vec::new(),
    };
    if matches!(
        variant.template,
        "qk.wgsl"
            | "flash.wgsl"
            | "flash_tiled.wgsl"
            | "flash_mma.wgsl"
            | "decode.wgsl"
            | "backward_prep.wgsl"
            | "backward_dq.wgsl"
            | "backward_dkv.wgsl"
            | "backward_dbias.wgsl"
    ) {
        list.extend(modifiers.iter().filter(|(on, _)| *on).map(|(_, b)| *b));
    }
    list.sort();
    list
}

/// Bind group entries for `variant`: `resource` gives each of its bindings' resource (`None`
/// leaves the binding out, which wgpu then reports as a validation error).
pub(crate) fn entries<'a>(
    variant: &[Binding],
    mut resource: impl FnMut(Binding) -> Option<wgpu::BindingResource<'a>>,
) -> Vec<wgpu::BindGroupEntry<'a>> {
    variant
        .iter()
        .filter_map(|&b| {
            resource(b).map(|resource| wgpu::BindGroupEntry {
                binding: b.index(),
                resource,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `@group(0) @binding(n)` globals of `source` and whether each is the uniform.
    fn reflected(source: &str) -> Vec<(u32, bool)> {
        let module = naga::front::wgsl::parse_str(source).expect("parses");
        let mut list: Vec<(u32, bool)> = module
            .global_variables
            .iter()
            .filter_map(|(_, g)| {
                let rb = g.binding.as_ref()?;
                assert_eq!(rb.group, 0);
                Some((rb.binding, g.space == naga::AddressSpace::Uniform))
            })
            .collect();
        list.sort();
        list
    }

    /// Every template and flag combination (the first variant of each, the smallest) declares
    /// exactly the bindings of the Rust table, at its indices, the uniform at `Params`.
    #[test]
    fn every_kernel_declares_the_table_bindings() {
        let mut seen = std::collections::BTreeSet::new();
        let mut checked = 0;
        for v in crate::shaders::all_variants() {
            let mut flags = v.flags.clone();
            flags.sort();
            if !seen.insert((v.template, flags)) {
                continue;
            }
            let expected: Vec<(u32, bool)> = of_variant(&v)
                .iter()
                .map(|b| (b.index(), !b.is_storage()))
                .collect();
            assert!(
                !expected.is_empty(),
                "{}: no bindings in the table",
                v.key()
            );
            assert_eq!(
                reflected(&v.render().expect("renders")),
                expected,
                "{}",
                v.key()
            );
            checked += 1;
        }
        assert!(checked > 100, "only {checked} template/flag combinations");
    }

    #[test]
    fn table_indices_are_distinct_and_in_order() {
        for (n, b) in Binding::ALL.iter().enumerate() {
            assert_eq!(b.index() as usize, n, "{b:?}");
        }
        let names: std::collections::BTreeSet<_> =
            Binding::ALL.iter().map(|b| b.wgsl_name()).collect();
        assert_eq!(names.len(), Binding::ALL.len());
        let consts = Binding::wgsl_constants();
        assert!(consts.contains("const B_SCRATCH2: u32 = 10u;"), "{consts}");
    }
}
