//! GPU kernel families. Each one builds its pipelines and per-chunk parameters once (at plan
//! time) and records its dispatches into a caller's encoder.

pub(crate) mod bindings;
pub(crate) mod chunks;
pub(crate) mod dispatch;
pub(crate) mod flash;
pub(crate) mod pack;
pub(crate) mod params;
pub(crate) mod three_pass;
