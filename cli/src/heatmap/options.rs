//! What a heat map looks like: colour map, aggregation of blocks, colour scale and sizes.

use wgattn::{Error, Result};

/// Colour of masked cells: a neutral mid grey, which none of the [`ColorMap`]s contains.
pub const MASK_COLOR: [u8; 3] = [128, 128, 128];
/// Colour of cells whose weight is NaN or infinite (a GPU fault; never expected): magenta.
pub const INVALID_COLOR: [u8; 3] = [255, 0, 255];
/// [`Scale::Auto`] picks a log scale when the median displayed cell would sit below this
/// position (0..=1) of a linear colour range.
pub const AUTO_LOG_BELOW: f64 = 0.1;
/// Background of the image around the plot.
pub const BACKGROUND: [u8; 3] = [255, 255, 255];
/// Colour of text, frames and tick marks.
pub const INK: [u8; 3] = [0, 0, 0];

/// Perceptual colour maps (from `colorous`, i.e. d3-scale-chromatic / matplotlib), low to high.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, clap::ValueEnum)]
pub enum ColorMap {
    /// Dark purple → teal → yellow (the default).
    #[default]
    Viridis,
    /// Black → red → pale yellow.
    Inferno,
    /// Black → pink → pale yellow.
    Magma,
    /// Blue → magenta → yellow.
    Plasma,
}

impl ColorMap {
    /// Every colour map name the CLI accepts.
    pub const NAMES: &'static [&'static str] = &["viridis", "inferno", "magma", "plasma"];

    /// Name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ColorMap::Viridis => "viridis",
            ColorMap::Inferno => "inferno",
            ColorMap::Magma => "magma",
            ColorMap::Plasma => "plasma",
        }
    }

    /// Parses a colour map name.
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "viridis" => Ok(ColorMap::Viridis),
            "inferno" => Ok(ColorMap::Inferno),
            "magma" => Ok(ColorMap::Magma),
            "plasma" => Ok(ColorMap::Plasma),
            other => Err(Error::spec(
                "colormap",
                other,
                format!("is not one of {}", ColorMap::NAMES.join(", ")),
            )),
        }
    }

    /// The colour at position `t` (clamped to 0..=1; 0 is the low end).
    pub fn color(self, t: f64) -> [u8; 3] {
        let gradient = match self {
            ColorMap::Viridis => colorous::VIRIDIS,
            ColorMap::Inferno => colorous::INFERNO,
            ColorMap::Magma => colorous::MAGMA,
            ColorMap::Plasma => colorous::PLASMA,
        };
        let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
        gradient.eval_continuous(t).into_array()
    }
}

/// How the cells of one block become one displayed cell when the matrix is larger than the
/// image allows. Masked cells are left out; a block with no visible cell is drawn masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, clap::ValueEnum)]
pub enum Aggregate {
    /// The largest weight of the block (the default: sharp peaks stay visible).
    #[default]
    Max,
    /// The mean weight of the visible cells of the block.
    Mean,
}

impl Aggregate {
    /// Name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Aggregate::Max => "max",
            Aggregate::Mean => "mean",
        }
    }

    /// Parses `max` / `mean`.
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "max" => Ok(Aggregate::Max),
            "mean" => Ok(Aggregate::Mean),
            other => Err(Error::spec("aggregate", other, "is not `max` or `mean`")),
        }
    }
}

/// How weights map onto the colour map between the smallest and the largest displayed weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, clap::ValueEnum)]
pub enum Scale {
    /// [`Scale::Log`] when a linear scale would put the median displayed cell in the lowest
    /// [`AUTO_LOG_BELOW`] of the colour range (typical of long sequences, where most weights
    /// are near 1/Sk and a few are large), else [`Scale::Linear`]. The default.
    #[default]
    Auto,
    /// Linear in the weight.
    #[value(alias = "lin")]
    Linear,
    /// Linear in log(weight), from the smallest positive displayed weight; zero weights get the
    /// low end. Shows the spread of small weights in long sequences.
    Log,
}

impl Scale {
    /// Name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scale::Auto => "auto",
            Scale::Linear => "linear",
            Scale::Log => "log",
        }
    }

    /// Parses `auto` / `linear` / `log`.
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Scale::Auto),
            "linear" | "lin" => Ok(Scale::Linear),
            "log" => Ok(Scale::Log),
            other => Err(Error::spec(
                "scale",
                other,
                "is not `auto`, `linear` or `log`",
            )),
        }
    }
}

/// Options of [`render`](super::render()).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RenderOptions {
    /// Colour map of the weights.
    pub colormap: ColorMap,
    /// How blocks of cells are combined when the matrix is larger than `max_side`.
    pub aggregate: Aggregate,
    /// Linear, logarithmic or automatic colour scale.
    pub scale: Scale,
    /// Most displayed cells along a side: longer axes are aggregated in blocks of
    /// `ceil(n / max_side)` cells (at least 1).
    pub max_side: usize,
    /// Small axes are scaled up, each cell drawn as a square of up to `max_cell` pixels, until
    /// the side reaches about this many pixels.
    pub min_side: usize,
    /// Largest size in pixels of one cell along an axis.
    pub max_cell: usize,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            colormap: ColorMap::Viridis,
            aggregate: Aggregate::Max,
            scale: Scale::Auto,
            max_side: 1024,
            min_side: 400,
            max_cell: 64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_colour_is_far_from_every_colour_map() {
        for &name in ColorMap::NAMES {
            let map = ColorMap::parse(name).expect("known name");
            let closest = (0..=1000)
                .map(|i| {
                    let c = map.color(i as f64 / 1000.0);
                    (0..3)
                        .map(|k| (c[k] as f64 - MASK_COLOR[k] as f64).powi(2))
                        .sum::<f64>()
                        .sqrt()
                })
                .fold(f64::INFINITY, f64::min);
            assert!(
                closest > 60.0,
                "{name}: mask grey within {closest} of the map"
            );
        }
    }
}
