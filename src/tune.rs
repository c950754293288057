//! Autotuning: the fused-kernel choices measured fastest on one adapter, per shape class,
//! kept in a cache file that the planner consults.
//!
//! `wgattn tune` (or [`tune_spec`]) sweeps the knobs of the fused kernels on the actual adapter
//! — rows per invocation and workgroup size of the rows variant, the workgroup-tiled variant,
//! the matrix-tile variant's rows, keys, workgroup size and tile (cooperative or portable), and
//! the key-split count of split-KV for decoding — checks every candidate against the f64 CPU
//! reference on a small problem of the same class before timing it, and stores the fastest in
//! a [`TuneFile`] keyed by adapter name + backend + driver ([`AdapterKey`]) and
//! [`ShapeClass`] (storage, head_dim class, vec4 access, decoding / short / long).
//!
//! A [`Context`] reads the entries of its adapter when it opens ([`Tuning`], from
//! `ContextOptions::tune_cache`); the planner uses a tuned choice when the spec's class has
//! one that can run it, and the untuned defaults otherwise. Variants forced by
//! `ContextOptions::flash_tiles` / `flash_mma` win over tuned ones.
//!
//! The cache file (feature `tune-cache`, on in the command-line tool) is JSON, by default `$XDG_CACHE_HOME/wgattn/tune.json` (else
//! `~/.cache/wgattn/tune.json`, on Windows `%LOCALAPPDATA%\wgattn\tune.json`); the
//! `WGATTN_TUNE_CACHE` environment variable names another file, or `off`. A missing file
//! means no tuning. A default-location file that cannot be read or parsed is ignored with a
//! warning (log): attention must not stop working because of a stale cache. A file named
//! explicitly ([`TuneCacheSource::File`]) that cannot be read or parsed is an error
//! ([`Error::TuneCache`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
#[cfg(not(target_arch = "wasm32"))]
use std::time::{Duration, Instant};

#[cfg(feature = "tune-cache")]
use serde::{Deserialize, Serialize};

use crate::bench::Timing;
use crate::error::{Error, Result};
use crate::planner::{
    self, Caps, DECODE_MAX_SEQ_Q, FusedVariant, HeadClass, KvSharing, MMA_SHAPES, MmaShape, Storage,
};
use crate::spec::{AttentionSpec, Kernel};
use crate::tiles::{TILED_DEFAULTS, TILED_SHAPES, TiledShape};
// Tuning times candidates with the blocking runner: native targets only.
#[cfg(not(target_arch = "wasm32"))]
use crate::{
    bench::Runner,
    context::Context,
    testdata::{self, Dist},
    validation::{TOL_F32, TOL_REDUCED, Tolerances},
};

/// Version of the cache file format this build reads and writes.
pub const CACHE_VERSION: u32 = 2;

/// Environment variable naming the tune cache file (or `off`).
pub const CACHE_ENV: &str = "WGATTN_TUNE_CACHE";

/// Query rows per kv head above which a prefill shape counts as long.
pub const LONG_ROWS: usize = 1024;

/// Where a context reads tuned choices from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TuneCacheSource {
    /// `WGATTN_TUNE_CACHE` (a path, or `off`), else [`default_path`]. Missing: no tuning;
    /// unreadable or corrupt: ignored with a warning.
    #[default]
    User,
    /// No tuning: the untuned defaults.
    Off,
    /// This file. Missing: no tuning; unreadable or corrupt: [`Error::TuneCache`].
    File(PathBuf),
}

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

/// How many query rows per kv head a shape has, as the tuner classes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "tune-cache", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "tune-cache", serde(rename_all = "lowercase"))]
pub enum RowsClass {
    /// `seq_q ≤` [`DECODE_MAX_SEQ_Q`]: decoding.
    Decode,
    /// Up to [`LONG_ROWS`] query rows per kv head.
    Short,
    /// More.
    Long,
}

/// The class of shapes one tuned choice serves.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "tune-cache", derive(Serialize, Deserialize))]
pub struct ShapeClass {
    /// `f32`, `f32-reduced` (f32 with [`AttentionSpec::reduced_precision`] where it
    /// applies), `f16` or `packed` (f16 in u32 words).
    pub storage: String,
    /// head_dim rounded up to a multiple of 16, / 16.
    pub d16: u32,
    /// q/k/v read as vec4.
    pub vec4: bool,
    /// Decoding, short or long.
    pub rows: RowsClass,
}

impl ShapeClass {
    /// The class of `spec` on a device with `caps`.
    pub fn of(spec: &AttentionSpec, caps: &Caps) -> ShapeClass {
        let class = HeadClass::of(spec, caps);
        let rows_per_kv_head = spec.group() * spec.seq_q;
        ShapeClass {
            storage: match Storage::of(spec, caps) {
                // f16 products: another class than exact f32
                Storage::F32 if planner::reduced_precision_applies(spec, caps) => "f32-reduced",
                Storage::F32 => "f32",
                Storage::F16 => "f16",
                Storage::Packed => "packed",
            }
            .into(),
            d16: class.d16,
            vec4: class.vec4,
            rows: if spec.seq_q <= DECODE_MAX_SEQ_Q {
                RowsClass::Decode
            } else if rows_per_kv_head <= LONG_ROWS {
                RowsClass::Short
            } else {
                RowsClass::Long
            },
        }
    }

    /// E.g. `f16 d≤128 vec4 long`.
    pub fn describe(&self) -> String {
        format!(
            "{} d≤{}{} {}",
            self.storage,
            self.d16 * 16,
            if self.vec4 { " vec4" } else { "" },
            match self.rows {
                RowsClass::Decode => "decode",
                RowsClass::Short => "short",
                RowsClass::Long => "long",
            }
        )
    }
}

/// One tunable choice of the fused kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "tune-cache", derive(Serialize, Deserialize))]
#[cfg_attr(
    feature = "tune-cache",
    serde(tag = "family", rename_all = "snake_case")
)]
pub enum TunedChoice {
    /// The rows variant (`flash.wgsl`) with `rows` query rows per invocation and `wg`
    /// invocations; K/V shared as the device allows (subgroups of a fixed size, else
    /// workgroup memory).
    Rows {
        /// Query rows per invocation (1, 2 or 4).
        rows: u32,
        /// Invocations per workgroup.
        wg: u32,
    },
    /// The workgroup-tiled variant (`flash_tiled.wgsl`) with this register-tile shape.
    Tiled(TiledShape),
    /// The matrix-tile variant (`flash_mma.wgsl`).
    Mma {
        /// Query rows per workgroup.
        rows: u32,
        /// Keys per block.
        keys: u32,
        /// Invocations per workgroup.
        wg: u32,
        /// Tile edge.
        tile: u32,
        /// Cooperative matrices.
        coop: bool,
    },
    /// Split-KV's key splits: the untuned count times 2^`shift`.
    Splits {
        /// Power of two applied to the untuned split count (−2 ..= 2).
        shift: i32,
    },
}

impl TunedChoice {
    /// The fused variant this choice means for `spec` on `caps`, if it can run it there
    /// (`None` for [`TunedChoice::Splits`], which is no variant).
    pub fn variant(&self, spec: &AttentionSpec, caps: &Caps) -> Option<FusedVariant> {
        let class = HeadClass::of(spec, caps);
        match *self {
            TunedChoice::Rows { rows, wg } => {
                let sharing = match caps.subgroup_size {
                    Some(sg) => KvSharing::Subgroup(sg),
                    None => KvSharing::Workgroup,
                };
                let fits_subgroups = match sharing {
                    KvSharing::Subgroup(sg) => wg.is_multiple_of(sg),
                    KvSharing::Workgroup => wg >= planner::WORKGROUP_KEYS,
                };
                // 4 rows of head_dim > 128 unroll past the shader size budget (as untuned)
                let rows_ok = [1, 2].contains(&rows) || (rows == 4 && class.d16 <= 8);
                (rows_ok && wg <= caps.limits.max_invocations && fits_subgroups).then_some(
                    FusedVariant::Rows {
                        class,
                        wg,
                        rows,
                        sharing,
                    },
                )
            }
            TunedChoice::Tiled(shape) => shape.fits(class, caps).then_some(FusedVariant::Tiled {
                class,
                shape,
                subgroups: shape.subgroups_on(caps),
            }),
            TunedChoice::Mma {
                rows,
                keys,
                wg,
                tile,
                coop,
            } => {
                let shape = MmaShape {
                    rows,
                    keys,
                    wg,
                    tile,
                    coop,
                    half: planner::half_operands(spec, caps),
                };
                planner::mma_fits(&shape, class, caps).then_some(FusedVariant::Mma { class, shape })
            }
            TunedChoice::Splits { .. } => None,
        }
    }

    /// The choice that selects `variant`, if it is tunable.
    pub fn of_variant(variant: &FusedVariant) -> Option<TunedChoice> {
        match *variant {
            FusedVariant::Rows { rows, wg, .. } => Some(TunedChoice::Rows { rows, wg }),
            FusedVariant::Tiled { shape, .. } => Some(TunedChoice::Tiled(shape)),
            FusedVariant::Mma { shape, .. } => Some(TunedChoice::Mma {
                rows: shape.rows,
                keys: shape.keys,
                wg: shape.wg,
                tile: shape.tile,
                coop: shape.coop,
            }),
            FusedVariant::Decode { .. } => None,
        }
    }

    /// A short description.
    pub fn describe(&self) -> String {
        match *self {
            TunedChoice::Rows { rows, wg } => format!("rows(r={rows}, wg={wg})"),
            TunedChoice::Tiled(shape) => shape.describe(),
            TunedChoice::Mma {
                rows,
                keys,
                wg,
                tile,
                coop,
            } => MmaShape {
                rows,
                keys,
                wg,
                tile,
                coop,
                // (cooperative matrices always multiply f16 operands)
                half: coop,
            }
            .describe(),
            TunedChoice::Splits { shift } => format!("splits ×2^{shift}"),
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
    /// The shape it was measured on (`validation::describe`).
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

/// The tuned choices of one adapter, per shape class: what the planner consults. Plain data
/// (build one by hand to ask the planner about tuned devices).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tuning {
    /// Choice per class.
    pub choices: HashMap<ShapeClass, TunedChoice>,
}

impl Tuning {
    /// No tuned choices.
    pub fn none() -> Tuning {
        Tuning::default()
    }

    /// One choice for one class.
    pub fn one(class: ShapeClass, choice: TunedChoice) -> Tuning {
        Tuning {
            choices: HashMap::from([(class, choice)]),
        }
    }

    /// The choice for `spec`'s class on `caps`, if any.
    pub fn get(&self, spec: &AttentionSpec, caps: &Caps) -> Option<TunedChoice> {
        if self.choices.is_empty() {
            return None;
        }
        self.choices.get(&ShapeClass::of(spec, caps)).copied()
    }

    /// True when nothing is tuned.
    pub fn is_empty(&self) -> bool {
        self.choices.is_empty()
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

/// The candidates the tuner times for `spec` on `caps` (the untuned default among them).
pub fn candidates(spec: &AttentionSpec, caps: &Caps) -> Vec<TunedChoice> {
    let class = ShapeClass::of(spec, caps);
    if class.rows == RowsClass::Decode {
        return (-2..=2)
            .map(|shift| TunedChoice::Splits { shift })
            .collect();
    }
    // the rows variant: 1, 2 or 4 rows per invocation, in workgroups of 64 (the untuned
    // default for all but the shortest problems) or 128
    let mut out = Vec::new();
    for rows in [1, 2, 4] {
        for wg in [64, 128] {
            out.push(TunedChoice::Rows { rows, wg });
        }
    }
    // every register-tile shape on GPUs; CPU adapters run the tiled variant far slower than
    // the rows variant (lavapipe), so they time the untuned shapes only
    if caps.device_type == wgpu::DeviceType::Cpu {
        out.extend(TILED_DEFAULTS.map(TunedChoice::Tiled));
    } else {
        out.extend(TILED_SHAPES.map(TunedChoice::Tiled));
    }
    let coop_edge = caps.coop_f16.filter(|_| planner::half_operands(spec, caps));
    // The portable tile multiplies are a correctness fallback; on CPU adapters they are an
    // order of magnitude slower than the rows variant (lavapipe), so only GPUs time them.
    let portable = (caps.device_type != wgpu::DeviceType::Cpu).then_some((16, false));
    for &(rows, keys, wg) in &MMA_SHAPES {
        for (tile, coop) in coop_edge.map(|e| (e, true)).into_iter().chain(portable) {
            out.push(TunedChoice::Mma {
                rows,
                keys,
                wg,
                tile,
                coop,
            });
        }
    }
    out.retain(|c| c.variant(spec, caps).is_some());
    out
}

/// A small problem of the same class as `spec` (≤ ~2e8 FLOPs) that a candidate is checked on
/// against the CPU reference before it is timed.
pub fn check_spec(spec: &AttentionSpec) -> AttentionSpec {
    let group = spec.group();
    let (seq_q, seq_k) = if spec.seq_q <= DECODE_MAX_SEQ_Q {
        (spec.seq_q, spec.seq_k.min(1500))
    } else if group * spec.seq_q <= LONG_ROWS {
        (spec.seq_q.min(130), spec.seq_k.min(300))
    } else {
        ((LONG_ROWS / group + 33).max(17), spec.seq_k.min(150))
    };
    let alibi = spec.alibi.as_ref().map(|a| match a {
        // the slopes of the first kv head's query heads
        crate::spec::Alibi::Slopes(s) => crate::spec::Alibi::Slopes(s[..group].to_vec()),
        other => other.clone(),
    });
    AttentionSpec {
        batch: 1,
        q_heads: group,
        kv_heads: 1,
        seq_q,
        seq_k,
        kv_lens: None,
        alibi,
        return_weights: false,
        return_lse: false,
        ..spec.clone()
    }
}

/// How the tuner times candidates.
#[derive(Debug, Clone, Copy)]
pub struct TuneConfig {
    /// Untimed runs before timing.
    pub warmup: usize,
    /// Timed runs at least.
    pub min_runs: usize,
    /// Seconds of timing per candidate (runs beyond `min_runs` while time is left).
    pub seconds: f64,
    /// How to time.
    pub timing: Timing,
}

impl Default for TuneConfig {
    fn default() -> Self {
        TuneConfig {
            warmup: 1,
            min_runs: 3,
            seconds: 0.5,
            timing: Timing::Auto,
        }
    }
}

/// What happened to one candidate.
#[derive(Debug, Clone)]
pub struct CandidateResult {
    /// The candidate (`None`: the untuned default).
    pub choice: Option<TunedChoice>,
    /// What ran (the plan's variant).
    pub ran: String,
    /// Median ms, or why it was rejected (reference check failed, did not plan or run).
    pub outcome: std::result::Result<f64, String>,
}

/// The result of tuning one shape.
#[derive(Debug, Clone)]
pub struct TuneOutcome {
    /// The class tuned.
    pub class: ShapeClass,
    /// The shape timed.
    pub spec: AttentionSpec,
    /// The untuned default first, then every candidate.
    pub results: Vec<CandidateResult>,
    /// The entry to store (`None` when nothing passed, not even the default).
    pub entry: Option<TuneEntry>,
}

/// What a plan runs, in words: its variant (and splits), or its kernel.
pub fn plan_variant(plan: &crate::Plan) -> String {
    let c = plan.choice();
    let v = c
        .variant
        .map(|v| v.describe())
        .unwrap_or_else(|| c.kernel.name().to_string());
    if c.splits > 1 {
        format!("{v}, {} splits", c.splits)
    } else {
        v
    }
}

#[cfg(not(target_arch = "wasm32"))]
/// Checks the plan of `spec` with `tuning` against the CPU reference on a small problem of
/// the same class; `Err` says why it is rejected.
fn check_candidate(
    ctx: &Context,
    spec: &AttentionSpec,
    tuning: &Tuning,
) -> std::result::Result<(), String> {
    let small = check_spec(spec);
    let plan = ctx.plan_tuned(&small, tuning).map_err(|e| e.to_string())?;
    if !tuning.is_empty() && !plan.choice().tuned {
        return Err("not applicable to the check shape".into());
    }
    let runner = Runner::from_plan(ctx, plan, Timing::Wall).map_err(|e| e.to_string())?;
    runner.run_once().map_err(|e| e.to_string())?;
    let gpu = runner.read_output().map_err(|e| e.to_string())?;
    let data = testdata::generate(&small, Dist::Normal, Runner::SEED);
    let inputs = data.inputs();
    let cpu = crate::reference::attention_with(&small, &inputs).map_err(|e| e.to_string())?;
    // f16 products where the spec allows them and they apply
    let tolerance = if planner::reduced_precision_applies(&small, ctx.caps()) {
        TOL_REDUCED
    } else {
        TOL_F32
    };
    let tol =
        Tolerances::for_inputs(&small, &inputs, &cpu.out, tolerance).map_err(|e| e.to_string())?;
    let verdict = tol.verdict(&gpu, &cpu);
    if verdict.passed() {
        Ok(())
    } else {
        Err(format!("reference check failed: {verdict}"))
    }
}

#[cfg(not(target_arch = "wasm32"))]
/// Times the plan of `spec` with `tuning`: (median ms, what ran, timing). A candidate whose
/// first timed run is slower than `cutoff_ms` is not timed further (that run is its time).
fn time_candidate(
    ctx: &Context,
    spec: &AttentionSpec,
    tuning: &Tuning,
    config: &TuneConfig,
    cutoff_ms: f64,
) -> Result<(f64, String, &'static str)> {
    let plan = ctx.plan_tuned(&spec.clone().with_weights(false), tuning)?;
    let ran = plan_variant(&plan);
    let runner = Runner::from_plan(ctx, plan, config.timing)?;
    for _ in 0..config.warmup {
        runner.run_once()?;
    }
    let first = runner.run_once()?;
    if first > cutoff_ms {
        return Ok((first, ran, runner.timing()));
    }
    let mut times = vec![first];
    let started = Instant::now();
    let budget = Duration::from_secs_f64(config.seconds.max(0.0));
    while times.len() < config.min_runs.max(1) || started.elapsed() < budget {
        times.push(runner.run_once()?);
        if times.len() >= 1000 {
            break;
        }
    }
    Ok((median(&mut times), ran, runner.timing()))
}

#[cfg(not(target_arch = "wasm32"))]
/// Tunes `spec`'s class on `ctx`: the untuned default and every candidate are checked
/// against the reference on [`check_spec`], those that pass are timed on `spec`, the fastest
/// becomes the entry. `progress` gets one line per candidate.
pub fn tune_spec(
    ctx: &Context,
    spec: &AttentionSpec,
    config: &TuneConfig,
    progress: &mut dyn FnMut(&CandidateResult),
) -> Result<TuneOutcome> {
    spec.validate(ctx.limits())?;
    let caps = ctx.caps();
    let class = ShapeClass::of(spec, caps);
    let mut results = Vec::new();
    let mut timing = "wall";
    let mut default_ms = None;
    let mut default_ran = String::new();
    let mut seen_variants: Vec<String> = Vec::new();
    let mut best: Option<(f64, TunedChoice)> = None;
    let mut timed = 0;
    let choices = std::iter::once(None).chain(candidates(spec, caps).into_iter().map(Some));
    for choice in choices {
        let tuning = match choice {
            Some(c) => Tuning::one(class.clone(), c),
            None => Tuning::none(),
        };
        // far slower than the default after one run: not worth timing further
        let cutoff = default_ms.map_or(f64::INFINITY, |d| 4.0 * d);
        let outcome = check_candidate(ctx, spec, &tuning).and_then(|()| {
            time_candidate(ctx, spec, &tuning, config, cutoff).map_err(|e| e.to_string())
        });
        let result = match outcome {
            Ok((ms, ran, t)) => {
                timing = t;
                // a candidate that plans to what already ran (e.g. the default) is not
                // timed twice as a different choice
                let duplicate = choice.is_some() && seen_variants.contains(&ran);
                seen_variants.push(ran.clone());
                match choice {
                    None => {
                        default_ms = Some(ms);
                        default_ran = ran.clone();
                    }
                    Some(c) if !duplicate => {
                        timed += 1;
                        if best.is_none_or(|(b, _)| ms < b) {
                            best = Some((ms, c));
                        }
                    }
                    Some(_) => {}
                }
                CandidateResult {
                    choice,
                    ran,
                    outcome: Ok(ms),
                }
            }
            Err(why) => CandidateResult {
                choice,
                ran: String::new(),
                outcome: Err(why),
            },
        };
        progress(&result);
        results.push(result);
    }
    // The default wins unless a candidate is faster; its own choice is stored then (the
    // default of a class with a tunable variant), so the cache records the decision.
    let default_choice = planner::plan(spec, caps)
        .ok()
        .and_then(|c| match c.variant {
            Some(FusedVariant::Decode { .. }) | None => {
                (class.rows == RowsClass::Decode).then_some(TunedChoice::Splits { shift: 0 })
            }
            Some(v) => TunedChoice::of_variant(&v),
        });
    // A candidate that beat the default in the sweep is timed again against it, alternating,
    // CONFIRM_ROUNDS times: it is stored only if the medians of those rounds still show it
    // MIN_GAIN faster (timing noise must not replace a default with a slower choice).
    let winner = match (default_ms, best) {
        (Some(d), Some((ms, c))) if ms < d => {
            let untuned = Tuning::none();
            let tuned = Tuning::one(class.clone(), c);
            let (mut ds, mut bs) = (Vec::new(), Vec::new());
            for _ in 0..CONFIRM_ROUNDS {
                ds.push(time_candidate(ctx, spec, &untuned, config, f64::INFINITY)?.0);
                bs.push(time_candidate(ctx, spec, &tuned, config, f64::INFINITY)?.0);
            }
            let (d, b) = (median(&mut ds), median(&mut bs));
            default_ms = Some(d);
            if b < d * (1.0 - MIN_GAIN) {
                Some((b, c))
            } else {
                default_choice.map(|c| (d, c))
            }
        }
        (Some(d), _) => default_choice.map(|c| (d, c)),
        (None, Some((ms, c))) => Some((ms, c)),
        (None, None) => None,
    };
    let entry = winner.map(|(ms, choice)| TuneEntry {
        adapter: AdapterKey::of(ctx.adapter_info()),
        class: class.clone(),
        choice,
        shape: crate::validation::describe(spec),
        median_ms: ms,
        default_ms: default_ms.unwrap_or(f64::NAN),
        default: default_ran.clone(),
        timed,
        timing: timing.into(),
    });
    Ok(TuneOutcome {
        class,
        spec: spec.clone(),
        results,
        entry,
    })
}

/// Rounds of the default against the sweep's winner before the winner is stored.
pub const CONFIRM_ROUNDS: usize = 3;

/// How much faster than the default (fraction of its time) a candidate must be to be stored.
pub const MIN_GAIN: f64 = 0.02;

#[cfg(not(target_arch = "wasm32"))]
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// True when the kernel of `spec` may use tuned choices (everything but three-pass).
pub fn tunable(spec: &AttentionSpec) -> bool {
    spec.kernel != Kernel::ThreePass && !spec.return_weights
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_check_shapes() {
        let caps = planner::caps_classes()[0];
        let long = AttentionSpec::new(1, 32, 8, 4096, 4096, 128);
        let c = ShapeClass::of(&long, &caps);
        assert_eq!(
            (c.rows, c.d16, c.storage.as_str()),
            (RowsClass::Long, 8, "f32")
        );
        for spec in [
            long,
            AttentionSpec::new(1, 8, 8, 512, 512, 64),
            AttentionSpec::new(2, 8, 2, 1, 32768, 128).dtype(crate::DType::F16),
            AttentionSpec::new(1, 4, 1, 300, 200, 80).kv_lens(vec![100]),
        ] {
            let small = check_spec(&spec);
            assert_eq!(ShapeClass::of(&small, &caps), ShapeClass::of(&spec, &caps));
            assert!(small.flops() <= 2e8, "{}", small.flops());
            small.validate(&crate::DeviceLimits::unbounded()).unwrap();
        }
    }

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
        file.upsert(entry(TunedChoice::Tiled(TILED_DEFAULTS[0])));
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
