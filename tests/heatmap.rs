//! `wgattn heatmap` and `wgattn::heatmap`: the head sub-problem against the full reference,
//! image sizes (small and 4096-long), mask colours, pixel colours against the CPU reference,
//! and the CLI's exit codes.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use wgattn::heatmap::{self, AttentionMatrix, Heatmap, MASK_COLOR, RenderOptions, Scale, Window};
use wgattn::testdata::{self, Dist};
use wgattn::{AttentionSpec, CausalAlign, Layout};

fn wgattn(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wgattn"))
        .args(args)
        .output()
        .expect("run wgattn")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wgattn-heatmap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn write_case(name: &str, spec: &AttentionSpec, seed: u64) -> PathBuf {
    let (q, k, v) = testdata::inputs(spec, Dist::Normal, seed);
    let p = tmp(name);
    wgattn::io::write_case(&p, spec, &q, &k, &v, None).unwrap();
    p
}

/// Width, height, RGB8 pixels and tEXt chunks of a PNG file.
struct Png {
    width: usize,
    height: usize,
    rgb: Vec<u8>,
    text: Vec<(String, String)>,
}

fn read_png(path: &Path) -> Png {
    let file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    let mut reader = png::Decoder::new(file).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut buf).unwrap();
    assert_eq!(frame.color_type, png::ColorType::Rgb);
    assert_eq!(frame.bit_depth, png::BitDepth::Eight);
    buf.truncate(frame.buffer_size());
    let text = reader
        .info()
        .uncompressed_latin1_text
        .iter()
        .map(|c| (c.keyword.clone(), c.text.clone()))
        .collect();
    Png {
        width: frame.width as usize,
        height: frame.height as usize,
        rgb: buf,
        text,
    }
}

fn close(a: [u8; 3], b: [u8; 3], tol: u8) -> bool {
    a.iter().zip(b).all(|(&x, y)| x.abs_diff(y) <= tol)
}

/// The full reference weights `[B, Hq, Sq, Sk]` of `spec`.
fn reference_weights(spec: &AttentionSpec, q: &[f32], k: &[f32], v: &[f32]) -> Vec<f32> {
    let spec = spec.clone().with_weights(true);
    wgattn::reference::attention(&spec, q, k, v)
        .unwrap()
        .weights
        .unwrap()
}

#[test]
fn head_problem_keeps_every_weight_and_mask() {
    // Every branch of the row/key slicing: no causal, top-left and bottom-right with
    // seq_q <, =, > seq_k, windows starting late, ending past seq_k (top-left), and fully
    // masked windows (bottom-right with seq_q > seq_k); kv_lens, GQA and bshd.
    let specs = [
        AttentionSpec::new(2, 4, 2, 9, 13, 8).kv_lens(vec![13, 5]),
        AttentionSpec::new(2, 4, 2, 9, 13, 8)
            .causal(CausalAlign::TopLeft)
            .kv_lens(vec![7, 13]),
        AttentionSpec::new(2, 4, 1, 9, 13, 8)
            .causal(CausalAlign::BottomRight)
            .layout(Layout::Bshd)
            .kv_lens(vec![3, 11]),
        AttentionSpec::new(1, 2, 2, 17, 6, 8).causal(CausalAlign::TopLeft),
        AttentionSpec::new(2, 2, 1, 17, 6, 8)
            .causal(CausalAlign::BottomRight)
            .layout(Layout::Bshd)
            .kv_lens(vec![6, 4]),
        AttentionSpec::new(1, 1, 1, 8, 8, 4)
            .causal(CausalAlign::TopLeft)
            .scale(0.7),
    ];
    for (n, spec) in specs.iter().enumerate() {
        let (q, k, v) = testdata::inputs(spec, Dist::Normal, 100 + n as u64);
        let full = reference_weights(spec, &q, &k, &v);
        let (sq, sk) = (spec.seq_q, spec.seq_k);
        let query_ranges = [0..sq, 0..1, sq - 1..sq, 2..sq.min(5), sq / 2..sq, 1..sq - 1];
        for b in 0..spec.batch {
            for h in 0..spec.q_heads {
                for queries in query_ranges.iter().cloned() {
                    for keys in [0..sk, 1..sk.min(4), sk / 2..sk] {
                        let window = Window {
                            batch: b,
                            head: h,
                            queries: queries.clone(),
                            keys,
                        };
                        let problem = heatmap::head_problem(spec, &q, &k, &v, &window).unwrap();
                        assert_eq!(problem.spec.batch * problem.spec.q_heads, 1);
                        assert!(problem.spec.seq_q <= queries.end && problem.spec.seq_k <= sk);
                        let sub = wgattn::reference::attention(
                            &problem.spec,
                            &problem.q,
                            &problem.k,
                            &problem.v,
                        )
                        .unwrap();
                        let got = problem.matrix(sub.weights.as_ref().unwrap()).unwrap();
                        let expected = AttentionMatrix::from_weights(spec, &full, &window).unwrap();
                        assert_eq!(got.masked, expected.masked, "mask of {spec:?} {window:?}");
                        let e = wgattn::ErrorStats::compare(&got.weights, &expected.weights);
                        assert!(e.max_abs <= 1e-6, "{e:?} for {spec:?} {window:?}");
                    }
                }
            }
        }
    }
}

#[test]
fn head_problem_slices_queries_and_keys() {
    // A late window of a long causal sequence needs neither the earlier query rows nor the
    // later keys.
    let spec = AttentionSpec::new(1, 2, 1, 4096, 4096, 4).causal(CausalAlign::TopLeft);
    let (q, k, v) = testdata::inputs(&spec, Dist::Normal, 3);
    let window = Window {
        batch: 0,
        head: 1,
        queries: 1000..1100,
        keys: 0..4096,
    };
    let p = heatmap::head_problem(&spec, &q, &k, &v, &window).unwrap();
    assert_eq!((p.spec.seq_q, p.spec.seq_k), (100, 1100));
    assert_eq!(p.spec.causal, Some(CausalAlign::BottomRight));
    assert_eq!(p.spec.kernel, wgattn::Kernel::ThreePass);
    assert!(p.spec.return_weights);
}

fn check_cells(img: &Heatmap, m: &AttentionMatrix, reference: &AttentionMatrix) {
    assert_eq!((img.plot.block_rows, img.plot.block_cols), (1, 1));
    assert_eq!((img.plot.rows, img.plot.cols), (m.rows(), m.cols()));
    for r in 0..m.rows() {
        for c in 0..m.cols() {
            let at = r * m.cols() + c;
            let got = img.cell_color(r, c).unwrap();
            assert_eq!(m.masked[at], reference.masked[at]);
            if reference.masked[at] {
                assert_eq!(got, MASK_COLOR, "masked cell ({r}, {c})");
                // The whole cell, not only its centre.
                let (x0, y0) = (
                    img.plot.rect.x + c * img.plot.cell_width,
                    img.plot.rect.y + r * img.plot.cell_height,
                );
                for (x, y) in [
                    (x0, y0),
                    (x0 + img.plot.cell_width - 1, y0 + img.plot.cell_height - 1),
                ] {
                    assert_eq!(img.pixel(x, y), Some(MASK_COLOR));
                }
            } else {
                let expected = img.color_of(reference.weights[at]);
                assert!(
                    close(got, expected, 2),
                    "cell ({r}, {c}): {got:?} vs {expected:?} for weight {}",
                    reference.weights[at]
                );
                assert_ne!(got, MASK_COLOR);
            }
        }
    }
}

#[test]
fn small_causal_heatmap_matches_reference() {
    let Some(ctx) = common::ctx() else { return };
    let spec = AttentionSpec::new(1, 2, 1, 7, 7, 16).causal(CausalAlign::TopLeft);
    let (q, k, v) = testdata::inputs(&spec, Dist::Normal, 11);
    let full = reference_weights(&spec, &q, &k, &v);
    let window = Window::whole(&spec, 0, 1);
    let m = heatmap::head_weights(ctx, &spec, &q, &k, &v, &window).unwrap();
    let reference = AttentionMatrix::from_weights(&spec, &full, &window).unwrap();
    let e = wgattn::ErrorStats::compare(&m.weights, &reference.weights);
    assert!(e.max_abs < 1e-5, "{e:?}");
    for options in [
        RenderOptions::default(),
        RenderOptions {
            scale: Scale::Log,
            colormap: heatmap::ColorMap::Inferno,
            ..RenderOptions::default()
        },
    ] {
        let img = heatmap::render(&m, &options);
        // 7 cells scaled up to 57 px each; the whole image stays small.
        assert_eq!((img.plot.cell_width, img.plot.cell_height), (57, 57));
        assert_eq!((img.plot.rect.width, img.plot.rect.height), (399, 399));
        assert!(img.width > 399 && img.width <= 700, "{}", img.width);
        assert!(img.height > 399 && img.height <= 600, "{}", img.height);
        assert_eq!(img.masked_cells, 21);
        // The colour range is the reference's min and max visible weight.
        let visible: Vec<f32> = (0..49)
            .filter(|&i| !reference.masked[i])
            .map(|i| reference.weights[i])
            .collect();
        let lo = visible.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = visible.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        assert!((img.min - lo).abs() < 1e-5 && (img.max - hi).abs() < 1e-5);
        check_cells(&img, &m, &reference);
        // The PNG holds the same pixels and the range in its metadata.
        let path = tmp(&format!("small_{}.png", options.colormap.name()));
        img.write_png(&path, &[("Title", "test".into())]).unwrap();
        let png = read_png(&path);
        assert_eq!((png.width, png.height), (img.width, img.height));
        assert_eq!(png.rgb, img.pixels);
        let meta = |key: &str| {
            png.text
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, t)| t.clone())
                .unwrap_or_else(|| panic!("no {key} in {:?}", png.text))
        };
        assert_eq!(meta("Weight max").parse::<f32>().unwrap(), img.max);
        assert_eq!(meta("Weight min").parse::<f32>().unwrap(), img.min);
        assert_eq!(meta("Title"), "test");
    }
}

#[test]
fn kv_lens_and_bottom_right_masks_get_the_mask_colour() {
    let Some(ctx) = common::ctx() else { return };
    // GQA, bshd, bottom-right causal with seq_q < seq_k, and padding in batch entry 1.
    let spec = AttentionSpec::new(2, 4, 2, 6, 11, 16)
        .layout(Layout::Bshd)
        .causal(CausalAlign::BottomRight)
        .kv_lens(vec![11, 7]);
    let (q, k, v) = testdata::inputs(&spec, Dist::Normal, 12);
    let full = reference_weights(&spec, &q, &k, &v);
    for window in [
        Window::whole(&spec, 1, 3),
        Window {
            batch: 1,
            head: 2,
            queries: 2..6,
            keys: 3..11,
        },
        Window::whole(&spec, 0, 1),
    ] {
        let m = heatmap::head_weights(ctx, &spec, &q, &k, &v, &window).unwrap();
        let reference = AttentionMatrix::from_weights(&spec, &full, &window).unwrap();
        let img = heatmap::render(&m, &RenderOptions::default());
        check_cells(&img, &m, &reference);
        // Keys past kv_lens[1] = 7 are masked in every row of batch entry 1.
        if window.batch == 1 {
            for r in 0..m.rows() {
                for j in 7..11 {
                    if window.keys.contains(&j) {
                        let c = j - window.keys.start;
                        assert_eq!(img.cell_color(r, c), Some(MASK_COLOR));
                    }
                }
            }
        }
    }
}

#[test]
fn long_sequence_is_aggregated_into_a_bounded_image() {
    let Some(ctx) = common::ctx() else { return };
    let spec = AttentionSpec::new(1, 1, 1, 4096, 4096, 16).causal(CausalAlign::TopLeft);
    let path = write_case("long.safetensors", &spec, 21);
    let case = wgattn::io::read_case(&path).unwrap();
    let window = Window::whole(&case.spec, 0, 0);
    let m = heatmap::head_weights(ctx, &case.spec, &case.q, &case.k, &case.v, &window).unwrap();
    let img = heatmap::render(&m, &RenderOptions::default());
    let p = &img.plot;
    assert_eq!(
        (p.rows, p.cols, p.block_rows, p.block_cols),
        (1024, 1024, 4, 4)
    );
    assert_eq!((p.rect.width, p.rect.height), (1024, 1024));
    assert!(img.width <= 2048 && img.height <= 2048);
    // Blocks above the diagonal are fully masked; diagonal blocks are partly visible.
    for r in 0..1024 {
        for c in 0..1024 {
            let masked = img.cell_color(r, c) == Some(MASK_COLOR);
            assert_eq!(masked, c > r, "displayed cell ({r}, {c})");
        }
    }
    // Aggregated colours: the max of each 4×4 block from reference rows (weights rebuilt from
    // the reference lse), for a few displayed rows.
    let rows: Vec<_> = [0usize, 1, 517, 1023]
        .iter()
        .flat_map(|&r| (4 * r..4 * r + 4).map(|i| wgattn::reference::RowId { b: 0, h: 0, i }))
        .collect();
    let lse =
        wgattn::reference::attention_rows(&case.spec, &case.q, &case.k, &case.v, &rows).unwrap();
    let scale = case.spec.effective_scale() as f64;
    let weight = |i: usize, j: usize, lse: f32| -> f64 {
        let dot: f64 = (0..16)
            .map(|d| case.q[i * 16 + d] as f64 * case.k[j * 16 + d] as f64)
            .sum();
        (dot * scale - lse as f64).exp()
    };
    for block in lse.chunks(4) {
        let r = block[0].row.i / 4;
        for c in [0, r / 2, r] {
            let max = block
                .iter()
                .flat_map(|row| {
                    (4 * c..4 * c + 4)
                        .filter(|&j| j <= row.row.i)
                        .map(|j| weight(row.row.i, j, row.lse))
                })
                .fold(f64::NEG_INFINITY, f64::max);
            let expected = img.color_of(max as f32);
            let got = img.cell_color(r, c).unwrap();
            assert!(
                close(got, expected, 2),
                "block ({r}, {c}): {got:?} vs {expected:?}"
            );
        }
    }

    // The CLI gives the same bounded image.
    let out = tmp("long.png");
    let o = wgattn(&[
        "heatmap",
        "--input",
        path.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("4x4"), "{}", text(&o));
    let png = read_png(&out);
    assert_eq!((png.width, png.height), (img.width, img.height));
    assert_eq!(png.rgb, img.pixels);
}

#[test]
fn cli_writes_a_png_for_a_window() {
    if common::ctx().is_none() {
        return;
    }
    let spec = AttentionSpec::new(2, 2, 1, 30, 40, 16)
        .causal(CausalAlign::BottomRight)
        .kv_lens(vec![40, 25]);
    let input = write_case("cli.safetensors", &spec, 5);
    let out = tmp("cli.png");
    let o = wgattn(&[
        "heatmap",
        "--input",
        input.to_str().unwrap(),
        "--batch",
        "1",
        "--head",
        "1",
        "--query-range",
        "5..25",
        "--key-range",
        "10..",
        "--output",
        out.to_str().unwrap(),
        "--colormap",
        "magma",
        "--scale",
        "linear",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let png = read_png(&out);
    // 20 rows × 30 columns of square 13-px cells.
    let case = wgattn::io::read_case(&input).unwrap();
    let window = Window {
        batch: 1,
        head: 1,
        queries: 5..25,
        keys: 10..40,
    };
    let full = reference_weights(&case.spec, &case.q, &case.k, &case.v);
    let reference = AttentionMatrix::from_weights(&case.spec, &full, &window).unwrap();
    let options = RenderOptions {
        colormap: heatmap::ColorMap::Magma,
        scale: Scale::Linear,
        ..RenderOptions::default()
    };
    let expected = heatmap::render(&reference, &options);
    assert_eq!((png.width, png.height), (expected.width, expected.height));
    assert_eq!(expected.plot.cell_width, 13);
    let desc = png
        .text
        .iter()
        .find(|(k, _)| k == "Description")
        .map(|(_, t)| t.as_str())
        .unwrap_or("");
    assert!(
        desc.contains("queries 5..25") && desc.contains("keys 10..40"),
        "{desc}"
    );
    // Same cells as the reference's, up to rounding of the colours (the labels may differ in
    // a last digit).
    let r = expected.plot.rect;
    let mut worst = 0;
    for y in r.y..r.y + r.height {
        let row = (y * png.width + r.x) * 3..(y * png.width + r.x + r.width) * 3;
        for (&a, &b) in png.rgb[row.clone()].iter().zip(&expected.pixels[row]) {
            worst = worst.max(a.abs_diff(b));
        }
    }
    assert!(worst <= 2, "largest channel difference {worst}");
}

#[test]
fn cli_rejects_bad_heads_batches_and_ranges_with_exit_2() {
    // All of these fail before a GPU is opened.
    let spec = AttentionSpec::new(2, 4, 2, 9, 12, 8).causal(CausalAlign::TopLeft);
    let input = write_case("bad.safetensors", &spec, 1);
    let out = tmp("bad.png");
    let base = [
        "heatmap",
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ];
    for (extra, expect) in [
        (&["--head", "4"][..], "head = 4"),
        (&["--batch", "2"][..], "batch = 2"),
        (&["--query-range", "5..3"][..], "query_range"),
        (&["--query-range", "0..10"][..], "query_range"),
        (&["--key-range", "3..3"][..], "key_range"),
        (&["--key-range", "0..13"][..], "key_range"),
        (&["--key-range", "a..b"][..], "key_range"),
        (&["--key-range", "4"][..], "key_range"),
        (&["--colormap", "jet"][..], "colormap"),
        (&["--scale", "cubic"][..], "scale"),
        (&["--max-size", "3"][..], "max_size"),
    ] {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let o = wgattn(&args);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", text(&o));
        assert!(text(&o).contains(expect), "{extra:?}: {}", text(&o));
    }
    assert!(!out.exists(), "no image is written on bad input");
    // A missing input file is bad input too.
    let o = wgattn(&[
        "heatmap",
        "--input",
        tmp("missing.safetensors").to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}
