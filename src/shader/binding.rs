//! The GPU interface's binding numbers, named once. The template step prepends every entry as
//! a WGSL constant (`const B_Q: u32 = 1u;`), the shaders write `@binding(B_Q)`, and every
//! [`ShaderVariant`](super::ShaderVariant) carries the list of the bindings its shader
//! declares (set where the variant is built), from which the bind groups are made; so no
//! binding number is written twice. A test checks every variant's list against naga's
//! reflection of its rendered shader.

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
    /// Layers: the input activations of a projection, norm or gather.
    Input,
    /// Layers: a weight matrix, norm scale or embedding table.
    Weight,
    /// Layers: the tensor added to a projection's output (laid out like it).
    Residual,
    /// Layers: the rotary cos/sin table.
    Table,
}

impl Binding {
    /// Every binding, in index order.
    pub const ALL: [Binding; 20] = [
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
        Binding::Input,
        Binding::Weight,
        Binding::Residual,
        Binding::Table,
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
            Binding::Input => "B_INPUT",
            Binding::Weight => "B_WEIGHT",
            Binding::Residual => "B_RESIDUAL",
            Binding::Table => "B_TABLE",
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

#[cfg(test)]
mod tests {
    use super::*;

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
