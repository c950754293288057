//! `wgattn run --grad` and `wgattn bench --backward` (issue 16).

use crate::common;

use std::path::PathBuf;

use wgattn::io::TensorOut;
use wgattn::testdata::{self, Dist, Rng};
use wgattn::{AttentionSpec, Broadcast, CausalAlign, ErrorStats, Tensor};

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wgattn-cli-grad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// A case file with q, k, v, bias and `d_out` of the given shape.
fn write_grad_case(name: &str, spec: &AttentionSpec, d_out_shape: Vec<usize>) -> PathBuf {
    let data = testdata::generate(spec, Dist::Normal, 31);
    let n: usize = d_out_shape.iter().product();
    let d_out = Rng::new(32).normals(n, 0.0, 1.0);
    let path = tmp(name);
    let tensors = vec![
        ("q", spec.q_shape().to_vec(), TensorOut::F32(&data.q)),
        ("k", spec.kv_shape().to_vec(), TensorOut::F32(&data.k)),
        ("v", spec.kv_shape().to_vec(), TensorOut::F32(&data.v)),
        (
            "bias",
            spec.bias.unwrap().shape(spec).to_vec(),
            TensorOut::F32(data.bias.as_ref().unwrap()),
        ),
        ("d_out", d_out_shape, TensorOut::F32(&d_out)),
    ];
    wgattn::io::write_typed(&path, &tensors, wgattn::io::spec_metadata(spec)).unwrap();
    path
}

fn spec() -> AttentionSpec {
    AttentionSpec::new(2, 4, 2, 17, 23, 8)
        .causal(CausalAlign::BottomRight)
        .bias(Broadcast {
            per_batch: false,
            per_head: true,
        })
}

#[test]
fn run_grad_writes_gradients_and_check_passes() {
    if common::ctx().is_none() {
        return;
    }
    let spec = spec();
    let input = write_grad_case("grad.safetensors", &spec, spec.q_shape().to_vec());
    let output = tmp("grad-out.safetensors");
    let o = common::wgattn(&[
        "run",
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--grad",
        "--check",
    ]);
    let text = common::text(&o);
    assert!(o.status.success(), "{text}");
    for name in ["dq", "dk", "dv", "dbias"] {
        assert!(text.contains(&format!("check {name} against")), "{text}");
    }
    // the file's gradients are the reference's
    let case = wgattn::io::read_case(&input).unwrap();
    let (_, d_out) = wgattn::io::read_float_tensor(&input, "d_out").unwrap();
    let cpu =
        wgattn::reference::attention_backward(&case.spec, &case.inputs(), Tensor::F32(&d_out))
            .unwrap();
    for (name, expected, shape) in [
        ("dq", &cpu.dq, spec.q_shape().to_vec()),
        ("dk", &cpu.dk, spec.kv_shape().to_vec()),
        ("dbias", cpu.dbias.as_ref().unwrap(), vec![1, 4, 17, 23]),
    ] {
        let (s, got) = wgattn::io::read_float_tensor(&output, name).unwrap();
        assert_eq!(s, shape, "{name}");
        let e = ErrorStats::compare(&got, expected);
        assert!(e.within(1e-4), "{name}: {e:?}");
    }
    for name in ["out", "lse", "dv"] {
        wgattn::io::read_float_tensor(&output, name).unwrap();
    }
}

#[test]
fn run_grad_without_or_with_bad_d_out_exits_2() {
    if common::ctx().is_none() {
        return;
    }
    let spec = spec();
    let output = tmp("bad-out.safetensors");
    let bad = write_grad_case("bad-grad.safetensors", &spec, vec![2, 4, 17, 7]);
    let o = common::wgattn(&[
        "run",
        "--input",
        bad.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--grad",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", common::text(&o));
    assert!(common::text(&o).contains("d_out"), "{}", common::text(&o));
    let plain = tmp("no-d-out.safetensors");
    let data = testdata::generate(&spec, Dist::Normal, 1);
    wgattn::io::write_case_with(
        &plain,
        &spec,
        &data.q,
        &data.k,
        &data.v,
        data.bias.as_deref(),
        None,
        None,
    )
    .unwrap();
    let o = common::wgattn(&[
        "run",
        "--input",
        plain.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--grad",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", common::text(&o));
    assert!(common::text(&o).contains("d_out"), "{}", common::text(&o));
}

#[test]
fn bench_backward_json() {
    if common::ctx().is_none() {
        return;
    }
    let o = common::wgattn(&[
        "bench",
        "--backward",
        "--shape",
        "1,2,1,33,40,16",
        "--causal",
        "top-left",
        "--runs",
        "2",
        "--json",
    ]);
    let text = common::text(&o);
    assert!(o.status.success(), "{text}");
    let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(v["pass"], "backward");
    assert_eq!(v["runs"], 2);
    assert!(v["median_ms"].as_f64().unwrap() > 0.0);
    assert!(v["gflops"].as_f64().unwrap() > 0.0);
    // forward + backward takes at least as long as the fastest backward alone
    let both = v["fwd_bwd_median_ms"].as_f64().unwrap();
    assert!(both >= v["min_ms"].as_f64().unwrap() * 0.5, "{text}");
    assert!(v["fwd_bwd_gflops"].as_f64().unwrap() > 0.0);
    assert!(v["adapter"]["name"].is_string());
}

/// `wgattn run --grad --check` passes on every public validation case and every case of
/// tests/data/cases, each given a `d_out` (tests/data/grad, made by
/// scripts/make-grad-cases.py), and writes every gradient in the layout of its input.
#[test]
fn run_grad_check_passes_on_every_case_with_d_out() {
    if common::ctx().is_none() {
        return;
    }
    let dir = common::data_dir().join("grad");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        13,
        "9 public cases + 4 own cases in {}",
        dir.display()
    );
    let mut failures = Vec::new();
    for (n, input) in files.iter().enumerate() {
        let output = tmp(&format!("case-grad-{n}.safetensors"));
        let args = vec![
            "run",
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
            "--grad",
            "--check",
        ];
        let o = common::wgattn(&args);
        if !o.status.success() {
            failures.push(format!("{}: {}", input.display(), common::text(&o)));
            continue;
        }
        let case = wgattn::io::read_case(input).unwrap();
        let (q_shape, _) = wgattn::io::read_float_tensor(input, "q").unwrap();
        let (k_shape, _) = wgattn::io::read_float_tensor(input, "k").unwrap();
        for (name, shape) in [("dq", &q_shape), ("dk", &k_shape), ("dv", &k_shape)] {
            let (s, got) = wgattn::io::read_float_tensor(&output, name).unwrap();
            assert_eq!(&s, shape, "{name} of {}", input.display());
            assert!(
                got.iter().all(|x| x.is_finite()),
                "{name} of {}",
                input.display()
            );
        }
        let has_bias = case.bias.is_some();
        assert_eq!(
            wgattn::io::read_float_tensor(&output, "dbias").is_ok(),
            has_bias,
            "dbias written exactly when {} has a bias",
            input.display()
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
