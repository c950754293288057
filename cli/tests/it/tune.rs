//! `wgattn tune` and the tune cache through the real binary: the cache it writes is what
//! `bench` then uses (`tuned` in its JSON), `--untuned` ignores it, and a file that is not a
//! tune cache is reported and left as it was.

use crate::common;

use common::{text, wgattn};

#[test]
fn tune_writes_a_cache_that_bench_uses() {
    if common::ctx().is_none() {
        return;
    }
    let cache = common::tmp_in("tune", "tune.json");
    let _ = std::fs::remove_file(&cache);
    let c = cache.to_str().unwrap();
    let r = wgattn(&[
        "tune",
        "--shape",
        "1,2,2,40,64,16",
        "--cache",
        c,
        "--seconds",
        "0.01",
        "--json",
    ]);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r));
    let lines: Vec<&str> = std::str::from_utf8(&r.stdout).unwrap().lines().collect();
    assert_eq!(lines.len(), 1, "one JSON object per class");
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["class"]["storage"], "f32");
    assert!(v["entry"]["choice"]["family"].is_string(), "{}", lines[0]);
    let candidates = v["candidates"].as_array().unwrap();
    assert_eq!(candidates[0]["choice"], "default");
    assert!(candidates.len() >= 5);
    let file = wgattn::tune::TuneFile::read(&cache).unwrap().unwrap();
    assert_eq!(file.entries.len(), 1);

    let bench = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec![
            "bench",
            "--shape",
            "1,2,2,40,64,16",
            "--runs",
            "1",
            "--json",
        ];
        args.extend_from_slice(extra);
        let r = wgattn(&args);
        assert_eq!(r.status.code(), Some(0), "{}", text(&r));
        serde_json::from_str(std::str::from_utf8(&r.stdout).unwrap().trim()).unwrap()
    };
    let tuned = bench(&["--tune-cache", c]);
    assert_eq!(tuned["tuned"], true, "{tuned}");
    assert!(!tuned["variant"].as_str().unwrap().is_empty());
    let untuned = bench(&["--untuned"]);
    assert_eq!(untuned["tuned"], false, "{untuned}");
    // another class of the same adapter is not tuned
    let r = wgattn(&[
        "bench",
        "--shape",
        "1,2,2,40,64,128",
        "--runs",
        "1",
        "--json",
        "--tune-cache",
        c,
    ]);
    let v: serde_json::Value =
        serde_json::from_str(std::str::from_utf8(&r.stdout).unwrap().trim()).unwrap();
    assert_eq!(v["tuned"], false);
}

#[test]
fn a_file_that_is_not_a_tune_cache_is_reported_and_kept() {
    if common::ctx().is_none() {
        return;
    }
    let cache = common::tmp_in("tune", "not-a-cache.json");
    std::fs::write(&cache, "[1, 2, 3]").unwrap();
    let c = cache.to_str().unwrap();
    for args in [
        &["tune", "--shape", "1,1,1,8,8,8", "--cache", c][..],
        &[
            "bench",
            "--shape",
            "1,1,1,8,8,8",
            "--runs",
            "1",
            "--tune-cache",
            c,
        ][..],
    ] {
        let r = wgattn(args);
        assert_eq!(r.status.code(), Some(2), "{args:?}: {}", text(&r));
        assert!(text(&r).contains("tune cache"), "{}", text(&r));
    }
    assert_eq!(std::fs::read_to_string(&cache).unwrap(), "[1, 2, 3]");
}
