//! The heat map drawn with `plotters`: cells in pixel space (each displayed cell a rectangle of
//! whole pixels), key and query axes with tick labels, a title, a colour bar with labelled
//! ticks and a legend for masked and invalid cells. The same drawing goes to an RGB bitmap
//! ([`Heatmap::pixels`], written as PNG) or to SVG ([`Heatmap::to_svg`]).

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use wgattn::{Error, Result};

use super::aggregate::{
    Cell, aggregate, axis, format_weight, median_position, position, value_at, value_range,
};
use super::options::{
    AUTO_LOG_BELOW, BACKGROUND, INK, INVALID_COLOR, MASK_COLOR, RenderOptions, Scale,
};
use super::window::{AttentionMatrix, Window};
use crate::picture::{self, FONT_FAMILY, Format, char_width, ensure_font};

/// A pixel rectangle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    /// Left edge.
    pub x: usize,
    /// Top edge.
    pub y: usize,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
}

/// Where the cells are in a rendered [`Heatmap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plot {
    /// The plot area (cells only, inside the frame).
    pub rect: Rect,
    /// Displayed rows (`ceil(matrix rows / block_rows)`).
    pub rows: usize,
    /// Displayed columns (`ceil(matrix cols / block_cols)`).
    pub cols: usize,
    /// Matrix rows per displayed row.
    pub block_rows: usize,
    /// Matrix columns per displayed column.
    pub block_cols: usize,
    /// Pixel height of a displayed row.
    pub cell_height: usize,
    /// Pixel width of a displayed column.
    pub cell_width: usize,
}

/// A rendered heat map: RGB8 pixels, where everything is, and what it was drawn from (so that
/// it can be drawn again as SVG).
#[derive(Debug, Clone, PartialEq)]
pub struct Heatmap {
    /// Image width in pixels.
    pub width: usize,
    /// Image height in pixels.
    pub height: usize,
    /// RGB8 pixels, row-major, `width × height × 3` bytes.
    pub pixels: Vec<u8>,
    /// The cells.
    pub plot: Plot,
    /// The colour bar (top is `max`).
    pub colorbar: Rect,
    /// Weight at the low end of the colour map.
    pub min: f32,
    /// Weight at the high end of the colour map.
    pub max: f32,
    /// The options it was drawn with, `scale` resolved ([`Scale::Linear`] or [`Scale::Log`],
    /// never [`Scale::Auto`]).
    pub options: RenderOptions,
    /// Displayed cells drawn in [`MASK_COLOR`].
    pub masked_cells: usize,
    /// Position (0 = low end, 1 = high end) on the colour range of the median unmasked
    /// displayed cell. Below [`AUTO_LOG_BELOW`] on a linear scale most cells share the darkest
    /// colours and [`Scale::Log`] shows more.
    pub median_position: f64,
    drawing: Drawing,
}

/// What is drawn and where: the input of [`draw`], for either back end.
#[derive(Debug, Clone, PartialEq)]
struct Drawing {
    window: Window,
    /// Token labels of the displayed rows and columns (no axis aggregated).
    labels: Option<(Vec<String>, Vec<String>)>,
    cells: Vec<Cell>,
    title: [String; 2],
    font: u32,
    margin: usize,
    bar_labels: usize,
    legend: Vec<([u8; 3], &'static str)>,
    legend_y: usize,
}

fn rgb(c: [u8; 3]) -> RGBColor {
    RGBColor(c[0], c[1], c[2])
}

/// Draws the matrix: rows are query rows, columns keys, blocks aggregated when an axis is
/// longer than `options.max_side` and small matrices scaled up, with a frame, axes with index
/// labels, a title, a colour bar with labelled ticks and, when anything is masked, a legend
/// swatch.
pub fn render(m: &AttentionMatrix, options: &RenderOptions) -> Result<Heatmap> {
    let (br, mut ph) = axis(m.rows(), options);
    let (bc, mut pw) = axis(m.cols(), options);
    if br == 1 && bc == 1 {
        // Square cells when neither axis is aggregated, unless that squeezes a side below
        // 64 px (e.g. one query row against many keys).
        let side = ph.min(pw);
        if m.rows() * side >= (m.rows() * ph).min(64) && m.cols() * side >= (m.cols() * pw).min(64)
        {
            (ph, pw) = (side, side);
        }
    }
    let (dr, dc) = (m.rows().div_ceil(br), m.cols().div_ceil(bc));
    let cells = aggregate(m, br, bc, options.aggregate);
    let scale = match options.scale {
        Scale::Auto if median_position(&cells, Scale::Linear) < AUTO_LOG_BELOW => Scale::Log,
        Scale::Auto => Scale::Linear,
        other => other,
    };
    let options = RenderOptions { scale, ..*options };
    let (min, max) = value_range(&cells, scale);
    let (plot_w, plot_h) = (dc * pw, dr * ph);

    let font: u32 = if plot_w.max(plot_h) >= 768 { 22 } else { 13 };
    let (fs, cw) = (font as usize, char_width(font) as usize);
    let line = fs + fs / 3;
    let margin = fs;
    let w = &m.window;
    let title = [
        format!(
            "batch {} head {}: queries {}..{} (rows) x keys {}..{} (columns)",
            w.batch, w.head, w.queries.start, w.queries.end, w.keys.start, w.keys.end
        ),
        if br > 1 || bc > 1 {
            format!(
                "{} of {}x{} cells per pixel, {} scale",
                options.aggregate.name(),
                br,
                bc,
                options.scale.name()
            )
        } else {
            format!(
                "{} scale, one cell = {}x{} px",
                options.scale.name(),
                pw,
                ph
            )
        },
    ];
    let title_w = title
        .iter()
        .map(|t| t.chars().count() * cw)
        .max()
        .unwrap_or(0);
    // Token labels replace indices when every cell is displayed.
    let labels = m.labels.clone().filter(|_| br == 1 && bc == 1);
    let (left, top) = match &labels {
        Some((rows, cols)) => token_label_areas(rows, cols, fs, cw),
        None => label_areas(w.queries.end.max(1).to_string().len(), fs, cw),
    };
    let plot_x = margin + left;
    let plot_y = margin + 2 * line + fs / 2 + top;

    let bar_w = 16 * fs / 13;
    let bar_x = plot_x + plot_w + 1 + 2 * fs;
    let bar_h = plot_h.max(100 * fs / 13);
    let bar_labels = if bar_h >= 240 * fs / 13 { 5 } else { 3 };
    let masked_cells = cells.iter().filter(|c| **c == Cell::Masked).count();
    let median_position = median_position(&cells, scale);
    let mut legend = Vec::new();
    if masked_cells > 0 {
        legend.push((MASK_COLOR, "masked"));
    }
    if cells
        .iter()
        .any(|c| matches!(c, Cell::Value(v) if !v.is_finite()))
    {
        legend.push((INVALID_COLOR, "NaN/inf"));
    }
    let legend_y = plot_y + bar_h + fs;
    let legend_w = legend
        .iter()
        .map(|(_, t)| bar_w + fs / 2 + t.len() * cw)
        .max()
        .unwrap_or(0);
    let width = (bar_x + bar_w + bar_label_area(cw))
        .max(bar_x + legend_w)
        .max(margin + title_w)
        + margin;
    let height = (plot_y + plot_h + 1)
        .max(plot_y + bar_h + 1)
        .max(legend_y + legend.len() * (line + 2))
        + margin;

    let drawing = Drawing {
        window: w.clone(),
        labels,
        cells,
        title,
        font,
        margin,
        bar_labels,
        legend,
        legend_y,
    };
    let mut heatmap = Heatmap {
        width,
        height,
        pixels: vec![0; width * height * 3],
        plot: Plot {
            rect: Rect {
                x: plot_x,
                y: plot_y,
                width: plot_w,
                height: plot_h,
            },
            rows: dr,
            cols: dc,
            block_rows: br,
            block_cols: bc,
            cell_height: ph,
            cell_width: pw,
        },
        colorbar: Rect {
            x: bar_x,
            y: plot_y,
            width: bar_w,
            height: bar_h,
        },
        min,
        max,
        options,
        masked_cells,
        median_position,
        drawing,
    };
    let mut pixels = std::mem::take(&mut heatmap.pixels);
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width as u32, height as u32))
            .into_drawing_area();
        draw(&root, &heatmap).map_err(|e| drawing_failed("the heat map bitmap", e))?;
        root.present()
            .map_err(|e| drawing_failed("the heat map bitmap", e))?;
    }
    heatmap.pixels = pixels;
    Ok(heatmap)
}

/// Widths of the left (query labels and caption) and top (key labels and caption) label areas.
fn label_areas(digits: usize, fs: usize, cw: usize) -> (usize, usize) {
    let line = fs + fs / 3;
    (digits.max(2) * cw + line + fs, 2 * line + fs / 2)
}

/// Widths of the left and top label areas for token labels: the longest token, horizontal
/// on the left and vertical on top, and the axis captions.
fn token_label_areas(rows: &[String], cols: &[String], fs: usize, cw: usize) -> (usize, usize) {
    let line = fs + fs / 3;
    let longest = |v: &[String]| v.iter().map(|t| t.chars().count()).max().unwrap_or(1);
    (
        longest(rows).max(2) * cw + line + fs,
        longest(cols).max(2) * cw + line + fs,
    )
}

/// Width of the colour bar's label area (tick and label such as `2.44e-4`).
fn bar_label_area(cw: usize) -> usize {
    9 * cw + 12
}

/// A drawing error as a typed error: drawing into memory with the embedded font fails only on
/// a bug, which is reported rather than panicking.
fn drawing_failed(what: &str, e: impl std::fmt::Display) -> Error {
    Error::BadFile {
        path: what.into(),
        message: format!("drawing failed: {e}"),
    }
}

type DrawResult<DB> =
    std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// Draws `h` on `root` (a blank area of `h.width × h.height` pixels).
fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, h: &Heatmap) -> DrawResult<DB> {
    ensure_font();
    let d = &h.drawing;
    let (fs, cw) = (d.font as usize, char_width(d.font) as usize);
    let line = fs + fs / 3;
    let ink = rgb(INK);
    let text = TextStyle::from((FONT_FAMILY, d.font)).color(&ink);
    root.fill(&rgb(BACKGROUND))?;
    for (n, t) in d.title.iter().enumerate() {
        root.draw(&Text::new(
            t.as_str(),
            (d.margin as i32, (d.margin + n * line) as i32),
            text.clone(),
        ))?;
    }

    let p = &h.plot;
    let r = p.rect;
    let (left, top) = match &d.labels {
        Some((rows, cols)) => token_label_areas(rows, cols, fs, cw),
        None => label_areas(d.window.queries.end.max(1).to_string().len(), fs, cw),
    };
    if let (Some((rows, cols)), true) = (&d.labels, p.rows > 0 && p.cols > 0) {
        draw_token_labels(root, r, p, rows, cols, &text, fs, line)?;
    } else if p.rows > 0 && p.cols > 0 {
        // Axes: one segment per displayed cell, labelled with the first matrix index of its
        // block; query rows run downwards (segment -r is row r).
        let area = root.clone().shrink(
            ((r.x - left) as i32, (r.y - top) as i32),
            ((left + r.width) as u32, (top + r.height) as u32),
        );
        let mut chart = ChartBuilder::on(&area)
            .set_label_area_size(LabelAreaPosition::Left, left as u32)
            .set_label_area_size(LabelAreaPosition::Top, top as u32)
            .build_cartesian_2d(
                (0..p.cols as i32 - 1).into_segmented(),
                (-(p.rows as i32 - 1)..0).into_segmented(),
            )?;
        let (keys, queries) = (d.window.keys.start, d.window.queries.start);
        let (bc, br) = (p.block_cols, p.block_rows);
        let (cols, rows) = (p.cols, p.rows);
        let x_label = move |v: &SegmentValue<i32>| match v {
            SegmentValue::CenterOf(c) | SegmentValue::Exact(c) => usize::try_from(*c)
                .ok()
                .filter(|&c| c < cols)
                .map(|c| (keys + c * bc).to_string())
                .unwrap_or_default(),
            SegmentValue::Last => String::new(),
        };
        let y_label = move |v: &SegmentValue<i32>| match v {
            SegmentValue::CenterOf(c) | SegmentValue::Exact(c) => usize::try_from(-(*c as i64))
                .ok()
                .filter(|&r| r < rows)
                .map(|r| (queries + r * br).to_string())
                .unwrap_or_default(),
            SegmentValue::Last => String::new(),
        };
        let x_labels = (r.width / (cw * (keys + p.cols * bc).to_string().len() + 2 * cw)).max(1);
        let y_labels = (r.height / (2 * line)).max(1);
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(x_labels.min(p.cols))
            .y_labels(y_labels.min(p.rows))
            .x_label_formatter(&x_label)
            .y_label_formatter(&y_label)
            .x_desc("keys")
            .y_desc("queries")
            .label_style(text.clone())
            .axis_desc_style(text.clone())
            .axis_style(ink)
            .draw()?;
    }

    // Cells, in pixel space: each displayed cell is pw × ph whole pixels.
    let color_of = |c: &Cell| match c {
        Cell::Masked => MASK_COLOR,
        Cell::Value(v) if !v.is_finite() => INVALID_COLOR,
        Cell::Value(v) => h
            .options
            .colormap
            .color(position(*v, h.min, h.max, h.options.scale)),
    };
    for row in 0..p.rows {
        for col in 0..p.cols {
            let (x, y) = (r.x + col * p.cell_width, r.y + row * p.cell_height);
            root.draw(&Rectangle::new(
                [
                    (x as i32, y as i32),
                    ((x + p.cell_width) as i32, (y + p.cell_height) as i32),
                ],
                rgb(color_of(&d.cells[row * p.cols + col])).filled(),
            ))?;
        }
    }
    frame(root, r)?;

    // Colour bar, top = max, its axis in the weight (log10 of it on a log scale).
    let b = h.colorbar;
    for y in 0..b.height {
        let t = 1.0 - y as f64 / (b.height - 1).max(1) as f64;
        root.draw(&Rectangle::new(
            [
                (b.x as i32, (b.y + y) as i32),
                ((b.x + b.width) as i32, (b.y + y + 1) as i32),
            ],
            rgb(h.options.colormap.color(t)).filled(),
        ))?;
    }
    // Ticks and labels at evenly spaced positions of the colour scale, the ends included.
    let ticks = d.bar_labels.max(2);
    let label_style = text.clone().pos(plotters::style::text_anchor::Pos::new(
        plotters::style::text_anchor::HPos::Left,
        plotters::style::text_anchor::VPos::Center,
    ));
    for k in 0..ticks {
        let t = k as f64 / (ticks - 1) as f64;
        let y = (b.y as f64 + (1.0 - t) * (b.height - 1) as f64).round() as i32;
        let x = (b.x + b.width) as i32;
        root.draw(&PathElement::new(vec![(x, y), (x + fs as i32 / 3, y)], ink))?;
        root.draw(&Text::new(
            format_weight(value_at(t, h.min, h.max, h.options.scale)),
            (x + fs as i32 / 2, y),
            label_style.clone(),
        ))?;
    }
    frame(root, b)?;
    for (n, (color, label)) in d.legend.iter().enumerate() {
        let y = d.legend_y + n * (line + 2);
        let swatch = Rect {
            x: b.x,
            y,
            width: b.width,
            height: fs,
        };
        root.draw(&Rectangle::new(
            [
                (b.x as i32, y as i32),
                ((b.x + b.width) as i32, (y + fs) as i32),
            ],
            rgb(*color).filled(),
        ))?;
        frame(root, swatch)?;
        root.draw(&Text::new(
            *label,
            ((b.x + b.width + fs / 2) as i32, y as i32),
            text.clone(),
        ))?;
    }
    Ok(())
}

/// Token labels: one per query row on the left (right-aligned), one per key on top (vertical,
/// reading upwards), with the axis captions.
#[allow(clippy::too_many_arguments)]
fn draw_token_labels<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    r: Rect,
    p: &Plot,
    rows: &[String],
    cols: &[String],
    text: &TextStyle,
    fs: usize,
    line: usize,
) -> DrawResult<DB> {
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    let right = text.clone().pos(Pos::new(HPos::Right, VPos::Center));
    for (i, t) in rows.iter().enumerate().take(p.rows) {
        let y = r.y + i * p.cell_height + p.cell_height / 2;
        root.draw(&Text::new(
            t.as_str(),
            ((r.x - fs / 2) as i32, y as i32),
            right.clone(),
        ))?;
    }
    let up = text
        .clone()
        .transform(FontTransform::Rotate270)
        .pos(Pos::new(HPos::Left, VPos::Center));
    for (j, t) in cols.iter().enumerate().take(p.cols) {
        let x = r.x + j * p.cell_width + p.cell_width / 2;
        root.draw(&Text::new(
            t.as_str(),
            (x as i32, (r.y - fs / 2) as i32),
            up.clone(),
        ))?;
    }
    let caption = text.clone().pos(Pos::new(HPos::Left, VPos::Top));
    root.draw(&Text::new(
        "keys",
        ((r.x + r.width + fs / 2) as i32, (r.y - line) as i32),
        caption.clone(),
    ))?;
    root.draw(&Text::new(
        "queries",
        (
            r.x.saturating_sub(fs * 6) as i32,
            (r.y + r.height + fs / 3) as i32,
        ),
        caption,
    ))?;
    Ok(())
}

/// A one-pixel frame just outside the rectangle.
fn frame<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, r: Rect) -> DrawResult<DB> {
    let (x0, y0) = (r.x as i32 - 1, r.y as i32 - 1);
    let (x1, y1) = ((r.x + r.width) as i32, (r.y + r.height) as i32);
    root.draw(&PathElement::new(
        vec![(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)],
        rgb(INK),
    ))
}

impl Heatmap {
    /// The RGB colour of pixel (x, y); `None` outside the image.
    pub fn pixel(&self, x: usize, y: usize) -> Option<[u8; 3]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let at = (y * self.width + x) * 3;
        Some([self.pixels[at], self.pixels[at + 1], self.pixels[at + 2]])
    }

    /// The pixel at the centre of displayed cell (row, col).
    pub fn cell_center(&self, row: usize, col: usize) -> (usize, usize) {
        let p = &self.plot;
        (
            p.rect.x + col * p.cell_width + p.cell_width / 2,
            p.rect.y + row * p.cell_height + p.cell_height / 2,
        )
    }

    /// The colour of displayed cell (row, col); `None` outside the plot.
    pub fn cell_color(&self, row: usize, col: usize) -> Option<[u8; 3]> {
        if row >= self.plot.rows || col >= self.plot.cols {
            return None;
        }
        let (x, y) = self.cell_center(row, col);
        self.pixel(x, y)
    }

    /// The colour an unmasked cell of weight `w` gets in this image (its scale and range).
    pub fn color_of(&self, w: f32) -> [u8; 3] {
        if !w.is_finite() {
            return INVALID_COLOR;
        }
        self.options
            .colormap
            .color(position(w, self.min, self.max, self.options.scale))
    }

    /// The same picture as SVG text (one rectangle per displayed cell; text in the viewer's
    /// monospace font).
    pub fn to_svg(&self) -> Result<String> {
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (self.width as u32, self.height as u32))
                .into_drawing_area();
            draw(&root, self).map_err(|e| drawing_failed("the heat map SVG", e))?;
            root.present()
                .map_err(|e| drawing_failed("the heat map SVG", e))?;
        }
        Ok(svg)
    }

    /// What the picture shows, as (keyword, text) pairs: colour range, colour map, scale and
    /// aggregation.
    fn metadata(&self) -> Vec<(&'static str, String)> {
        vec![
            ("Weight min", self.min.to_string()),
            ("Weight max", self.max.to_string()),
            ("Colormap", self.options.colormap.name().into()),
            ("Scale", self.options.scale.name().into()),
            (
                "Aggregate",
                format!(
                    "{} of {}x{} cells",
                    self.options.aggregate.name(),
                    self.plot.block_rows,
                    self.plot.block_cols
                ),
            ),
        ]
    }

    /// Writes the image as an 8-bit RGB PNG with `text` as tEXt chunks (keyword, text; Latin-1,
    /// keywords of 1–79 characters), plus `Software` and the colour range (`Weight min`,
    /// `Weight max`, `Colormap`, `Scale`, `Aggregate`).
    pub fn write_png(&self, path: impl AsRef<Path>, text: &[(&str, String)]) -> Result<()> {
        let mut chunks = self.metadata();
        chunks.extend(text.iter().cloned());
        picture::write_png(
            path.as_ref(),
            self.width,
            self.height,
            &self.pixels,
            &chunks,
        )
    }

    /// Writes the picture as SVG or PNG, chosen by the file name's extension, with `text`
    /// (and the colour range) as metadata.
    pub fn write(&self, path: impl AsRef<Path>, text: &[(&str, String)]) -> Result<()> {
        let path = path.as_ref();
        match Format::of(path)? {
            Format::Png => self.write_png(path, text),
            Format::Svg => {
                let mut meta = self.metadata();
                meta.extend(text.iter().cloned());
                picture::write_svg(path, &self.to_svg()?, "wgattn heatmap", &meta)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heatmap::options::ColorMap;

    fn matrix(
        rows: usize,
        cols: usize,
        f: impl Fn(usize, usize) -> Option<f32>,
    ) -> AttentionMatrix {
        AttentionMatrix::from_fn(rows, cols, f)
    }

    #[test]
    fn odd_matrices_do_not_panic() {
        let empty = matrix(0, 0, |_, _| None);
        let img = render(&empty, &RenderOptions::default()).expect("render");
        assert_eq!((img.plot.rows, img.plot.cols), (0, 0));
        let mut short = matrix(2, 3, |_, _| Some(0.5));
        short.weights.truncate(2);
        short.masked.truncate(4);
        let img = render(&short, &RenderOptions::default()).expect("render");
        assert_eq!(img.cell_color(1, 2), Some(MASK_COLOR));
        assert_eq!(img.cell_color(0, 2), Some(INVALID_COLOR));
    }

    #[test]
    fn rendered_cells_have_their_colours() {
        let m = matrix(3, 5, |r, c| (c != 4).then_some((r * 5 + c) as f32 / 20.0));
        let img = render(&m, &RenderOptions::default()).expect("render");
        assert_eq!(img.pixels.len(), img.width * img.height * 3);
        assert_eq!((img.plot.rows, img.plot.cols), (3, 5));
        assert_eq!(img.masked_cells, 3);
        for r in 0..3 {
            for c in 0..5 {
                let expected = if c == 4 {
                    MASK_COLOR
                } else {
                    img.color_of((r * 5 + c) as f32 / 20.0)
                };
                assert_eq!(img.cell_color(r, c), Some(expected), "cell ({r}, {c})");
            }
        }
        assert_eq!(img.cell_color(0, 0), Some(ColorMap::Viridis.color(0.0)));
        assert_eq!(img.cell_color(2, 3), Some(ColorMap::Viridis.color(1.0)));
    }

    #[test]
    fn svg_has_one_rectangle_per_cell_in_its_colour() {
        let m = matrix(3, 5, |r, c| (c != 4).then_some((r * 5 + c) as f32 / 20.0));
        let img = render(&m, &RenderOptions::default()).expect("render");
        let svg = img.to_svg().expect("svg");
        let p = img.plot;
        for r in 0..3 {
            for c in 0..5 {
                let (x, y) = (p.rect.x + c * p.cell_width, p.rect.y + r * p.cell_height);
                let color = img.cell_color(r, c).expect("in the plot");
                let rect = format!(
                    "<rect x=\"{x}\" y=\"{y}\" width=\"{}\" height=\"{}\" opacity=\"1\" \
                     fill=\"#{:02X}{:02X}{:02X}\"",
                    p.cell_width, p.cell_height, color[0], color[1], color[2]
                );
                assert!(svg.contains(&rect), "cell ({r}, {c}): no {rect}");
            }
        }
        assert!(svg.contains("masked") && svg.contains("keys") && svg.contains("queries"));
    }

    /// Token labels replace the indices: each row's token is drawn left of its row, each
    /// key's token above its column, and the plot moves to make room for the longest.
    #[test]
    fn token_labels_are_drawn_on_both_axes() {
        let f = |r: usize, c: usize| Some(((r + 1) * (c + 2)) as f32 / 20.0);
        let tokens: Vec<String> = ["[CLS]", "attention", "is", "[SEP]"]
            .iter()
            .map(|t| t.to_string())
            .collect();
        let plain = render(&matrix(4, 4, f), &RenderOptions::default()).unwrap();
        let labelled = matrix(4, 4, f).with_tokens(&tokens, &tokens).unwrap();
        let h = render(&labelled, &RenderOptions::default()).unwrap();
        assert!(
            h.plot.rect.x > plain.plot.rect.x,
            "room for `attention` on the left"
        );
        assert!(
            h.plot.rect.y > plain.plot.rect.y,
            "room for `attention` on top"
        );
        let ink = |x0: usize, x1: usize, y0: usize, y1: usize| {
            (y0..y1).any(|y| (x0..x1).any(|x| h.pixel(x, y).is_some_and(|p| p != BACKGROUND)))
        };
        let r = h.plot.rect;
        for row in 0..4 {
            let (_, y) = h.cell_center(row, 0);
            assert!(
                ink(r.x.saturating_sub(40), r.x - 3, y - 2, y + 3),
                "label of row {row}"
            );
        }
        for col in 0..4 {
            let (x, _) = h.cell_center(0, col);
            assert!(
                ink(x - 3, x + 3, r.y.saturating_sub(30), r.y - 3),
                "label of key {col}"
            );
        }
        // Labels must cover the window.
        assert!(matrix(5, 5, f).with_tokens(&tokens, &tokens).is_err());
        let svg = h.to_svg().unwrap();
        assert!(svg.contains("attention") && svg.contains("[CLS]"));
    }
}
