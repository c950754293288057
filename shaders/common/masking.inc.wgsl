// The masking rule: a logit (scale·q·k after soft-cap, ALiBi and bias, natural units) at or
// below MASKED_CUT is masked, exactly like -inf. MASKED_CUT mirrors wgattn::MASKED_LOGIT
// (src/spec/options.rs; a unit test checks they agree) and the CPU reference applies the same
// rule. Masked logits hold MASKED. Kernels that keep scores in base 2 compare with
// MASKED_CUT2.
const MASKED: f32 = -3.0e38;
const MASKED_CUT: f32 = -1.0e38;
const MASKED_CUT2: f32 = MASKED_CUT * 1.4426950408889634;
