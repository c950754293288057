#flag BAD_PARSE BAD_TYPE
#include "common/params.inc.wgsl"
@group(0) @binding(B_PARAMS) var<uniform> P: Params;
#include "bad.inc.wgsl"
@compute @workgroup_size(1)
fn main() {}
