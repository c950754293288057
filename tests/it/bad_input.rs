//! Bad input gets a typed error naming the problem, never a panic or wrong output.

use crate::common;

use wgattn::{AttentionSpec, Buffers, DeviceLimits, Error};

fn problems(spec: &AttentionSpec) -> Vec<String> {
    match spec.validate(&DeviceLimits::unbounded()) {
        Err(Error::InvalidSpec { problems }) => problems.iter().map(|p| p.to_string()).collect(),
        other => panic!("expected InvalidSpec for {spec:?}, got {other:?}"),
    }
}

#[test]
fn invalid_specs_name_field_and_value() {
    let base = AttentionSpec::new(2, 8, 2, 16, 33, 64);
    assert!(base.validate(&DeviceLimits::unbounded()).is_ok());
    let cases: Vec<(AttentionSpec, &str)> = vec![
        (
            AttentionSpec {
                batch: 0,
                ..base.clone()
            },
            "batch = 0 must be at least 1",
        ),
        (
            AttentionSpec {
                seq_q: 0,
                ..base.clone()
            },
            "seq_q = 0 must be at least 1",
        ),
        (
            AttentionSpec {
                seq_k: 0,
                ..base.clone()
            },
            "seq_k = 0 must be at least 1",
        ),
        (
            AttentionSpec {
                q_heads: 0,
                ..base.clone()
            },
            "q_heads = 0 must be at least 1",
        ),
        (
            AttentionSpec {
                kv_heads: 0,
                ..base.clone()
            },
            "kv_heads = 0 must be at least 1",
        ),
        (
            AttentionSpec {
                head_dim: 0,
                ..base.clone()
            },
            "head_dim = 0 must be in 1..=256",
        ),
        (
            AttentionSpec {
                head_dim: 257,
                ..base.clone()
            },
            "head_dim = 257 must be in 1..=256",
        ),
        (
            AttentionSpec {
                kv_heads: 3,
                ..base.clone()
            },
            "q_heads = 8 is not a multiple of kv_heads = 3",
        ),
        (
            base.clone().kv_lens(vec![33]),
            "kv_lens = 1 entries must have one entry per batch = 2",
        ),
        (
            base.clone().kv_lens(vec![1, 2, 3]),
            "kv_lens = 3 entries must have one entry per batch = 2",
        ),
        (
            base.clone().kv_lens(vec![33, 40]),
            "kv_lens[1] = 40 exceeds seq_k = 33",
        ),
        (base.clone().scale(f32::NAN), "scale = NaN must be finite"),
        (
            base.clone().scale(f32::INFINITY),
            "scale = inf must be finite",
        ),
    ];
    for (spec, expected) in cases {
        let p = problems(&spec);
        assert!(p.iter().any(|x| x == expected), "{expected:?} not in {p:?}");
    }
    // Every problem is reported, not just the first.
    let many = AttentionSpec {
        batch: 0,
        head_dim: 0,
        ..base
    };
    assert_eq!(problems(&many).len(), 2);
}

#[test]
fn sizes_over_device_limits_are_spec_errors() {
    let limits = DeviceLimits {
        max_buffer_size: 1 << 20,
        ..DeviceLimits::unbounded()
    };
    let spec = AttentionSpec::new(1, 8, 8, 600, 512, 64);
    let text = spec.validate(&limits).unwrap_err().to_string();
    assert!(
        text.contains("q = 1228800 bytes exceeds max_buffer_size = 1048576"),
        "{text}"
    );
    let huge = AttentionSpec::new(1024, 64, 64, 4096, 4096, 256);
    let text = huge
        .validate(&DeviceLimits::unbounded())
        .unwrap_err()
        .to_string();
    assert!(text.contains("exceeds the 2^32-1 elements"), "{text}");
}

#[test]
fn wrong_lengths_and_non_finite_inputs_are_rejected_by_reference() {
    let spec = AttentionSpec::new(1, 2, 1, 4, 5, 8);
    let (q, k, v) = wgattn::testdata::inputs(&spec, wgattn::testdata::Dist::Normal, 1);
    match wgattn::reference::attention(&spec, &q[1..], &k, &v) {
        Err(Error::InputLength {
            tensor: "q",
            expected: 64,
            got: 63,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    match wgattn::reference::attention(&spec, &q, &k, &v[..39]) {
        Err(Error::InputLength { tensor: "v", .. }) => {}
        other => panic!("{other:?}"),
    }
    let mut bad = k.clone();
    bad[7] = f32::NAN;
    match wgattn::reference::attention(&spec, &q, &bad, &v) {
        Err(Error::NonFinite {
            tensor: "k",
            index: 7,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn gpu_path_rejects_bad_input_before_gpu_work() {
    let Some(ctx) = common::ctx() else { return };
    let spec = AttentionSpec::new(1, 2, 1, 4, 5, 8);
    let (q, k, mut v) = wgattn::testdata::inputs(&spec, wgattn::testdata::Dist::Normal, 1);
    assert!(matches!(
        ctx.attention(&spec, &q, &k[2..], &v),
        Err(Error::InputLength { tensor: "k", .. })
    ));
    v[3] = f32::INFINITY;
    assert!(matches!(
        ctx.attention(&spec, &q, &k, &v),
        Err(Error::NonFinite {
            tensor: "v",
            index: 3,
            ..
        })
    ));
    let zero = AttentionSpec {
        seq_k: 0,
        ..spec.clone()
    };
    assert!(matches!(
        ctx.attention(&zero, &q, &[], &[]),
        Err(Error::InvalidSpec { .. })
    ));
    assert!(matches!(
        ctx.plan(&AttentionSpec {
            head_dim: 300,
            ..spec
        }),
        Err(Error::InvalidSpec { .. })
    ));
}

#[test]
fn caller_buffers_are_checked_before_encoding() {
    let Some(ctx) = common::ctx() else { return };
    let spec = AttentionSpec::new(1, 2, 1, 8, 8, 16).with_lse(true);
    let plan = ctx.plan(&spec).unwrap();
    let sizes = plan.sizes();
    let dev = ctx.device();
    let mk = |size: u64, usage: wgpu::BufferUsages| {
        dev.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage,
            mapped_at_creation: false,
        })
    };
    let s = wgpu::BufferUsages::STORAGE;
    let (q, k, v, out, lse) = (
        mk(sizes.q, s),
        mk(sizes.kv, s),
        mk(sizes.kv, s),
        mk(sizes.q, s),
        mk(sizes.lse, s),
    );
    let small = mk(sizes.q - 4, s);
    let unusable = mk(sizes.q, wgpu::BufferUsages::COPY_DST);
    let mut enc = dev.create_command_encoder(&Default::default());
    let good = Buffers {
        lse: Some(&lse),
        ..Buffers::new(&q, &k, &v, &out)
    };
    let expect =
        |bufs: Buffers, buffer: &str, needle: &str, enc: &mut wgpu::CommandEncoder| match plan
            .encode(enc, &bufs)
        {
            Err(Error::BadBuffer { buffer: b, problem }) => {
                assert_eq!(b, buffer);
                assert!(problem.contains(needle), "{problem}");
            }
            other => panic!("expected BadBuffer {buffer}, got {other:?}"),
        };
    expect(
        Buffers {
            out: &small,
            ..good
        },
        "out",
        "bytes, the spec needs",
        &mut enc,
    );
    expect(
        Buffers {
            q: &unusable,
            ..good
        },
        "q",
        "lacks STORAGE",
        &mut enc,
    );
    expect(
        Buffers { out: &q, ..good },
        "out",
        "same buffer as `q`",
        &mut enc,
    );
    expect(
        Buffers { lse: None, ..good },
        "lse",
        "asks for lse",
        &mut enc,
    );
    expect(
        Buffers {
            weights: Some(&out),
            ..good
        },
        "weights",
        "without weights",
        &mut enc,
    );
    plan.encode(&mut enc, &good).expect("good buffers encode");
    ctx.queue().submit([enc.finish()]);
}
