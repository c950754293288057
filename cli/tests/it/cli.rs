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
            "kernel = magic",
        ),
        (
            vec!["run", "--input", i, "--output", o, "--scale", "inf"],
            "scale = inf must be finite",
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
    let r = wgattn(&["validate", "--cases", dir.to_str().unwrap(), "--json"]);
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
        (vec!["--dtype", "f8"], "dtype = f8"),
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
    assert!(text(&r).contains("shape = 1,2,2,64,64"), "{}", text(&r));
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
