//! Criterion benchmarks of every kernel on the standard shapes, at sizes lavapipe finishes in
//! reasonable time (the 1×32×2048×128 causal shape runs with 8 heads here; `wgattn bench
//! --preset standard` runs the full set). Each iteration is one GPU-resident attention timed
//! by GPU timestamps when the adapter has them (else wall time to completion).

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use wgattn::bench::{Runner, Timing};
use wgattn::{AttentionSpec, CausalAlign, Context, Kernel};

fn shapes() -> Vec<(&'static str, AttentionSpec)> {
    let causal = Some(CausalAlign::TopLeft);
    vec![
        ("1x8x512x64", AttentionSpec::new(1, 8, 8, 512, 512, 64)),
        ("1x8x1024x64", AttentionSpec::new(1, 8, 8, 1024, 1024, 64)),
        (
            "1x8x1024x64 causal",
            AttentionSpec::new(1, 8, 8, 1024, 1024, 64).causal(causal),
        ),
        ("4x12x256x64", AttentionSpec::new(4, 12, 12, 256, 256, 64)),
        (
            "1x8x2048x128 causal",
            AttentionSpec::new(1, 8, 8, 2048, 2048, 128).causal(causal),
        ),
        (
            "decode 1x8x1x4096x64",
            AttentionSpec::new(1, 8, 8, 1, 4096, 64),
        ),
        (
            "decode gqa 1x32/8x1x8192x128",
            AttentionSpec::new(1, 32, 8, 1, 8192, 128),
        ),
    ]
}

fn attention(c: &mut Criterion) {
    let ctx = match Context::new() {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("no GPU adapter, nothing to benchmark: {e}");
            return;
        }
    };
    for (name, spec) in shapes() {
        let mut group = c.benchmark_group(name);
        group.sample_size(10);
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(3));
        group.throughput(Throughput::Elements(spec.flops() as u64));
        for kernel in [Kernel::ThreePass, Kernel::Flash, Kernel::SplitKv] {
            if kernel == Kernel::SplitKv && spec.seq_q > 16 {
                continue;
            }
            let runner = match Runner::new(&ctx, &spec.clone().kernel(kernel), Timing::Auto) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("{name} {kernel}: {e}");
                    continue;
                }
            };
            group.bench_function(BenchmarkId::from_parameter(kernel), |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| {
                            Duration::from_secs_f64(runner.run_once().expect("benchmark run") / 1e3)
                        })
                        .sum()
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, attention);
criterion_main!(benches);
