//! Benchmark plots: median time and GFLOP/s per shape, one series per kernel, adapter and
//! dtype, drawn with `plotters` as SVG or PNG, from a run of `wgattn bench` or from the JSON
//! lines of `wgattn bench --json` ([`read_records`]).

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use wgattn::{Error, Result};

use crate::picture::{self, FONT_FAMILY, Format, char_width, ensure_font};
use crate::report::{BenchRecord, RecordText};

/// Width of a plot in pixels.
pub const WIDTH: u32 = 1000;
/// Height of each of the two charts (time, GFLOP/s) in pixels.
pub const CHART_HEIGHT: u32 = 340;
const FONT: u32 = 14;
const LINE: u32 = 19;
const MARGIN: u32 = 12;

/// The records of a `wgattn bench --json` file: one JSON object per line (blank lines
/// skipped), or one JSON array of them. Errors name the file (and the line).
pub fn read_records(path: &Path) -> Result<Vec<BenchRecord>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |message: String| Error::BadFile {
        path: path.to_path_buf(),
        message,
    };
    if text.trim_start().starts_with('[') {
        return serde_json::from_str(&text)
            .map_err(|e| bad(format!("not a JSON array of bench results: {e}")));
    }
    let mut records = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        records.push(serde_json::from_str(line).map_err(|e| {
            bad(format!(
                "line {}: not a bench result of `wgattn bench --json`: {e}",
                n + 1
            ))
        })?);
    }
    if records.is_empty() {
        return Err(bad("holds no bench results".into()));
    }
    Ok(records)
}

/// One point of a series: (shape index, median ms, GFLOP/s).
pub type Point = (usize, f64, f64);

/// A series: its name and its points.
pub type Series = (String, Vec<Point>);

/// The data of a plot: shapes along x (in order of first appearance) and series.
#[derive(Debug, Clone, PartialEq)]
pub struct PlotData {
    /// Shape labels, the x categories.
    pub shapes: Vec<String>,
    /// Series name and, per point, (shape index, median ms, GFLOP/s).
    pub series: Vec<Series>,
}

impl PlotData {
    /// Groups `records` into shapes and series (kernel, adapter, dtype).
    pub fn new(records: &[BenchRecord]) -> Self {
        let mut shapes: Vec<String> = Vec::new();
        let mut series: Vec<Series> = Vec::new();
        for r in records {
            let shape: String = r
                .shape_text()
                .split(' ')
                .filter(|w| *w != r.dtype)
                .collect::<Vec<_>>()
                .join(" ");
            let x = match shapes.iter().position(|s| *s == shape) {
                Some(x) => x,
                None => {
                    shapes.push(shape);
                    shapes.len() - 1
                }
            };
            let name = r.series();
            let point = (x, r.median_ms, r.gflops);
            match series.iter_mut().find(|(n, _)| *n == name) {
                Some((_, points)) => points.push(point),
                None => series.push((name, vec![point])),
            }
        }
        for (_, points) in &mut series {
            points.sort_by_key(|p| p.0);
        }
        PlotData { shapes, series }
    }

    /// Picture height: two charts and the key of shape labels.
    pub fn height(&self) -> u32 {
        2 * CHART_HEIGHT + 3 * MARGIN + LINE * (self.shapes.len() as u32 + 1)
    }
}

/// Draws `data` and writes it to `path` (SVG or PNG by its extension).
pub fn write(path: &Path, data: &PlotData) -> Result<()> {
    let format = Format::of(path)?;
    let (w, h) = (WIDTH, data.height());
    let failed = |e: String| Error::BadFile {
        path: path.to_path_buf(),
        message: format!("drawing the plot failed: {e}"),
    };
    let text = [
        ("Title", "wgattn bench".to_string()),
        ("Series", data.series.len().to_string()),
        ("Shapes", data.shapes.join("; ")),
    ];
    match format {
        Format::Svg => {
            let mut svg = String::new();
            {
                let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
                draw(&root, data).map_err(|e| failed(e.to_string()))?;
                root.present().map_err(|e| failed(e.to_string()))?;
            }
            picture::write_svg(path, &svg, "wgattn bench", &text)
        }
        Format::Png => {
            let mut pixels = vec![0u8; (w * h * 3) as usize];
            {
                let root = BitMapBackend::with_buffer(&mut pixels, (w, h)).into_drawing_area();
                draw(&root, data).map_err(|e| failed(e.to_string()))?;
                root.present().map_err(|e| failed(e.to_string()))?;
            }
            picture::write_png(path, w as usize, h as usize, &pixels, &text)
        }
    }
}

type DrawResult<DB> =
    std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, data: &PlotData) -> DrawResult<DB> {
    ensure_font();
    root.fill(&WHITE)?;
    let text = TextStyle::from((FONT_FAMILY, FONT)).color(&BLACK);
    let (top, rest) = root.split_vertically(CHART_HEIGHT + MARGIN);
    let (bottom, key) = rest.split_vertically(CHART_HEIGHT + MARGIN);
    chart(&top, data, "median time per shape", "ms", |p| p.1, &text)?;
    chart(
        &bottom,
        data,
        "GFLOP/s per shape",
        "GFLOP/s",
        |p| p.2,
        &text,
    )?;
    let cw = char_width(FONT) as i32;
    for (n, s) in data.shapes.iter().enumerate() {
        key.draw(&Text::new(
            format!("#{:<3} {s}", n + 1),
            (MARGIN as i32 + 4 * cw, (MARGIN + n as u32 * LINE) as i32),
            text.clone(),
        ))?;
    }
    Ok(())
}

/// One chart: `value` of every point against the shape index, one line per series.
fn chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    data: &PlotData,
    caption: &str,
    y_desc: &str,
    value: impl Fn(&Point) -> f64,
    text: &TextStyle,
) -> DrawResult<DB> {
    let n = data.shapes.len().max(1) as i32;
    let top = data
        .series
        .iter()
        .flat_map(|(_, points)| points.iter().map(&value))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let top = if top > 0.0 { top * 1.15 } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .margin(MARGIN)
        .caption(caption, (FONT_FAMILY, FONT + 4))
        .x_label_area_size(2 * LINE)
        .y_label_area_size(9 * char_width(FONT) + LINE)
        .build_cartesian_2d((0..n - 1).into_segmented(), 0.0..top)?;
    let x_label = |v: &SegmentValue<i32>| match v {
        SegmentValue::CenterOf(c) | SegmentValue::Exact(c) => format!("#{}", c + 1),
        SegmentValue::Last => String::new(),
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(data.shapes.len().max(1))
        .x_label_formatter(&x_label)
        .y_label_formatter(&|v| tick(*v))
        .light_line_style(WHITE)
        .x_desc("shape (key below)")
        .y_desc(y_desc)
        .label_style(text.clone())
        .axis_desc_style(text.clone())
        .draw()?;
    for (k, (name, points)) in data.series.iter().enumerate() {
        let color = Palette99::pick(k).to_rgba();
        let line: Vec<(SegmentValue<i32>, f64)> = points
            .iter()
            .map(|p| (SegmentValue::CenterOf(p.0 as i32), value(p)))
            .collect();
        chart
            .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(line.into_iter().map(|p| Circle::new(p, 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(text.clone())
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// A tick label with about three significant digits.
fn tick(v: f64) -> String {
    match v.abs() {
        0.0 => "0".into(),
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 10.0 => format!("{v:.1}"),
        a if a >= 0.01 => format!("{v:.2}"),
        _ => format!("{v:.2e}"),
    }
}
