//! The integration tests of the wgattn library, in one binary (one build, one link, one GPU
//! context shared by every module).

mod adapters;
mod async_api;
mod backward;
mod bad_input;
mod chunking;
mod common;
mod device_limits;
mod embedding;
mod files;
mod fused_kernels;
mod gl;
mod gl_concurrent;
mod gpu_errors;
mod gpu_vs_reference;
mod hardening;
mod layer;
mod minilm;
mod mma_flash;
mod naga_check;
mod options;
mod shaders_naga;
mod tiled_flash;
mod tuning;
mod validation_cases;
