//! What the heat maps and benchmark plots share: the embedded font, the output format chosen
//! from a file name, and writing SVG text or RGB pixels to a file.

mod font;
mod output;

pub use font::{FONT_FAMILY, char_width, ensure_font};
pub use output::{Format, write_png, write_svg};
