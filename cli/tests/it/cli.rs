//! The real `wgattn` binary: exit codes, messages and files.

use crate::common;

use std::path::PathBuf;

use wgattn::{AttentionSpec, CausalAlign};

use common::{text, wgattn};

fn tmp(name: &str) -> PathBuf {
    common::tmp_in("cli", name)
}

fn write_case(name: &str, spec: &AttentionSpec, with_out: bool) -> PathBuf {
    let (q, k, v) = wgattn::testdata::inputs(spec, wgattn::testdata::Dist::Normal, 7);
    let out = with_out.then(|| wgattn::reference::attention(spec, &q, &k, &v).unwrap().out);
    let p = tmp(name);
    wgattn::io::write_case(&p, spec, &q, &k, &v, out.as_deref()).unwrap();
    p
}

#[test]
fn run_writes_out_and_check_passes() {
    if common::ctx().is_none() {
        return;
    }
    let spec = AttentionSpec::new(2, 4, 2, 20, 30, 16).causal(CausalAlign::BottomRight);
    let input = write_case("run_in.safetensors", &spec, false);
    let output = tmp("run_out.safetensors");
    let o = wgattn(&[
        "run",
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--lse",
        "--check",
        "--kv-lens",
        "30,9",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("rel_fro"), "{}", text(&o));
    // The file holds out and lse, and matches the reference of the overridden spec.
    let bytes = std::fs::read(&output).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let out: Vec<f32> = bytemuck::pod_collect_to_vec(st.tensor("out").unwrap().data());
    assert_eq!(st.tensor("lse").unwrap().shape(), &[2, 4, 20]);
    let case = wgattn::io::read_case(&input).unwrap();
    let cpu = wgattn::reference::attention(
        &spec.clone().kv_lens(vec![30, 9]),
        &case.q,
        &case.k,
        &case.v,
    )
    .unwrap();
    assert!(wgattn::ErrorStats::compare(&out, &cpu.out).within(1e-5));
}

#[test]
fn flags_override_file_metadata() {
    if common::ctx().is_none() {
        return;
    }
    let spec = AttentionSpec::new(1, 2, 2, 12, 12, 8).causal(CausalAlign::TopLeft);
    let input = write_case("override_in.safetensors", &spec, false);
    let output = tmp("override_out.safetensors");
    let o = wgattn(&[
        "run",
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--causal",
        "none",
        "--scale",
        "0.5",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let written = wgattn::io::read_case_as(&input, None).unwrap();
    let bytes = std::fs::read(&output).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let out: Vec<f32> = bytemuck::pod_collect_to_vec(st.tensor("out").unwrap().data());
    let plain = AttentionSpec::new(1, 2, 2, 12, 12, 8).scale(0.5);
    let cpu = wgattn::reference::attention(&plain, &written.q, &written.k, &written.v).unwrap();
    assert!(wgattn::ErrorStats::compare(&out, &cpu.out).within(1e-5));
}

#[test]
fn bad_input_exits_2_naming_the_problem() {
    let spec = AttentionSpec::new(2, 2, 2, 8, 8, 8);
    let input = write_case("bad_in.safetensors", &spec, false);
    let out = tmp("bad_out.safetensors");
    let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());
    let garbage = tmp("garbage.safetensors");
    std::fs::write(&garbage, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}").unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["run", "--input", i, "--output", o, "--kv-lens", "8,9"],
            "kv_lens[1] = 9 exceeds seq_k = 8",
        ),
        (
            vec!["run", "--input", i, "--output", o, "--kv-lens", "8"],
            "kv_lens = 1 entries",
        ),
        (
            vec!["run", "--input", i, "--output", o, "--causal", "sideways"],
            "sideways",
        ),
        (
            vec!["run", "--input", i, "--output", o, "--kernel", "magic"],
            "'magic'",
        ),
        (
            vec!["run", "--input", i, "--output", o, "--scale", "inf"],
            "inf is not finite",
        ),
        (
            vec!["run", "--input", garbage.to_str().unwrap(), "--output", o],
            "not a valid safetensors file",
        ),
        (
            vec![
                "run",
                "--input",
                "/nonexistent/x.safetensors",
                "--output",
                o,
            ],
            "/nonexistent/x.safetensors",
        ),
        (vec!["run", "--output", o], "--input"),
        (
            vec!["validate", "--cases", "/nonexistent-dir"],
            "nonexistent-dir",
        ),
    ];
    for (args, needle) in cases {
        let r = wgattn(&args);
        assert_eq!(r.status.code(), Some(2), "{args:?}: {}", text(&r));
        assert!(
            text(&r).contains(needle),
            "{args:?}: expected {needle:?} in {}",
            text(&r)
        );
    }
}

#[test]
fn no_matching_adapter_exits_3() {
    let r = wgattn(&["--adapter", "no-such-adapter-xyz", "demo"]);
    assert_eq!(r.status.code(), Some(3), "{}", text(&r));
    assert!(
        text(&r).contains("no GPU adapter matching `no-such-adapter-xyz`"),
        "{}",
        text(&r)
    );
}

#[test]
fn info_json_is_valid() {
    if common::ctx().is_none() {
        return;
    }
    let r = wgattn(&["info", "--json"]);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r));
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    let adapters = v["adapters"].as_array().unwrap();
    assert!(adapters.iter().filter(|a| a["chosen"] == true).count() == 1);
    assert!(
        adapters[0]["limits"]["max_storage_buffer_binding_size"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[test]
fn validate_passes_shared_cases_and_fails_wrong_ones() {
    if common::ctx().is_none() {
        return;
    }
    let dir = common::cases_dir();
    // The grid itself runs in-process in the library's tests (gpu_vs_reference, auto kernel).
    let r = wgattn(&[
        "validate",
        "--no-grid",
        "--cases",
        dir.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r));
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    let files: Vec<_> = v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["source"] == "file")
        .collect();
    assert_eq!(files.len(), 9);
    assert!(files.iter().all(|c| c["pass"] == true));

    // A case whose stored out is wrong must fail with exit 1.
    let bad_dir = tmp("wrong_cases");
    std::fs::create_dir_all(&bad_dir).unwrap();
    let spec = AttentionSpec::new(1, 1, 1, 4, 4, 4);
    let (q, k, v) = wgattn::testdata::inputs(&spec, wgattn::testdata::Dist::Normal, 1);
    let wrong = vec![1.0f32; spec.q_len()];
    wgattn::io::write_case(
        bad_dir.join("wrong.safetensors"),
        &spec,
        &q,
        &k,
        &v,
        Some(&wrong),
    )
    .unwrap();
    let r = wgattn(&[
        "validate",
        "--no-grid",
        "--cases",
        bad_dir.to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(1), "{}", text(&r));
    assert!(text(&r).contains("FAIL"));
}

#[test]
fn demo_runs_and_reports_error() {
    if common::ctx().is_none() {
        return;
    }
    let r = wgattn(&["demo", "--runs", "1"]);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r));
    let t = text(&r);
    assert!(
        t.contains("adapter:") && t.contains("rel_fro") && t.contains(" ok"),
        "{t}"
    );
}

#[test]
fn issue6_flags_work_and_bad_shapes_exit_2() {
    if common::ctx().is_none() {
        return;
    }
    let spec = AttentionSpec::new(2, 2, 2, 6, 9, 8);
    let input = write_case("opts_in.safetensors", &spec, false);
    let (i, out) = (input.to_str().unwrap(), tmp("opts_out.safetensors"));
    let o = out.to_str().unwrap();
    // A bias file broadcast over heads, a mask file shared by all, and every other option.
    let bias_file = tmp("bias.safetensors");
    let bias: Vec<f32> = (0..2 * 6 * 9).map(|x| (x % 7) as f32 * 0.1).collect();
    wgattn::io::write_tensors(
        &bias_file,
        &[("bias", vec![2, 1, 6, 9], &bias)],
        Default::default(),
    )
    .unwrap();
    let mask_file = tmp("mask.safetensors");
    let mask: Vec<bool> = (0..6 * 9).map(|x| x % 4 != 1).collect();
    wgattn::io::write_typed(
        &mask_file,
        &[("mask", vec![1, 1, 6, 9], wgattn::io::TensorOut::Bool(&mask))],
        Default::default(),
    )
    .unwrap();
    let r = wgattn(&[
        "run",
        "--input",
        i,
        "--output",
        o,
        "--dtype",
        "f16",
        "--bias-file",
        bias_file.to_str().unwrap(),
        "--mask-file",
        mask_file.to_str().unwrap(),
        "--window",
        "3,-1",
        "--alibi",
        "--softcap",
        "8",
        "--check",
    ]);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r));
    let written = wgattn::io::read_case_as(&out, None).err();
    assert!(written.is_some(), "the output file has no q/k/v");
    let bytes = std::fs::read(&out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("out").unwrap().dtype(), safetensors::Dtype::F16);
    // Wrong bias shape, wrong mask shape, bad window: exit 2 naming the problem.
    let bad_bias = tmp("bad_bias.safetensors");
    wgattn::io::write_tensors(
        &bad_bias,
        &[("bias", vec![1, 3, 6, 9], &vec![0.0; 3 * 54])],
        Default::default(),
    )
    .unwrap();
    for (args, needle) in [
        (
            vec!["--bias-file", bad_bias.to_str().unwrap()],
            "bias.shape = [1, 3, 6, 9] must be [2 or 1, 2 or 1, 6, 9]",
        ),
        (
            vec!["--mask-file", bias_file.to_str().unwrap()],
            "missing tensor `mask`",
        ),
        (vec!["--window", "-3,0"], "window.left = -3"),
        (vec!["--softcap", "-1"], "softcap = -1"),
        (vec!["--alibi", "0.5"], "alibi = 1 slopes"),
        (vec!["--dtype", "f8"], "'f8'"),
    ] {
        let mut full = vec!["run", "--input", i, "--output", o];
        full.extend(args.iter().copied());
        let r = wgattn(&full);
        assert_eq!(r.status.code(), Some(2), "{full:?}: {}", text(&r));
        assert!(
            text(&r).contains(needle),
            "{full:?}: expected {needle:?} in {}",
            text(&r)
        );
    }
}

#[test]
fn bench_json_is_valid_with_the_documented_fields() {
    if common::ctx().is_none() {
        return;
    }
    let r = wgattn(&[
        "bench",
        "--shape",
        "1,2,2,64,64,32",
        "--shape",
        "1,4,2,1,300,64",
        "--causal",
        "bottom-right",
        "--runs",
        "2",
        "--json",
    ]);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r));
    let lines: Vec<&str> = std::str::from_utf8(&r.stdout).unwrap().lines().collect();
    assert_eq!(lines.len(), 2, "one JSON object per shape");
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for field in [
            "adapter",
            "shape",
            "kernel",
            "dtype",
            "median_ms",
            "min_ms",
            "max_ms",
            "runs",
            "gflops",
            "timing",
            "tuned",
            "variant",
        ] {
            assert!(!v[field].is_null(), "{field} missing in {line}");
        }
        for field in ["name", "backend", "device_type", "driver"] {
            assert!(v["adapter"][field].is_string(), "adapter.{field} in {line}");
        }
        assert!(v["min_ms"].as_f64().unwrap() <= v["median_ms"].as_f64().unwrap());
        assert!(matches!(
            v["timing"].as_str(),
            Some("gpu-timestamp") | Some("wall")
        ));
        assert_eq!(v["runs"], 2);
    }
    let r = wgattn(&["bench", "--shape", "1,2,2,64,64", "--runs", "1"]);
    assert_eq!(r.status.code(), Some(2), "{}", text(&r));
    assert!(
        text(&r).contains("'1,2,2,64,64'") && text(&r).contains("six integers"),
        "{}",
        text(&r)
    );
}

/// Arguments that select no adapter: a command that got past its checks exits 3, so a check
/// that ran first is seen as exit 2 without touching a GPU.
const NO_ADAPTER: [&str; 2] = ["--adapter", "no-such-adapter-xyz"];

fn with_no_adapter<'a>(args: &[&'a str]) -> Vec<&'a str> {
    NO_ADAPTER.iter().chain(args).copied().collect()
}

#[test]
fn errors_about_a_file_name_the_file() {
    let spec = AttentionSpec::new(1, 2, 2, 8, 8, 8);
    let input = write_case("named_in.safetensors", &spec, false);
    let o = tmp("named_out.safetensors");
    let bias = tmp("named_bias.safetensors");
    wgattn::io::write_tensors(
        &bias,
        &[("bias", vec![1, 3, 8, 8], &vec![0.0; 3 * 64])],
        Default::default(),
    )
    .unwrap();
    let mask = tmp("named_mask.safetensors");
    wgattn::io::write_typed(
        &mask,
        &[(
            "mask",
            vec![1, 1, 8, 7],
            wgattn::io::TensorOut::Bool(&[true; 56]),
        )],
        Default::default(),
    )
    .unwrap();
    // q with a NaN: the input file is named.
    let nan_in = tmp("named_nan.safetensors");
    let (mut q, k, v) = wgattn::testdata::inputs(&spec, wgattn::testdata::Dist::Normal, 7);
    q[3] = f32::NAN;
    wgattn::io::write_case(&nan_in, &spec, &q, &k, &v, None).unwrap();
    let (i, o) = (input.to_str().unwrap(), o.to_str().unwrap());
    for (args, file) in [
        (
            vec![
                "run",
                "--input",
                i,
                "--output",
                o,
                "--bias-file",
                bias.to_str().unwrap(),
            ],
            &bias,
        ),
        (
            vec![
                "run",
                "--input",
                i,
                "--output",
                o,
                "--mask-file",
                mask.to_str().unwrap(),
            ],
            &mask,
        ),
        (
            vec!["run", "--input", nan_in.to_str().unwrap(), "--output", o],
            &nan_in,
        ),
        (
            vec![
                "heatmap",
                "--input",
                nan_in.to_str().unwrap(),
                "--output",
                "x.png",
            ],
            &nan_in,
        ),
    ] {
        let r = wgattn(&with_no_adapter(&args));
        assert_eq!(r.status.code(), Some(2), "{args:?}: {}", text(&r));
        assert!(
            text(&r).contains(file.to_str().unwrap()),
            "{args:?}: expected the file {} named in {}",
            file.display(),
            text(&r)
        );
    }
}

#[test]
fn broadcast_shapes_of_size_one_read_plainly() {
    let spec = AttentionSpec::new(1, 2, 2, 8, 8, 8);
    let input = write_case("plain_in.safetensors", &spec, false);
    let bias = tmp("plain_bias.safetensors");
    wgattn::io::write_tensors(
        &bias,
        &[("bias", vec![1, 3, 8, 8], &vec![0.0; 3 * 64])],
        Default::default(),
    )
    .unwrap();
    let r = wgattn(&with_no_adapter(&[
        "run",
        "--input",
        input.to_str().unwrap(),
        "--output",
        tmp("plain_out.safetensors").to_str().unwrap(),
        "--bias-file",
        bias.to_str().unwrap(),
    ]));
    assert_eq!(r.status.code(), Some(2), "{}", text(&r));
    assert!(
        text(&r).contains("must be [1, 2 or 1, 8, 8]"),
        "{}",
        text(&r)
    );
}

#[test]
fn a_negative_shape_gets_one_message_however_it_is_written() {
    for command in [
        &["bench", "--runs", "1"][..],
        &["gen", "--output", "never.safetensors"][..],
    ] {
        let spaced: Vec<&str> = command
            .iter()
            .copied()
            .chain(["--shape", "-1,2,2,8,8,8"])
            .collect();
        let joined: Vec<&str> = command
            .iter()
            .copied()
            .chain(["--shape=-1,2,2,8,8,8"])
            .collect();
        let (a, b) = (
            wgattn(&with_no_adapter(&spaced)),
            wgattn(&with_no_adapter(&joined)),
        );
        assert_eq!(a.status.code(), Some(2), "{}", text(&a));
        assert_eq!(b.status.code(), Some(2), "{}", text(&b));
        assert_eq!(text(&a), text(&b));
        assert!(text(&a).contains("B = \"-1\""), "{}", text(&a));
    }
}

#[test]
fn shape_errors_come_before_the_gpu_is_opened() {
    // 3 query heads cannot share 2 kv heads: exit 2 about the heads, not exit 3 about the
    // adapter.
    let r = wgattn(&with_no_adapter(&[
        "bench",
        "--shape",
        "1,3,2,8,8,8",
        "--runs",
        "1",
    ]));
    assert_eq!(r.status.code(), Some(2), "{}", text(&r));
    assert!(text(&r).contains("kv_heads"), "{}", text(&r));
    assert!(!text(&r).contains("no GPU adapter"), "{}", text(&r));
}

#[test]
fn runs_and_seconds_out_of_range_are_refused() {
    for (args, needle) in [
        (
            &["bench", "--shape", "1,1,1,4,4,4", "--runs", "0"][..],
            "--runs",
        ),
        (
            &["bench", "--shape", "1,1,1,4,4,4", "--seconds", "0"][..],
            "--seconds",
        ),
        (
            &["bench", "--shape", "1,1,1,4,4,4", "--seconds", "-1"][..],
            "--seconds",
        ),
        (
            &["bench", "--shape", "1,1,1,4,4,4", "--seconds", "NaN"][..],
            "--seconds",
        ),
        (&["demo", "--runs", "0"][..], "--runs"),
    ] {
        let r = wgattn(&with_no_adapter(args));
        assert_eq!(r.status.code(), Some(2), "{args:?}: {}", text(&r));
        assert!(text(&r).contains(needle), "{args:?}: {}", text(&r));
    }
}

#[test]
fn validate_no_grid_needs_cases() {
    let r = wgattn(&with_no_adapter(&["validate", "--no-grid"]));
    assert_eq!(r.status.code(), Some(2), "{}", text(&r));
    assert!(text(&r).contains("--cases"), "{}", text(&r));
}

#[test]
fn a_file_whose_q_k_v_dtypes_differ_is_refused() {
    let spec = AttentionSpec::new(1, 1, 1, 4, 4, 4);
    let (q, k, v) = wgattn::testdata::inputs(&spec, wgattn::testdata::Dist::Normal, 3);
    let mixed = tmp("mixed.safetensors");
    let shape = vec![1, 1, 4, 4];
    wgattn::io::write_typed(
        &mixed,
        &[
            ("q", shape.clone(), wgattn::io::TensorOut::F16(&q)),
            ("k", shape.clone(), wgattn::io::TensorOut::F32(&k)),
            ("v", shape, wgattn::io::TensorOut::F32(&v)),
        ],
        Default::default(),
    )
    .unwrap();
    let r = wgattn(&with_no_adapter(&[
        "run",
        "--input",
        mixed.to_str().unwrap(),
        "--output",
        tmp("mixed_out.safetensors").to_str().unwrap(),
    ]));
    assert_eq!(r.status.code(), Some(2), "{}", text(&r));
    let t = text(&r);
    assert!(
        t.contains(mixed.to_str().unwrap()) && t.contains("must share one dtype"),
        "{t}"
    );
}

#[test]
fn check_rows_are_checked_before_anything_runs() {
    let spec = AttentionSpec::new(1, 1, 1, 8, 8, 8);
    let input = write_case("rows_in.safetensors", &spec, false);
    let out = tmp("rows_out.safetensors");
    for (rows, needle) in [("0,99", "check_rows = 99"), ("0,x", "--check-rows")] {
        let r = wgattn(&with_no_adapter(&[
            "run",
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--check",
            "--check-rows",
            rows,
        ]));
        assert_eq!(r.status.code(), Some(2), "{rows}: {}", text(&r));
        assert!(text(&r).contains(needle), "{rows}: {}", text(&r));
    }
    assert!(!out.exists(), "nothing ran, nothing was written");
}

#[test]
fn heatmap_colour_scale_is_named_apart_from_the_softmax_scale() {
    let spec = AttentionSpec::new(1, 1, 1, 4, 4, 4);
    let input = write_case("cscale_in.safetensors", &spec, false);
    let base = [
        "heatmap",
        "--input",
        input.to_str().unwrap(),
        "--output",
        "never.png",
    ];
    let old: Vec<&str> = base.iter().copied().chain(["--scale", "log"]).collect();
    let r = wgattn(&with_no_adapter(&old));
    assert_eq!(r.status.code(), Some(2), "{}", text(&r));
    assert!(text(&r).contains("--scale"), "{}", text(&r));
    // --color-scale is accepted: the command gets as far as opening the (missing) adapter.
    let new: Vec<&str> = base
        .iter()
        .copied()
        .chain(["--color-scale", "log"])
        .collect();
    let r = wgattn(&with_no_adapter(&new));
    assert_eq!(r.status.code(), Some(3), "{}", text(&r));
}

#[test]
fn help_lists_the_values_of_every_enum() {
    for (command, values) in [
        (
            "bench",
            &[
                "three-pass",
                "split-kv",
                "bottom-right",
                "wall",
                "f16",
                "standard",
            ][..],
        ),
        ("run", &["flash", "bshd", "top-left"][..]),
        ("gen", &["normal30", "offset3", "shared", "full"][..]),
        (
            "heatmap",
            &["inferno", "plasma", "mean", "--color-scale", "log"][..],
        ),
    ] {
        let r = wgattn(&[command, "--help"]);
        assert_eq!(r.status.code(), Some(0), "{}", text(&r));
        for v in values {
            assert!(
                text(&r).contains(v),
                "{command} --help lacks {v}: {}",
                text(&r)
            );
        }
    }
}

/// A bench record as `wgattn bench --json` writes it.
fn record(kernel: &str, dtype: &str, seq: usize, ms: f64) -> wgattn_cli::report::BenchRecord {
    use wgattn_cli::report::{AdapterRecord, BenchRecord, ShapeRecord};
    BenchRecord {
        adapter: AdapterRecord {
            name: "Test GPU".into(),
            backend: "vulkan".into(),
            device_type: "DiscreteGpu".into(),
            driver: "test".into(),
        },
        shape: ShapeRecord {
            batch: 1,
            q_heads: 2,
            kv_heads: 2,
            seq_q: seq,
            seq_k: seq,
            head_dim: 32,
            causal: None,
        },
        kernel: kernel.into(),
        splits: 1,
        shaders: vec![],
        dtype: dtype.into(),
        options: format!("b1 h2/2 q{seq} k{seq} d32 bhsd"),
        median_ms: ms,
        min_ms: ms,
        max_ms: ms,
        runs: 3,
        gflops: 1.0 / ms,
        kv_gbps: 0.0,
        tuned: false,
        variant: kernel.into(),
        timing: "wall".into(),
    }
}

#[test]
fn plot_draws_json_files_as_svg_and_png() {
    let a = tmp("plot_a.json");
    let b = tmp("plot_b.json");
    let lines = |rs: &[wgattn_cli::report::BenchRecord]| {
        rs.iter()
            .map(|r| serde_json::to_string(r).unwrap() + "\n")
            .collect::<String>()
    };
    std::fs::write(
        &a,
        lines(&[
            record("flash", "f32", 64, 0.5),
            record("flash", "f32", 128, 1.5),
        ]),
    )
    .unwrap();
    std::fs::write(
        &b,
        lines(&[
            record("three-pass", "f16", 64, 0.9),
            record("three-pass", "f16", 256, 4.0),
        ]),
    )
    .unwrap();
    let svg = tmp("plot.svg");
    let r = wgattn(&[
        "plot",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--output",
        svg.to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r));
    assert!(text(&r).contains("3 shapes, 2 series"), "{}", text(&r));
    let t = std::fs::read_to_string(&svg).unwrap();
    for needle in [
        "<svg",
        "flash on Test GPU (vulkan), f32",
        "three-pass on Test GPU (vulkan), f16",
        "GFLOP/s per shape",
        "median time per shape",
        "1x2x2x256x256x32",
    ] {
        assert!(t.contains(needle), "{needle} missing from the SVG");
    }
    let png = tmp("plot.png");
    let r = wgattn(&[
        "plot",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--output",
        png.to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r));
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let reader = decoder.read_info().unwrap();
    let info = reader.info();
    let data = wgattn_cli::bench_plot::PlotData::new(&[
        record("flash", "f32", 64, 0.5),
        record("flash", "f32", 128, 1.5),
        record("three-pass", "f16", 64, 0.9),
        record("three-pass", "f16", 256, 4.0),
    ]);
    assert_eq!(
        (info.width, info.height),
        (wgattn_cli::bench_plot::WIDTH, data.height())
    );
    // Not blank: the series' colours are there.
    let mut reader = reader;
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    reader.next_frame(&mut buf).unwrap();
    let distinct: std::collections::HashSet<&[u8]> = buf.chunks(3).collect();
    assert!(distinct.len() > 10, "{} colours", distinct.len());
}

#[test]
fn plot_errors_name_the_file() {
    let bad = tmp("plot_bad.json");
    std::fs::write(&bad, "{\"adapter\": 1}\n").unwrap();
    let r = wgattn(&["plot", bad.to_str().unwrap(), "--output", "never.svg"]);
    assert_eq!(r.status.code(), Some(2), "{}", text(&r));
    assert!(text(&r).contains(bad.to_str().unwrap()), "{}", text(&r));
    let good = tmp("plot_good.json");
    std::fs::write(
        &good,
        serde_json::to_string(&record("flash", "f32", 64, 1.0)).unwrap(),
    )
    .unwrap();
    let r = wgattn(&["plot", good.to_str().unwrap(), "--output", "plot.gif"]);
    assert_eq!(r.status.code(), Some(2), "{}", text(&r));
    assert!(text(&r).contains("plot.gif"), "{}", text(&r));
}

#[test]
fn bench_plot_writes_an_svg() {
    if common::ctx().is_none() {
        return;
    }
    let svg = tmp("bench.svg");
    let r = wgattn(&[
        "bench",
        "--shape",
        "1,2,2,64,64,32",
        "--runs",
        "3",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r));
    let t = std::fs::read_to_string(&svg).unwrap();
    let adapter = &common::ctx().unwrap().adapter_info().name;
    assert!(
        t.starts_with("<svg") && t.contains("GFLOP/s per shape"),
        "{t}"
    );
    assert!(
        t.contains(adapter.as_str()),
        "series names the adapter {adapter}"
    );
    assert!(t.contains("1x2x2x64x64x32"), "the shape is in the key");
}

/// `validate --cases DIR` reports every file — a bad one as an error row — and exits with the
/// worst status instead of stopping at the first bad file.
#[test]
fn validate_reports_every_case_file_and_exits_with_the_worst_status() {
    if common::ctx().is_none() {
        return;
    }
    let dir = tmp("mixed_cases");
    std::fs::create_dir_all(&dir).unwrap();
    // Sorted first: a file that is not a case at all.
    std::fs::write(dir.join("a_garbage.safetensors"), b"not a safetensors file").unwrap();
    let spec = AttentionSpec::new(1, 1, 1, 4, 6, 4);
    let (q, k, v) = wgattn::testdata::inputs(&spec, wgattn::testdata::Dist::Normal, 2);
    let good = wgattn::reference::attention(&spec, &q, &k, &v).unwrap().out;
    let wrong: Vec<f32> = good.iter().map(|x| x + 1.0).collect();
    wgattn::io::write_case(
        dir.join("b_good.safetensors"),
        &spec,
        &q,
        &k,
        &v,
        Some(&good),
    )
    .unwrap();
    wgattn::io::write_case(
        dir.join("c_wrong.safetensors"),
        &spec,
        &q,
        &k,
        &v,
        Some(&wrong),
    )
    .unwrap();
    let r = wgattn(&["validate", "--no-grid", "--cases", dir.to_str().unwrap()]);
    let t = text(&r);
    assert_eq!(r.status.code(), Some(2), "{t}");
    for name in ["a_garbage", "b_good", "c_wrong"] {
        assert!(t.contains(name), "{name} not reported:\n{t}");
    }
    assert!(t.contains("3 cases, 2 failed"), "{t}");
    // Without the garbage file the worst is out of tolerance: exit 1.
    std::fs::remove_file(dir.join("a_garbage.safetensors")).unwrap();
    let r = wgattn(&[
        "validate",
        "--no-grid",
        "--cases",
        dir.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(r.status.code(), Some(1), "{}", text(&r));
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(v["cases"].as_array().unwrap().len(), 2);
    assert!(v["cases"][0]["lse"]["tolerance"].as_f64().unwrap() > 0.0);
}

/// Shapes whose sizes overflow are refused by name (exit 2) before anything is allocated:
/// `gen` with this shape used to abort after a 4 GiB allocation.
#[test]
fn gen_refuses_overflowing_shapes() {
    let out = tmp("huge.safetensors");
    let r = wgattn(&[
        "gen",
        "--shape",
        "1048576,1048576,1048576,65536,65536,256",
        "--output",
        out.to_str().unwrap(),
    ]);
    let t = text(&r);
    assert_eq!(r.status.code(), Some(2), "{t}");
    assert!(
        t.contains("q size") && t.contains("overflows 64 bits"),
        "{t}"
    );
    assert!(!out.exists());
}
