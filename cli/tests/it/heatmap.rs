//! `wgattn heatmap` and `wgattn_cli::heatmap`: the head sub-problem against the full reference for
//! every spec option (bias and mask broadcasts, sliding windows, ALiBi, soft-cap, f16, causal
//! alignments, kv_lens), image sizes (small and 4096-long), mask colours, pixel colours against
//! the CPU reference, sizing against device limits, and the CLI's output and exit codes.

use crate::common;

use std::path::{Path, PathBuf};

use wgattn::testdata::{self, Dist};
use wgattn::{Alibi, AttentionSpec, Broadcast, CausalAlign, DType, DeviceLimits, Inputs, Layout};
use wgattn_cli::heatmap::{
    self, AttentionMatrix, Heatmap, MASK_COLOR, RenderOptions, Scale, Window,
};

use common::{text, wgattn};

fn tmp(name: &str) -> PathBuf {
    common::tmp_in("heatmap", name)
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
fn reference_weights(spec: &AttentionSpec, inputs: &Inputs) -> Vec<f32> {
    let spec = spec.clone().with_weights(true);
    wgattn::reference::attention_with(&spec, inputs)
        .unwrap()
        .weights
        .unwrap()
}

/// The `window` of the CPU reference's weights of a case file.
fn reference_matrix(case: &wgattn::io::Case, window: &Window) -> AttentionMatrix {
    let full = reference_weights(&case.spec, &case.inputs());
    AttentionMatrix::from_weights(&case.spec, &case.inputs(), &full, window).unwrap()
}

/// Specs covering every option a sub-problem must keep.
fn option_specs() -> Vec<AttentionSpec> {
    let per_batch = Broadcast {
        per_batch: true,
        per_head: false,
    };
    let per_head = Broadcast {
        per_batch: false,
        per_head: true,
    };
    vec![
        // Every branch of the row/key slicing: no causal, top-left and bottom-right with
        // seq_q <, =, > seq_k, windows starting late, ending past seq_k (top-left), and fully
        // masked windows (bottom-right with seq_q > seq_k); kv_lens, GQA and bshd.
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
        // Sliding windows, ALiBi, bias and mask tensors of every broadcast, soft-capping, f16.
        AttentionSpec::new(2, 4, 2, 11, 14, 8)
            .window(2, 1)
            .alibi(Alibi::Standard)
            .bias(Broadcast::SHARED)
            .mask(Broadcast::FULL)
            .softcap(5.0)
            .kv_lens(vec![14, 9]),
        AttentionSpec::new(2, 2, 1, 12, 10, 8)
            .window(3, -1)
            .alibi(Alibi::Slopes(vec![0.3, 0.05]))
            .bias(per_batch)
            .layout(Layout::Bshd),
        AttentionSpec::new(1, 2, 2, 9, 15, 8)
            .window(-1, 2)
            .mask(per_head)
            .kv_lens(vec![12]),
        AttentionSpec::new(1, 3, 1, 7, 12, 8).alibi(Alibi::Standard),
        AttentionSpec::new(2, 2, 2, 14, 8, 8)
            .causal(CausalAlign::TopLeft)
            .window(2, 0)
            .alibi(Alibi::Standard)
            .mask(per_head)
            .dtype(DType::F16)
            .kv_lens(vec![8, 5]),
        AttentionSpec::new(2, 4, 2, 9, 16, 8)
            .causal(CausalAlign::BottomRight)
            .window(4, -1)
            .bias(Broadcast::FULL)
            .layout(Layout::Bshd)
            .softcap(3.0),
        AttentionSpec::new(1, 2, 1, 13, 7, 8)
            .causal(CausalAlign::BottomRight)
            .alibi(Alibi::Standard)
            .bias(per_head)
            .mask(per_batch),
        AttentionSpec::new(1, 1, 1, 10, 10, 8).window(0, 0),
        AttentionSpec::new(2, 2, 2, 8, 11, 8)
            .mask(Broadcast::FULL)
            .bias(Broadcast::SHARED)
            .kv_lens(vec![11, 6]),
    ]
}

#[test]
fn head_problem_keeps_every_weight_and_mask() {
    // The sub-problem's reference weights and mask equal the full problem's, cell by cell, for
    // every option and slicing branch.
    let (mut extra_rows, mut padded_keys, mut dropped_keys, mut unaligned) = (0, 0, 0, 0);
    for (n, spec) in option_specs().iter().enumerate() {
        let data = testdata::generate(spec, Dist::Normal, 100 + n as u64);
        let inputs = data.inputs();
        let full = reference_weights(spec, &inputs);
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
                        let problem = heatmap::head_problem(spec, &inputs, &window).unwrap();
                        let p = &problem.spec;
                        assert_eq!((p.batch, p.q_heads, p.kv_heads), (1, 1, 1));
                        assert_eq!((p.dtype, p.softcap), (spec.dtype, spec.softcap));
                        assert!(p.return_weights && p.kernel == wgattn::Kernel::ThreePass);
                        assert_eq!(problem.first_query, queries.start);
                        assert!(problem.first_query + p.seq_q <= sq, "{p:?}");
                        assert!(problem.first_key + p.seq_k <= sk + sq, "{p:?}");
                        let head = heatmap::head_spec(spec, &window).unwrap();
                        assert_eq!(&head.spec, p);
                        assert_eq!(head.first_key, problem.first_key);
                        extra_rows += (p.seq_q > queries.len()) as usize;
                        padded_keys += (problem.first_key + p.seq_k > sk) as usize;
                        dropped_keys += (problem.first_key > 0) as usize;
                        unaligned += (p.causal.is_none() && spec.causal.is_some()) as usize;
                        let sub = wgattn::reference::attention_with(p, &problem.inputs())
                            .unwrap_or_else(|e| panic!("{e} for {p:?}"));
                        let got = problem.matrix(sub.weights.as_ref().unwrap()).unwrap();
                        let expected =
                            AttentionMatrix::from_weights(spec, &inputs, &full, &window).unwrap();
                        assert_eq!(got.masked, expected.masked, "mask of {spec:?} {window:?}");
                        let e = wgattn::ErrorStats::compare(&got.weights, &expected.weights);
                        assert!(e.max_abs <= 1e-6, "{e:?} for {spec:?} {window:?}");
                    }
                }
            }
        }
    }
    // Every way of cutting was taken.
    assert!(extra_rows > 0 && padded_keys > 0 && dropped_keys > 0 && unaligned > 0);
}

#[test]
fn window_mask_has_every_source() {
    // Structural masks, mask-tensor drops and −∞ bias each mask cells; a finite bias or ALiBi
    // term does not.
    let spec = AttentionSpec::new(1, 2, 1, 6, 6, 4)
        .causal(CausalAlign::TopLeft)
        .window(1, -1)
        .alibi(Alibi::Standard)
        .bias(Broadcast::SHARED)
        .mask(Broadcast::SHARED);
    let (q, k, v) = testdata::inputs(&spec, Dist::Normal, 4);
    let mut bias = vec![-50.0f32; 36];
    bias[3 * 6 + 2] = f32::NEG_INFINITY;
    let mut mask = vec![true; 36];
    mask[4 * 6 + 4] = false;
    let inputs = Inputs::new(&q, &k, &v).with_bias(&bias).with_mask(&mask);
    let window = Window::whole(&spec, 0, 1);
    let masked = heatmap::window_mask(&spec, &inputs, &window).unwrap();
    for i in 0..6 {
        for j in 0..6 {
            let expected = j > i || j + 1 < i || (i, j) == (3, 2) || (i, j) == (4, 4);
            assert_eq!(masked[i * 6 + j], expected, "cell ({i}, {j})");
        }
    }
    // Bias of the wrong length is an input error, not a panic.
    let short = Inputs::new(&q, &k, &v)
        .with_bias(&bias[..35])
        .with_mask(&mask);
    assert!(
        heatmap::window_mask(&spec, &short, &window)
            .unwrap_err()
            .is_input_error()
    );
}

#[test]
fn rows_that_fit_bounds_the_sub_problem() {
    let spec = AttentionSpec::new(1, 1, 1, 100, 100, 4);
    let limits = DeviceLimits {
        max_buffer_size: 100 * 4 * 10,
        ..DeviceLimits::unbounded()
    };
    let window = Window::whole(&spec, 0, 0);
    let err = heatmap::head_spec(&spec, &window)
        .unwrap()
        .spec
        .validate(&limits)
        .unwrap_err();
    assert!(err.to_string().contains("weights"), "{err}");
    assert_eq!(heatmap::rows_that_fit(&spec, &window, &limits), 10);
    let late = Window {
        queries: 95..100,
        ..window.clone()
    };
    assert_eq!(heatmap::rows_that_fit(&spec, &late, &limits), 5);
    // Causal rows 0..r need only keys 0..r: r² · 4 bytes ≤ 4000.
    let causal = spec.clone().causal(CausalAlign::TopLeft);
    assert_eq!(heatmap::rows_that_fit(&causal, &window, &limits), 31);
    let tiny = DeviceLimits {
        max_buffer_size: 16,
        ..DeviceLimits::unbounded()
    };
    assert_eq!(heatmap::rows_that_fit(&spec, &window, &tiny), 0);
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
    let p = heatmap::head_problem(&spec, &Inputs::new(&q, &k, &v), &window).unwrap();
    assert_eq!((p.spec.seq_q, p.spec.seq_k), (100, 1100));
    assert_eq!(p.spec.causal, Some(CausalAlign::BottomRight));
    assert_eq!(p.spec.kernel, wgattn::Kernel::ThreePass);
    assert!(p.spec.return_weights);
    // A symmetric sliding window without causal mask, with ALiBi: the band's rows plus the
    // window's right side (to place the diagonal), against the keys the band can see.
    let local = AttentionSpec::new(1, 2, 1, 4096, 4096, 4)
        .window(64, 64)
        .alibi(Alibi::Standard);
    let p = heatmap::head_problem(&local, &Inputs::new(&q, &k, &v), &window).unwrap();
    assert_eq!((p.first_query, p.spec.seq_q), (1000, 164));
    assert_eq!((p.first_key, p.spec.seq_k), (936, 228));
    assert_eq!(p.spec.alibi, Some(Alibi::Slopes(vec![1.0 / 256.0])));
    assert_eq!(p.spec.window, local.window);
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
    let inputs = Inputs::new(&q, &k, &v);
    let full = reference_weights(&spec, &inputs);
    let window = Window::whole(&spec, 0, 1);
    let m = heatmap::head_weights(ctx, &spec, &inputs, &window).unwrap();
    let reference = AttentionMatrix::from_weights(&spec, &inputs, &full, &window).unwrap();
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
        let img = heatmap::render(&m, &options).expect("render");
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
    let inputs = Inputs::new(&q, &k, &v);
    let full = reference_weights(&spec, &inputs);
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
        let m = heatmap::head_weights(ctx, &spec, &inputs, &window).unwrap();
        let reference = AttentionMatrix::from_weights(&spec, &inputs, &full, &window).unwrap();
        let img = heatmap::render(&m, &RenderOptions::default()).expect("render");
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
    let m = heatmap::head_weights(ctx, &case.spec, &case.inputs(), &window).unwrap();
    let img = heatmap::render(&m, &RenderOptions::default()).expect("render");
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
    let lse = wgattn::reference::attention_rows(&case.spec, &case.inputs(), &rows).unwrap();
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
        "--color-scale",
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
    let expected = heatmap::render(
        &reference_matrix(&case, &window),
        &RenderOptions {
            colormap: heatmap::ColorMap::Magma,
            scale: Scale::Linear,
            ..RenderOptions::default()
        },
    )
    .expect("render");
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
fn bias_mask_window_and_alibi_on_a_sliced_head_match_the_reference() {
    let Some(ctx) = common::ctx() else { return };
    // Bias and mask tensors of different broadcasts, a sliding window and ALiBi (standard and
    // per-head slopes), with and without a causal mask, soft-capping, f16 storage, GQA, bshd
    // and key padding; each drawn for a band of rows and keys of one head.
    let cases = [
        (
            AttentionSpec::new(2, 4, 2, 40, 48, 16)
                .layout(Layout::Bshd)
                .window(6, 3)
                .alibi(Alibi::Standard)
                .bias(Broadcast {
                    per_batch: false,
                    per_head: true,
                })
                .mask(Broadcast {
                    per_batch: true,
                    per_head: false,
                })
                .softcap(20.0)
                .kv_lens(vec![48, 41]),
            Window {
                batch: 1,
                head: 3,
                queries: 10..30,
                keys: 4..44,
            },
        ),
        (
            AttentionSpec::new(1, 2, 1, 36, 36, 16)
                .causal(CausalAlign::TopLeft)
                .window(9, -1)
                .alibi(Alibi::Slopes(vec![0.5, 0.125]))
                .bias(Broadcast::FULL)
                .mask(Broadcast::SHARED)
                .dtype(DType::F16),
            Window {
                batch: 0,
                head: 1,
                queries: 20..36,
                keys: 5..36,
            },
        ),
        (
            // No causal mask and a window unbounded on the right: rows after the band are
            // computed to place the diagonal.
            AttentionSpec::new(1, 2, 2, 24, 30, 16)
                .window(4, -1)
                .alibi(Alibi::Standard)
                .bias(Broadcast::SHARED)
                .mask(Broadcast::FULL),
            Window {
                batch: 0,
                head: 0,
                queries: 3..9,
                keys: 0..30,
            },
        ),
    ];
    for (n, (spec, window)) in cases.iter().enumerate() {
        let data = testdata::generate(spec, Dist::Normal, 40 + n as u64);
        let inputs = data.inputs();
        let full = reference_weights(spec, &inputs);
        let reference = AttentionMatrix::from_weights(spec, &inputs, &full, window).unwrap();
        let m = heatmap::head_weights(ctx, spec, &inputs, window).unwrap();
        assert_eq!(m.masked, reference.masked, "mask of case {n}");
        let e = wgattn::ErrorStats::compare(&m.weights, &reference.weights);
        let tol = if spec.dtype == DType::F16 { 1e-4 } else { 1e-5 };
        assert!(e.nan_count == 0 && e.max_abs < tol, "case {n}: {e:?}");
        // Every source of masking shows up in the band: the window (or causal mask), the
        // mask tensor and −∞ bias, each on cells the others leave visible.
        let (b, h) = (window.batch, window.head);
        let bias = data.bias.as_ref().unwrap();
        let mask = data.mask.as_ref().unwrap();
        let (bb, mb) = (spec.bias.unwrap(), spec.mask.unwrap());
        let (mut structural, mut dropped, mut minus_inf) = (0, 0, 0);
        for (r, i) in window.queries.clone().enumerate() {
            let visible = spec.visible_keys(b, i);
            for (c, j) in window.keys.clone().enumerate() {
                let masked = m.masked[r * m.cols() + c];
                let kept = mask[mb.index(spec, b, h, i, j)];
                let inf = bias[bb.index(spec, b, h, i, j)] == f32::NEG_INFINITY;
                assert_eq!(masked, !visible.contains(&j) || !kept || inf);
                structural += !visible.contains(&j) as usize;
                dropped += (visible.contains(&j) && !kept) as usize;
                minus_inf += (visible.contains(&j) && kept && inf) as usize;
            }
        }
        assert!(
            structural > 0 && dropped > 0 && minus_inf > 0,
            "case {n}: {structural} {dropped} {minus_inf}"
        );
        for options in [
            RenderOptions::default(),
            RenderOptions {
                scale: Scale::Linear,
                colormap: heatmap::ColorMap::Plasma,
                ..RenderOptions::default()
            },
        ] {
            let img = heatmap::render(&m, &options).expect("render");
            check_cells(&img, &m, &reference);
            img.write_png(tmp(&format!("options_{n}.png")), &[])
                .unwrap();
        }
    }
}

#[test]
fn cli_draws_a_case_with_bias_mask_window_and_alibi() {
    if common::ctx().is_none() {
        return;
    }
    let spec = AttentionSpec::new(2, 4, 2, 32, 40, 16)
        .causal(CausalAlign::BottomRight)
        .window(12, -1)
        .alibi(Alibi::Standard)
        .softcap(30.0)
        .bias(Broadcast::FULL)
        .mask(Broadcast {
            per_batch: true,
            per_head: false,
        })
        .kv_lens(vec![40, 33]);
    let data = testdata::generate(&spec, Dist::Normal, 77);
    let input = tmp("options.safetensors");
    wgattn::io::write_case_with(
        &input,
        &spec,
        &data.q,
        &data.k,
        &data.v,
        data.bias.as_deref(),
        data.mask.as_deref(),
        None,
    )
    .unwrap();
    let out = tmp("options_cli.png");
    let o = wgattn(&[
        "heatmap",
        "--input",
        input.to_str().unwrap(),
        "--batch",
        "1",
        "--head",
        "2",
        "--query-range",
        "8..28",
        "--key-range",
        "2..36",
        "--output",
        out.to_str().unwrap(),
        "--color-scale",
        "linear",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let case = wgattn::io::read_case(&input).unwrap();
    assert_eq!(case.spec, spec.clone().scale(spec.effective_scale()));
    let window = Window {
        batch: 1,
        head: 2,
        queries: 8..28,
        keys: 2..36,
    };
    let reference = reference_matrix(&case, &window);
    let expected = heatmap::render(
        &reference,
        &RenderOptions {
            scale: Scale::Linear,
            ..RenderOptions::default()
        },
    )
    .expect("render");
    let png = read_png(&out);
    assert_eq!((png.width, png.height), (expected.width, expected.height));
    let r = expected.plot.rect;
    let mut worst = 0;
    let mut masked = 0;
    for row in 0..expected.plot.rows {
        for col in 0..expected.plot.cols {
            let (x, y) = expected.cell_center(row, col);
            let at = (y * png.width + x) * 3;
            let got = [png.rgb[at], png.rgb[at + 1], png.rgb[at + 2]];
            let want = expected.cell_color(row, col).unwrap();
            if reference.masked[row * reference.cols() + col] {
                assert_eq!(got, MASK_COLOR, "masked cell ({row}, {col})");
                masked += 1;
            } else {
                assert_ne!(got, MASK_COLOR, "visible cell ({row}, {col})");
                worst = (0..3).fold(worst, |w, c| w.max(got[c].abs_diff(want[c])));
            }
        }
    }
    assert!(worst <= 2, "largest channel difference {worst}");
    assert!(masked > 0 && masked < r.width * r.height);
    let desc = png
        .text
        .iter()
        .find(|(k, _)| k == "Description")
        .map(|(_, t)| t.as_str())
        .unwrap_or("");
    assert!(
        desc.contains("window=12,-1") && desc.contains("alibi") && desc.contains("bias["),
        "{desc}"
    );

    // --mask-file replaces the file's mask: one that keeps nothing masks every cell.
    let none = vec![false; 32 * 40];
    let mask_file = tmp("mask_none.safetensors");
    wgattn::io::write_typed(
        &mask_file,
        &[(
            "mask",
            vec![1, 1, 32, 40],
            wgattn::io::TensorOut::Bool(&none),
        )],
        Default::default(),
    )
    .unwrap();
    let o = wgattn(&[
        "heatmap",
        "--input",
        input.to_str().unwrap(),
        "--mask-file",
        mask_file.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("1280 masked cells"), "{}", text(&o));
}

#[test]
fn cli_suggests_a_query_range_when_the_matrix_does_not_fit() {
    if common::ctx().is_none() {
        return;
    }
    // 32768 × 32768 f32 weights are 4 GiB: more than one buffer of any current adapter.
    let spec = AttentionSpec::new(1, 1, 1, 32768, 32768, 1);
    let input = write_case("huge.safetensors", &spec, 8);
    let out = tmp("huge.png");
    let args = [
        "heatmap",
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ];
    let o = wgattn(&args);
    let t = text(&o);
    if t.contains("does not fit") {
        assert_eq!(o.status.code(), Some(2), "{t}");
        assert!(t.contains("--query-range") && t.contains("rows fit"), "{t}");
        assert!(t.contains("weights"), "{t}");
        assert!(!out.exists());
    } else {
        // A device with buffers over 4 GiB draws it.
        assert_eq!(o.status.code(), Some(0), "{t}");
    }
    // A band of rows fits.
    let band: Vec<&str> = args
        .iter()
        .copied()
        .chain(["--query-range", "100..164"])
        .collect();
    let o = wgattn(&band);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(out.exists());
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
        (&["--color-scale", "cubic"][..], "color-scale"),
        (&["--max-size", "3"][..], "max-size"),
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

#[test]
fn cli_writes_an_svg_with_one_rectangle_per_cell() {
    if common::ctx().is_none() {
        return;
    }
    // 20 query rows × 30 keys, causal: square 13-px cells, the upper triangle masked.
    let spec = AttentionSpec::new(1, 1, 1, 20, 30, 8).causal(CausalAlign::TopLeft);
    let input = write_case("svg.safetensors", &spec, 3);
    let out = tmp("svg.svg");
    let o = wgattn(&[
        "heatmap",
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--color-scale",
        "linear",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let svg = std::fs::read_to_string(&out).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("<title>wgattn heatmap</title>"));
    let case = wgattn::io::read_case(&input).unwrap();
    let window = Window::whole(&case.spec, 0, 0);
    let expected = heatmap::render(
        &reference_matrix(&case, &window),
        &RenderOptions {
            scale: Scale::Linear,
            ..RenderOptions::default()
        },
    )
    .expect("render");
    let p = expected.plot;
    assert_eq!(
        (p.rows, p.cols, p.cell_width, p.cell_height),
        (20, 30, 13, 13)
    );
    let cell = format!("width=\"{}\" height=\"{}\"", p.cell_width, p.cell_height);
    assert_eq!(svg.matches(&cell).count(), p.rows * p.cols);
    // Masked cells (j > i) and the legend swatch are the mask grey.
    let masked = (0..20).map(|i| 30 - (i + 1)).sum::<usize>();
    assert_eq!(expected.masked_cells, masked);
    assert_eq!(svg.matches("fill=\"#808080\"").count(), masked + 1);
    for label in ["keys", "queries", "masked"] {
        assert!(svg.contains(label), "{label} missing from the SVG");
    }
}

/// `--weights`: stored probabilities drawn with the file's tokens on both axes; a head past the
/// file's is a typed input error (exit 2).
#[test]
fn stored_weights_are_drawn_with_token_labels() {
    let path = tmp("tokens.safetensors");
    let (h, s) = (2, 4);
    let weights: Vec<f32> = (0..h * s * s).map(|i| (i % 5) as f32 / 10.0).collect();
    let mut meta = std::collections::HashMap::new();
    meta.insert(
        "tokens".to_string(),
        "[CLS]\tattention\tworks\t[SEP]".to_string(),
    );
    meta.insert("sentence".to_string(), "attention works (Qᵀ)".to_string());
    wgattn::io::write_tensors(&path, &[("weights", vec![1, h, s, s], &weights)], meta).unwrap();
    let out = tmp("tokens.png");
    let r = common::wgattn(&[
        "heatmap",
        "--weights",
        path.to_str().unwrap(),
        "--head",
        "1",
        "--output",
        out.to_str().unwrap(),
    ]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    );
    assert_eq!(r.status.code(), Some(0), "{text}");
    assert!(text.contains("token labels"), "{text}");
    let png = read_png(&out);
    assert!(png.width > 100 && png.height > 100);
    assert!(
        png.text
            .iter()
            .any(|(k, v)| k == "Description" && v == "attention works (Q?)"),
        "{:?}",
        png.text
    );
    let r = common::wgattn(&[
        "heatmap",
        "--weights",
        path.to_str().unwrap(),
        "--head",
        "2",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(2));
    // --input and --weights exclude each other.
    let r = common::wgattn(&[
        "heatmap",
        "--weights",
        path.to_str().unwrap(),
        "--input",
        path.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(2));
}
