//! `wgattn heatmap`: draw one head's attention weights, computed on the GPU, as a PNG or SVG.

use std::path::PathBuf;

use crate::heatmap::{self, Aggregate, ColorMap, RenderOptions, Scale, Window};
use wgattn::{AttentionSpec, DeviceLimits, Error, Result, SpecProblem};

use super::values::LayoutArg;
use crate::Outcome;
use crate::picture::Format;

/// Arguments of `wgattn heatmap`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Input safetensors file with tensors q, k, v (and metadata for masks and scale), plus
    /// `bias` and `mask` when it holds them.
    #[arg(long, required_unless_present = "weights", conflicts_with = "weights")]
    input: Option<PathBuf>,
    /// Draw probabilities computed elsewhere instead: a safetensors file with a tensor
    /// `weights` `[B, H, Sq, Sk]` (e.g. from `cargo run --example minilm -- --attention FILE`);
    /// its metadata `tokens` (tab-separated) labels both axes with the tokens.
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
    /// Output picture: .png or .svg (SVG holds one rectangle per displayed cell: keep
    /// --max-size small for long sequences).
    #[arg(long, value_name = "FILE.png|svg")]
    output: PathBuf,
    /// Batch entry to draw.
    #[arg(long, default_value_t = 0)]
    batch: usize,
    /// Query head to draw.
    #[arg(long, default_value_t = 0)]
    head: usize,
    /// Query rows to draw, half-open a..b (default: all).
    #[arg(long, value_name = "A..B")]
    query_range: Option<String>,
    /// Keys to draw, half-open a..b (default: all).
    #[arg(long, value_name = "A..B")]
    key_range: Option<String>,
    /// Layout of the tensors in the file (default: the file's metadata, else bhsd).
    #[arg(long, value_enum)]
    layout: Option<LayoutArg>,
    #[command(flatten)]
    files: super::spec_flags::TensorFiles,
    /// Colour map.
    #[arg(long, value_enum, default_value_t)]
    colormap: ColorMap,
    /// How blocks of cells are combined on long sequences.
    #[arg(long, value_enum, default_value_t)]
    aggregate: Aggregate,
    /// How weights map onto the colours (not the softmax scale, which comes from the file):
    /// auto is log when linear would leave half of the cells in the lowest tenth of the colours.
    #[arg(long, value_enum, default_value_t)]
    color_scale: Scale,
    /// Most cells drawn along a side (16..=8192); longer axes are aggregated in blocks.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(16..=8192))]
    max_size: u64,
}

/// Runs `wgattn heatmap`.
pub fn run(args: Args, adapter: Option<String>) -> Result<Outcome> {
    let options = RenderOptions {
        colormap: args.colormap,
        aggregate: args.aggregate,
        scale: args.color_scale,
        max_side: args.max_size as usize,
        ..RenderOptions::default()
    };
    Format::of(&args.output)?;
    let input = match (&args.input, &args.weights) {
        (_, Some(weights)) => return draw_weights(weights, &args, &options),
        (Some(input), None) => input.clone(),
        (None, None) => {
            return Err(Error::spec("input", "missing", "give --input or --weights"));
        }
    };
    let mut case = wgattn::io::read_case_as(&input, args.layout.map(Into::into))?;
    // The file's metadata gives causal mask, window, ALiBi, soft-cap, kv_lens, softmax scale
    // and dtype (`wgattn gen` writes them).
    let mut spec = case.spec.clone();
    args.files.load(&mut spec, &mut case)?;
    let spec = &spec;
    let window = Window {
        batch: args.batch,
        head: args.head,
        queries: match &args.query_range {
            Some(r) => heatmap::parse_range("query_range", r, spec.seq_q)?,
            None => 0..spec.seq_q,
        },
        keys: match &args.key_range {
            Some(r) => heatmap::parse_range("key_range", r, spec.seq_k)?,
            None => 0..spec.seq_k,
        },
    };
    // Every input check before the GPU is opened; the head's sub-problem is sized before its
    // tensors are gathered.
    spec.check_inputs(&case.inputs())
        .map_err(|e| super::spec_flags::in_file(&input, e))?;
    let head = heatmap::head_spec(spec, &window)?;
    let ctx = super::open(adapter)?;
    let too_large = |e: Error| too_large(e, spec, &window, &head.spec, ctx.limits(), &args);
    head.spec.validate(ctx.limits()).map_err(too_large)?;
    let problem = heatmap::head_problem(spec, &case.inputs(), &window)?;
    let started = std::time::Instant::now();
    let out = ctx
        .attention_with(&problem.spec, &problem.inputs())
        .map_err(too_large)?;
    let elapsed = started.elapsed();
    let weights = out.weights.ok_or_else(|| Error::Gpu {
        during: "reading the attention weights",
        message: "the kernel returned no probability matrix".into(),
    })?;
    let matrix = problem.matrix(&weights)?;
    let image = heatmap::render(&matrix, &options)?;
    let description = format!(
        "attention weights of batch {} head {}: rows = queries {}..{}, columns = keys {}..{} ({})",
        window.batch,
        window.head,
        window.queries.start,
        window.queries.end,
        window.keys.start,
        window.keys.end,
        wgattn::validation::describe(spec)
    );
    image.write(
        &args.output,
        &[
            ("Title", "wgattn heatmap".to_string()),
            ("Description", description),
            ("Source", input.display().to_string()),
        ],
    )?;
    let p = &image.plot;
    println!(
        "{}: batch {} head {}, queries {}..{} x keys {}..{}, {} on {} in {:.1} ms",
        input.display(),
        window.batch,
        window.head,
        window.queries.start,
        window.queries.end,
        window.keys.start,
        window.keys.end,
        problem.spec.kernel,
        ctx.adapter_info().name,
        elapsed.as_secs_f64() * 1e3
    );
    println!(
        "wrote {} ({}x{} px; {}x{} cells, {} of {}x{} per cell; {} {} scale from {} to {}; {} masked cells)",
        args.output.display(),
        image.width,
        image.height,
        p.rows,
        p.cols,
        options.aggregate.name(),
        p.block_rows,
        p.block_cols,
        options.colormap.name(),
        image.options.scale.name(),
        heatmap::format_weight(image.min as f64),
        heatmap::format_weight(image.max as f64),
        image.masked_cells
    );
    if image.options.scale == Scale::Linear && image.median_position < heatmap::AUTO_LOG_BELOW {
        println!(
            "note: the median cell sits at {:.1}% of the colour range; --color-scale log shows more",
            image.median_position * 100.0
        );
    }
    Ok(Outcome::Ok)
}

/// `wgattn heatmap --weights FILE`: draws one head of a stored probability tensor, its axes
/// labelled with the file's `tokens` when it has them.
fn draw_weights(path: &std::path::Path, args: &Args, options: &RenderOptions) -> Result<Outcome> {
    let file = wgattn::layer::TensorFile::open(path)?;
    let (shape, weights) = file.floats("weights")?;
    let &[b, h, sq, sk] = shape.as_slice() else {
        return Err(Error::BadFile {
            path: path.to_path_buf(),
            message: format!("tensor `weights` has shape {shape:?}, expected [B, H, Sq, Sk]"),
        });
    };
    for (field, value, bound) in [("batch", args.batch, b), ("head", args.head, h)] {
        if value >= bound {
            return Err(Error::spec(field, value, format!("is not below {bound}")));
        }
    }
    let window = Window {
        batch: args.batch,
        head: args.head,
        queries: match &args.query_range {
            Some(r) => heatmap::parse_range("query_range", r, sq)?,
            None => 0..sq,
        },
        keys: match &args.key_range {
            Some(r) => heatmap::parse_range("key_range", r, sk)?,
            None => 0..sk,
        },
    };
    // The stored probabilities carry no mask: every cell is drawn with its value.
    let base = (window.batch * h + window.head) * sq * sk;
    let mut cut = Vec::with_capacity(window.queries.len() * window.keys.len());
    for i in window.queries.clone() {
        let row = base + i * sk;
        cut.extend_from_slice(&weights[row + window.keys.start..row + window.keys.end]);
    }
    let masked = vec![false; cut.len()];
    let mut matrix = heatmap::AttentionMatrix::new(window, cut, masked)?;
    let tokens: Option<Vec<String>> = file
        .metadata("tokens")
        .map(|t| t.split('\t').map(str::to_string).collect());
    if let Some(tokens) = &tokens {
        matrix = matrix.with_tokens(tokens, tokens)?;
    }
    let image = heatmap::render(&matrix, options)?;
    let mut text = vec![
        ("Title", "wgattn heatmap".to_string()),
        ("Source", path.display().to_string()),
    ];
    if let Some(sentence) = file.metadata("sentence") {
        // PNG text chunks are Latin-1.
        let latin1 = sentence
            .chars()
            .map(|c| if (c as u32) < 256 { c } else { '?' })
            .collect();
        text.push(("Description", latin1));
    }
    image.write(&args.output, &text)?;
    println!(
        "wrote {} ({}x{} px; head {} of {}, {}x{} cells{})",
        args.output.display(),
        image.width,
        image.height,
        args.head,
        h,
        image.plot.rows,
        image.plot.cols,
        if tokens.is_some() {
            ", token labels"
        } else {
            ""
        }
    );
    Ok(Outcome::Ok)
}

/// Adds a suggestion to draw fewer query rows to an error about the size of the head's
/// sub-problem (`sub`) on this device: a spec problem about its weights, bias or mask
/// buffers, or [`Error::TooLarge`]. Other errors pass through unchanged. The result is an
/// [`Error::InvalidSpec`] (exit code 2).
fn too_large(
    e: Error,
    spec: &AttentionSpec,
    window: &Window,
    sub: &AttentionSpec,
    limits: &DeviceLimits,
    args: &Args,
) -> Error {
    let mut problems = match e {
        Error::InvalidSpec { problems }
            if problems
                .iter()
                .any(|p| matches!(p.field.as_str(), "weights" | "bias" | "mask")) =>
        {
            problems
        }
        Error::TooLarge { .. } => vec![SpecProblem {
            field: "weights".into(),
            value: format!("[{}, {}]", sub.seq_q, sub.seq_k),
            reason: format!("does not fit the device: {e}"),
        }],
        other => return other,
    };
    let (a, keys) = (window.queries.start, window.keys.len());
    let fit = heatmap::rows_that_fit(spec, window, limits);
    let hint = if fit == 0 {
        "not even one query row fits: pass a shorter --key-range or use a device with \
         larger buffers"
            .to_string()
    } else {
        format!(
            "about {fit} rows fit, e.g. --query-range {a}..{}",
            a + fit.min(spec.seq_q - a)
        )
    };
    let (value, reason) = match &args.query_range {
        None => (
            format!("(none: all {} query rows)", spec.seq_q),
            format!(
                "the probability matrix of all {} query rows x {keys} keys does not fit in \
                 one buffer of this device; pass --query-range A..B to draw fewer rows \
                 ({hint})",
                spec.seq_q
            ),
        ),
        Some(r) => (
            r.clone(),
            format!("is too many query rows for this device ({hint})"),
        ),
    };
    problems.push(SpecProblem {
        field: "query_range".into(),
        value,
        reason,
    });
    Error::InvalidSpec { problems }
}
