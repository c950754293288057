//! Reading and writing safetensors case files; malformed files give typed errors.

use crate::common;

use std::collections::HashMap;

use wgattn::io;
use wgattn::{AttentionSpec, CausalAlign, Error, Layout};

fn tmp(name: &str) -> std::path::PathBuf {
    common::tmp_in("files", name)
}

fn message(r: Result<io::Case, Error>) -> String {
    match r {
        Err(e @ Error::BadFile { .. }) => e.to_string(),
        other => panic!("expected BadFile, got {other:?}"),
    }
}

#[test]
fn a_written_case_reads_back_identically() {
    let spec = AttentionSpec::new(2, 4, 2, 5, 7, 3)
        .layout(Layout::Bshd)
        .causal(CausalAlign::BottomRight)
        .kv_lens(vec![7, 2])
        .scale(0.25);
    let (q, k, v) = wgattn::testdata::inputs(&spec, wgattn::testdata::Dist::Normal, 9);
    let p = tmp("roundtrip.safetensors");
    io::write_case(&p, &spec, &q, &k, &v, Some(&q)).unwrap();
    let c = io::read_case(&p).unwrap();
    assert_eq!(c.spec, spec);
    assert_eq!((c.q, c.k, c.v), (q.clone(), k, v));
    assert_eq!(c.out, Some(q));
}

#[test]
fn malformed_files_are_typed_errors_naming_the_problem() {
    let spec = AttentionSpec::new(1, 2, 2, 4, 4, 8);
    let (q, k, v) = wgattn::testdata::inputs(&spec, wgattn::testdata::Dist::Normal, 1);
    let good = tmp("good.safetensors");
    io::write_case(&good, &spec, &q, &k, &v, None).unwrap();
    let bytes = std::fs::read(&good).unwrap();

    let p = tmp("truncated.safetensors");
    std::fs::write(&p, &bytes[..bytes.len() - 10]).unwrap();
    assert!(message(io::read_case(&p)).contains("not a valid safetensors file"));

    let p = tmp("garbage.safetensors");
    std::fs::write(&p, b"this is not a tensor file").unwrap();
    assert!(message(io::read_case(&p)).contains("not a valid safetensors file"));

    let p = tmp("missing_v.safetensors");
    io::write_tensors(
        &p,
        &[
            ("q", spec.q_shape().to_vec(), &q),
            ("k", spec.kv_shape().to_vec(), &k),
        ],
        HashMap::new(),
    )
    .unwrap();
    assert!(message(io::read_case(&p)).contains("missing tensor `v`"));

    let p = tmp("wrong_dtype.safetensors");
    let ints: Vec<u8> = vec![0; spec.kv_len() * 4];
    let views = vec![
        (
            "q".to_string(),
            safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                spec.q_shape().to_vec(),
                bytemuck::cast_slice(&q),
            )
            .unwrap(),
        ),
        (
            "k".to_string(),
            safetensors::tensor::TensorView::new(
                safetensors::Dtype::I32,
                spec.kv_shape().to_vec(),
                &ints,
            )
            .unwrap(),
        ),
        (
            "v".to_string(),
            safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                spec.kv_shape().to_vec(),
                bytemuck::cast_slice(&v),
            )
            .unwrap(),
        ),
    ];
    std::fs::write(&p, safetensors::serialize(views, None).unwrap()).unwrap();
    assert!(message(io::read_case(&p)).contains("tensor `k` has dtype I32"));

    let p = tmp("3d.safetensors");
    io::write_tensors(
        &p,
        &[
            ("q", vec![2, 4, 8], &q),
            ("k", spec.kv_shape().to_vec(), &k),
            ("v", spec.kv_shape().to_vec(), &v),
        ],
        HashMap::new(),
    )
    .unwrap();
    assert!(message(io::read_case(&p)).contains("expected 4 dimensions"));

    let p = tmp("meta_mismatch.safetensors");
    let meta = HashMap::from([("num_q_heads".to_string(), "3".to_string())]);
    io::write_tensors(
        &p,
        &[
            ("q", spec.q_shape().to_vec(), &q),
            ("k", spec.kv_shape().to_vec(), &k),
            ("v", spec.kv_shape().to_vec(), &v),
        ],
        meta,
    )
    .unwrap();
    assert!(message(io::read_case(&p)).contains("num_q_heads = 3 but the tensor shapes give 2"));

    let p = tmp("bad_causal.safetensors");
    let meta = HashMap::from([("causal".to_string(), "maybe".to_string())]);
    io::write_tensors(
        &p,
        &[
            ("q", spec.q_shape().to_vec(), &q),
            ("k", spec.kv_shape().to_vec(), &k),
            ("v", spec.kv_shape().to_vec(), &v),
        ],
        meta,
    )
    .unwrap();
    assert!(message(io::read_case(&p)).contains("causal = \"maybe\""));

    match io::read_case(tmp("does_not_exist.safetensors")) {
        Err(Error::Io { .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn shared_validation_cases_parse() {
    let dir = common::cases_dir();
    let files = wgattn::validation::case_files(&dir).unwrap();
    assert_eq!(files.len(), 9, "the public set has 9 cases");
    for f in files {
        let c = io::read_case(&f).unwrap();
        assert!(c.out.is_some(), "{}", f.display());
        assert!(c.spec.validate(&wgattn::DeviceLimits::unbounded()).is_ok());
    }
}
