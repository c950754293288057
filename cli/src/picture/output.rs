//! Picture files: the format from the file name, SVG text and RGB pixels written out.

use std::path::Path;

use wgattn::{Error, Result};

/// A picture file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Scalable vector graphics (text left to the viewer's fonts).
    Svg,
    /// 8-bit RGB PNG (text drawn with the embedded font).
    Png,
}

impl Format {
    /// The format named by the file's extension (`.svg` or `.png`, any case); a typed error
    /// naming the file otherwise.
    pub fn of(path: &Path) -> Result<Self> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref()
        {
            Some("svg") => Ok(Format::Svg),
            Some("png") => Ok(Format::Png),
            _ => Err(Error::BadFile {
                path: path.to_path_buf(),
                message: "cannot tell the picture format: the name must end in .svg or .png".into(),
            }),
        }
    }
}

/// Writes `svg` to `path`, adding a `<title>` and `<desc>` with `title` and `text`
/// (`key: value` lines) right after the opening `<svg>` tag.
pub fn write_svg(path: &Path, svg: &str, title: &str, text: &[(&str, String)]) -> Result<()> {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut meta = format!("<title>{}</title>\n", escape(title));
    if !text.is_empty() {
        let lines: Vec<String> = text
            .iter()
            .map(|(k, v)| format!("{}: {}", escape(k), escape(v)))
            .collect();
        meta.push_str(&format!("<desc>{}</desc>\n", lines.join("\n")));
    }
    let body = match svg
        .find("<svg")
        .and_then(|s| svg[s..].find('>').map(|e| s + e + 1))
    {
        Some(end) => format!("{}\n{meta}{}", &svg[..end], &svg[end..]),
        None => svg.to_string(),
    };
    std::fs::write(path, body).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes RGB8 `pixels` (`width × height`, row-major) as a PNG with `text` as tEXt chunks
/// (keyword, text; Latin-1, keywords of 1–79 characters) after a `Software` chunk.
pub fn write_png(
    path: &Path,
    width: usize,
    height: usize,
    pixels: &[u8],
    text: &[(&str, String)],
) -> Result<()> {
    let fail = |e: png::EncodingError| match e {
        png::EncodingError::IoError(source) => Error::Io {
            path: path.to_path_buf(),
            source,
        },
        other => Error::BadFile {
            path: path.to_path_buf(),
            message: format!("cannot encode the PNG: {other}"),
        },
    };
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, width as u32, height as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut chunks = vec![("Software", format!("wgattn {}", env!("CARGO_PKG_VERSION")))];
        chunks.extend(text.iter().cloned());
        for (k, t) in chunks {
            enc.add_text_chunk(k.to_string(), t).map_err(fail)?;
        }
        let mut writer = enc.write_header().map_err(fail)?;
        writer.write_image_data(pixels).map_err(fail)?;
        writer.finish().map_err(fail)?;
    }
    std::fs::write(path, bytes).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}
