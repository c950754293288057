//! The font of every picture: DejaVu Sans Mono, embedded in the binary (see
//! `cli/assets/fonts/LICENSE-DejaVu.txt`), so that drawing needs no system font. SVG files name
//! the family `monospace` and leave the glyphs to the viewer; PNG files get its glyphs.

use std::sync::Once;

use plotters::style::FontStyle;

/// The family name pictures ask plotters for.
pub const FONT_FAMILY: &str = "monospace";

static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSansMono.ttf");

/// Width of one character of the embedded monospace font at `size` pixels (its advance is
/// 0.602 em), rounded up.
pub fn char_width(size: u32) -> u32 {
    (size * 602).div_ceil(1000)
}

/// Registers the embedded font with plotters (once per process). Text layout, which plotters
/// does for both back ends, needs it.
pub fn ensure_font() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        for style in [FontStyle::Normal, FontStyle::Bold] {
            // The font is a fixed, valid TrueType file: registering it cannot fail at run time.
            if plotters::style::register_font(FONT_FAMILY, style, FONT).is_err() {
                log::error!("the embedded font could not be registered");
            }
        }
    });
}
