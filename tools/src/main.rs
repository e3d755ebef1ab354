//! `edgeseg-tools`: the offline tools of edgeseg.
//!
//! Today: `eval` (run a segmenter over a dataset split and write a JSON report plus a Markdown
//! summary) and `check-dataset` (decode every file a manifest lists).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use edgeseg_tools::dataset::{CaseImage, Dataset, Split};
use edgeseg_tools::eval::{run_eval, EvalConfig, PromptMode};
use edgeseg_tools::grid::BinaryMask;
use edgeseg_tools::segmenter::{self, Segmenter};

#[derive(Parser)]
#[command(name = "edgeseg-tools", version, about = "edgeseg offline tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a segmenter over a dataset split; write a JSON report and a Markdown summary.
    Eval(Box<EvalArgs>),
    /// Check a dataset folder: parse its manifest and decode every image and mask it lists.
    CheckDataset {
        /// Dataset folder (holding manifest.csv).
        #[arg(long)]
        dataset: PathBuf,
    },
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("method").args(["segmenter", "bundle", "support"])))]
struct EvalArgs {
    /// Dataset folder: any folder with manifest.csv (columns image,mask,split,group[,...]).
    #[arg(long)]
    dataset: PathBuf,
    /// Split to evaluate.
    #[arg(long, default_value = "test", value_parser = parse_split)]
    split: Split,
    /// Where to write the JSON report.
    #[arg(long)]
    out: PathBuf,
    /// Where to write the Markdown summary [default: the report path with .md].
    #[arg(long)]
    summary: Option<PathBuf>,
    /// A built-in segmenter: box-fill (the prompt box, filled) or otsu-box (Otsu threshold in
    /// the box, largest component, holes filled).
    #[arg(long, default_value = "otsu-box")]
    segmenter: String,
    /// A model bundle to evaluate (not available in this build yet).
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// A few-shot prototype set to evaluate (not available in this build yet).
    #[arg(long)]
    support: Option<PathBuf>,
    /// Evaluate only the first N cases of the split, in manifest order.
    #[arg(long)]
    limit: Option<usize>,
    /// How prompt boxes come from the ground truth: one box around the whole mask, or one per
    /// connected component (predictions united).
    #[arg(long, value_enum, default_value = "whole")]
    prompt: PromptMode,
    /// In `--prompt components`, components smaller than this get no box of their own.
    #[arg(long, default_value_t = 0)]
    min_component: usize,
    /// Move each box edge by up to this fraction of the box extent (uniform, seeded).
    #[arg(long, default_value_t = 0.0)]
    box_jitter: f64,
    /// Seed for --box-jitter.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Evaluate one label of multi-label masks (default: all non-zero labels as one structure).
    #[arg(long)]
    label: Option<u8>,
    /// NSD tolerance in pixels/voxels.
    #[arg(long, default_value_t = 2.0)]
    nsd_tolerance: f64,
    /// NSD tolerance in mm, for cases whose spacing is known.
    #[arg(long, default_value_t = 2.0)]
    nsd_tolerance_mm: f64,
    /// Write each predicted mask as PNG (0/255) into this folder (2D only).
    #[arg(long)]
    save_masks: Option<PathBuf>,
}

fn parse_split(s: &str) -> Result<Split, String> {
    s.parse()
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Eval(args) => eval(*args),
        Command::CheckDataset { dataset } => check_dataset(&dataset),
    }
}

fn command_line() -> String {
    std::env::args()
        .map(|a| if a.contains(' ') { format!("'{a}'") } else { a })
        .collect::<Vec<_>>()
        .join(" ")
}

fn progress(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({elapsed} < {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

fn eval(args: EvalArgs) -> Result<()> {
    if let Some(b) = &args.bundle {
        bail!(
            "--bundle {}: model bundles are not supported by this build yet (the bundle format arrives with the CPU runtime); use --segmenter {}",
            b.display(),
            segmenter::BUILTIN.join("|")
        );
    }
    if let Some(s) = &args.support {
        bail!(
            "--support {}: few-shot prototype sets are not supported by this build yet; use --segmenter {}",
            s.display(),
            segmenter::BUILTIN.join("|")
        );
    }
    if !(args.box_jitter >= 0.0 && args.box_jitter.is_finite()) {
        bail!(
            "--box-jitter must be a non-negative fraction, got {}",
            args.box_jitter
        );
    }
    if !(args.nsd_tolerance >= 0.0 && args.nsd_tolerance_mm >= 0.0) {
        bail!("NSD tolerances must be non-negative");
    }
    let mut seg: Box<dyn Segmenter> = segmenter::builtin(&args.segmenter).with_context(|| {
        format!(
            "unknown segmenter '{}'; built-in ones: {}",
            args.segmenter,
            segmenter::BUILTIN.join(", ")
        )
    })?;
    let dataset = Dataset::open(&args.dataset)
        .with_context(|| format!("opening dataset {}", args.dataset.display()))?;
    let cfg = EvalConfig {
        split: args.split,
        limit: args.limit,
        prompt_mode: args.prompt,
        min_component: args.min_component,
        jitter: args.box_jitter,
        seed: args.seed,
        label: args.label,
        nsd_tolerance_px: args.nsd_tolerance,
        nsd_tolerance_mm: args.nsd_tolerance_mm,
    };
    let n = dataset
        .split(cfg.split)
        .count()
        .min(cfg.limit.unwrap_or(usize::MAX));
    if let Some(dir) = &args.save_masks {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let bar = progress(n, &format!("{} on {}", seg.name(), dataset.name()));
    let mut save_error: Option<anyhow::Error> = None;
    let report = run_eval(
        &dataset,
        seg.as_mut(),
        &cfg,
        command_line(),
        |_, result, pred| {
            bar.inc(1);
            if let (Some(dir), Some(mask)) = (&args.save_masks, pred) {
                if save_error.is_none() {
                    if let Err(e) = save_mask_png(&dir.join(format!("{}.png", result.id)), mask) {
                        save_error = Some(e);
                    }
                }
            }
        },
    )
    .with_context(|| {
        format!(
            "evaluating {} on {}",
            args.segmenter,
            args.dataset.display()
        )
    })?;
    bar.finish_and_clear();
    if let Some(e) = save_error {
        return Err(e);
    }
    let json = serde_json::to_string_pretty(&report).context("serializing the report")?;
    write_file(&args.out, json.as_bytes())?;
    let summary_path = args
        .summary
        .unwrap_or_else(|| args.out.with_extension("md"));
    write_file(&summary_path, report.to_markdown().as_bytes())?;
    let a = &report.aggregate;
    let fmt = |v: Option<f64>, s: f64| v.map_or("n/a".to_string(), |x| format!("{:.2}", x * s));
    println!(
        "{} on {} ({}): {} cases evaluated, {} skipped | Dice {}% (median {}) | IoU {}% | HD95 median {} px | NSD@{}px {}% | latency p50 {} ms",
        report.segmenter,
        report.dataset.name,
        report.dataset.split,
        report.dataset.evaluated,
        report.dataset.skipped,
        fmt(a.dice.mean, 100.0),
        fmt(a.dice.median, 100.0),
        fmt(a.iou.mean, 100.0),
        fmt(a.hd95_px.median, 1.0),
        cfg.nsd_tolerance_px,
        fmt(a.nsd_px.mean, 100.0),
        fmt(report.latency_ms.p50, 1.0),
    );
    println!(
        "report: {}  summary: {}",
        args.out.display(),
        summary_path.display()
    );
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

fn save_mask_png(path: &Path, mask: &BinaryMask) -> Result<()> {
    let dims = mask.shape.dims();
    if dims.len() != 2 {
        bail!("--save-masks supports 2D masks only");
    }
    let (h, w) = (dims[0], dims[1]);
    let data: Vec<u8> = mask.data.iter().map(|&v| if v { 255 } else { 0 }).collect();
    let img = image::GrayImage::from_raw(w as u32, h as u32, data)
        .context("mask buffer does not match its size")?;
    img.save(path)
        .with_context(|| format!("writing {}", path.display()))
}

fn check_dataset(dir: &Path) -> Result<()> {
    let dataset =
        Dataset::open(dir).with_context(|| format!("opening dataset {}", dir.display()))?;
    let bar = progress(dataset.cases.len(), &format!("checking {}", dataset.name()));
    let mut per_split = std::collections::BTreeMap::new();
    let mut empty = 0usize;
    for case in &dataset.cases {
        let loaded = dataset.load(case)?;
        if loaded.labels.data.iter().all(|&v| v == 0) {
            empty += 1;
        }
        let kind = match &loaded.image {
            CaseImage::TwoD(im) => format!("{}ch", im.channels),
            CaseImage::ThreeD(_) => "3D".into(),
        };
        *per_split.entry((case.split, kind)).or_insert(0usize) += 1;
        bar.inc(1);
    }
    bar.finish_and_clear();
    println!(
        "{}: {} cases, all files decode ({} with an empty mask)",
        dataset.name(),
        dataset.cases.len(),
        empty
    );
    for ((split, kind), n) in per_split {
        println!("  {split:5} {kind:4} {n}");
    }
    Ok(())
}
