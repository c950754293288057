#include "common.wgsl"
@group(0) @binding(B_PARAMS) var<uniform> P: Params;
#include "bad.wgsl"
@compute @workgroup_size(1)
fn main() {}
