//! The tune cache file: the tuned choices of every adapter tuned (`wgattn tune` writes it),
//! keyed by adapter name + backend + driver ([`AdapterKey`]) and shape class. JSON, by
//! default `$XDG_CACHE_HOME/wgattn/tune.json` (else `~/.cache/wgattn/tune.json`, on Windows
//! `%LOCALAPPDATA%\wgattn\tune.json`); `WGATTN_TUNE_CACHE` names another file, or `off`.
//! A context reads its adapter's entries when it opens ([`load`]). A missing file means no
//! tuning. A default-location file that cannot be read or parsed is ignored with a warning
//! (log): attention must not stop working because of a stale cache. A file named
//! explicitly ([`TuneCacheSource::File`]) that cannot be read or parsed is an error
//! ([`Error::TuneCache`]). Reading and writing need the `tune-cache` feature.

use std::path::{Path, PathBuf};

#[cfg(feature = "tune-cache")]
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gpu::TuneCacheSource;
use crate::planner::{ShapeClass, TunedChoice, Tuning};

/// Version of the cache file format this build reads and writes.
pub const CACHE_VERSION: u32 = 2;

/// Environment variable naming the tune cache file (or `off`).
pub const CACHE_ENV: &str = "WGATTN_TUNE_CACHE";

/// The user's tune cache file: `$XDG_CACHE_HOME/wgattn/tune.json`, else
/// `$HOME/.cache/wgattn/tune.json`, else `%LOCALAPPDATA%\wgattn\tune.json`.
pub fn default_path() -> Option<PathBuf> {
    let var = |name| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    let dir = var("XDG_CACHE_HOME")
        .or_else(|| var("HOME").map(|h| h.join(".cache")))
        .or_else(|| var("LOCALAPPDATA"))?;
    Some(dir.join("wgattn").join("tune.json"))
}

/// Which file `source` means, and whether it was named explicitly (its errors are errors).
/// `None`: no tuning.
pub fn resolve(source: &TuneCacheSource) -> Option<(PathBuf, bool)> {
    match source {
        TuneCacheSource::Off => None,
        TuneCacheSource::File(p) => Some((p.clone(), true)),
        TuneCacheSource::User => match std::env::var(CACHE_ENV) {
            Ok(v) if v.trim().eq_ignore_ascii_case("off") => None,
            Ok(v) if !v.trim().is_empty() => Some((PathBuf::from(v.trim()), true)),
            _ => default_path().map(|p| (p, false)),
        },
    }
}

/// An adapter as the cache keys it: name, backend and driver.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "tune-cache", derive(Serialize, Deserialize))]
pub struct AdapterKey {
    /// Adapter name.
    pub name: String,
    /// Backend (`Vulkan`, `Metal`, `Dx12`, `Gl`).
    pub backend: String,
    /// Driver name and version.
    pub driver: String,
}

impl AdapterKey {
    /// The key of an adapter.
    pub fn of(info: &wgpu::AdapterInfo) -> Self {
        AdapterKey {
            name: info.name.clone(),
            backend: format!("{:?}", info.backend),
            driver: format!("{} {}", info.driver, info.driver_info)
                .trim()
                .to_string(),
        }
    }
}

/// One tuned class of one adapter, with what was measured.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "tune-cache", derive(Serialize, Deserialize))]
pub struct TuneEntry {
    /// The adapter.
    pub adapter: AdapterKey,
    /// The shape class.
    pub class: ShapeClass,
    /// The fastest choice.
    pub choice: TunedChoice,
    /// The shape it was measured on (`wgattn::validation::describe`).
    pub shape: String,
    /// Its median time there, ms.
    pub median_ms: f64,
    /// The untuned default's median time there, ms.
    pub default_ms: f64,
    /// What the untuned default ran.
    pub default: String,
    /// Candidates that passed the reference check and were timed.
    pub timed: usize,
    /// How the times were taken (`gpu-timestamp` or `wall`).
    pub timing: String,
}

/// The cache file: every tuned class of every adapter tuned.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "tune-cache", derive(Serialize, Deserialize))]
pub struct TuneFile {
    /// [`CACHE_VERSION`].
    pub version: u32,
    /// The entries, one per (adapter, class).
    pub entries: Vec<TuneEntry>,
}

impl Default for TuneFile {
    fn default() -> Self {
        TuneFile {
            version: CACHE_VERSION,
            entries: Vec::new(),
        }
    }
}

impl TuneFile {
    /// Reads `path`: `Ok(None)` when it does not exist, [`Error::TuneCache`] when it cannot
    /// be read, is not a tune cache, or has another version.
    #[cfg(feature = "tune-cache")]
    pub fn read(path: &Path) -> Result<Option<TuneFile>> {
        let bad = |message: String| Error::TuneCache {
            path: path.to_path_buf(),
            message,
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(bad(format!("cannot be read: {e}"))),
        };
        let file: TuneFile =
            serde_json::from_str(&text).map_err(|e| bad(format!("is not a tune cache: {e}")))?;
        if file.version != CACHE_VERSION {
            return Err(bad(format!(
                "has version {}, this build reads version {CACHE_VERSION}",
                file.version
            )));
        }
        Ok(Some(file))
    }

    /// Writes to `path` (creating its folder), through a temporary file renamed into place.
    #[cfg(feature = "tune-cache")]
    pub fn write(&self, path: &Path) -> Result<()> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::TuneCache {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let tmp = path.with_extension(format!("json.tmp{}", std::process::id()));
        std::fs::write(&tmp, text + "\n").map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Adds `entry`, replacing the one of the same adapter and class.
    pub fn upsert(&mut self, entry: TuneEntry) {
        self.entries
            .retain(|e| !(e.adapter == entry.adapter && e.class == entry.class));
        self.entries.push(entry);
    }

    /// The tuned choices of one adapter.
    pub fn for_adapter(&self, adapter: &AdapterKey) -> Tuning {
        Tuning {
            choices: self
                .entries
                .iter()
                .filter(|e| &e.adapter == adapter)
                .map(|e| (e.class.clone(), e.choice))
                .collect(),
        }
    }
}

/// The tuned choices for the adapter `info` from `source` (see the module docs for missing,
/// unreadable and corrupt files).
pub fn load(source: &TuneCacheSource, info: &wgpu::AdapterInfo) -> Result<Tuning> {
    match resolve(source) {
        None => Ok(Tuning::none()),
        Some((path, explicit)) => load_from(&path, explicit, info),
    }
}

/// The tuned choices for `info` in `path`; an unreadable or corrupt file is an error when
/// `explicit`, else ignored with a warning.
#[cfg(feature = "tune-cache")]
fn load_from(path: &Path, explicit: bool, info: &wgpu::AdapterInfo) -> Result<Tuning> {
    match TuneFile::read(path) {
        Ok(None) => Ok(Tuning::none()),
        Ok(Some(file)) => Ok(file.for_adapter(&AdapterKey::of(info))),
        Err(e) if explicit => Err(e),
        Err(e) => {
            log::warn!("ignoring the tune cache (untuned defaults are used): {e}");
            Ok(Tuning::none())
        }
    }
}

/// Without the `tune-cache` feature no file is read: a file named explicitly is an error
/// saying so, the user's default cache is skipped (untuned defaults).
#[cfg(not(feature = "tune-cache"))]
fn load_from(path: &Path, explicit: bool, _info: &wgpu::AdapterInfo) -> Result<Tuning> {
    if explicit {
        return Err(Error::TuneCache {
            path: path.to_path_buf(),
            message: "cannot be read: this build of wgattn has no `tune-cache` feature".into(),
        });
    }
    log::debug!("no `tune-cache` feature: {} not read", path.display());
    Ok(Tuning::none())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::RowsClass;

    #[cfg(feature = "tune-cache")]
    #[test]
    fn cache_file_round_trip_and_errors() {
        let dir = std::env::temp_dir().join(format!("wgattn-tune-unit-{}", std::process::id()));
        let path = dir.join("sub").join("tune.json");
        assert_eq!(TuneFile::read(&path).unwrap(), None);
        let info = wgpu::AdapterInfo {
            name: "Some GPU".into(),
            driver: "drv".into(),
            driver_info: "1.2".into(),
            ..wgpu::AdapterInfo::new(wgpu::DeviceType::DiscreteGpu, wgpu::Backend::Vulkan)
        };
        let class = ShapeClass {
            storage: "f16".into(),
            d16: 8,
            vec4: true,
            rows: RowsClass::Long,
        };
        let entry = |choice| TuneEntry {
            adapter: AdapterKey::of(&info),
            class: class.clone(),
            choice,
            shape: "1x32x8x4096x4096x128".into(),
            median_ms: 1.0,
            default_ms: 2.0,
            default: "tiled".into(),
            timed: 3,
            timing: "wall".into(),
        };
        let mut file = TuneFile::default();
        file.upsert(entry(TunedChoice::Tiled(crate::planner::TILED_DEFAULTS[0])));
        file.upsert(entry(TunedChoice::Rows { rows: 2, wg: 64 }));
        assert_eq!(file.entries.len(), 1, "same adapter and class replaced");
        file.write(&path).unwrap();
        let back = TuneFile::read(&path).unwrap().unwrap();
        assert_eq!(back, file);
        let tuning = back.for_adapter(&AdapterKey::of(&info));
        assert_eq!(
            tuning.choices.get(&class),
            Some(&TunedChoice::Rows { rows: 2, wg: 64 })
        );
        let explicit = TuneCacheSource::File(path.clone());
        assert_eq!(load(&explicit, &info).unwrap(), tuning);
        // another driver: not this adapter's entries
        let other = wgpu::AdapterInfo {
            driver_info: "1.3".into(),
            ..info.clone()
        };
        assert!(load(&explicit, &other).unwrap().is_empty());
        // corrupt and wrong-version files: typed errors when named explicitly
        std::fs::write(&path, "{ not json").unwrap();
        match load(&explicit, &info) {
            Err(Error::TuneCache { path: p, message }) => {
                assert_eq!(p, path);
                assert!(message.contains("not a tune cache"), "{message}");
            }
            other => panic!("expected TuneCache, got {other:?}"),
        }
        std::fs::write(&path, r#"{"version": 99, "entries": []}"#).unwrap();
        assert!(matches!(
            load(&explicit, &info),
            Err(Error::TuneCache { .. })
        ));
        assert!(load(&TuneCacheSource::Off, &info).unwrap().is_empty());
        // the user's cache (not named explicitly): ignored, untuned defaults
        assert!(load_from(&path, false, &info).unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
