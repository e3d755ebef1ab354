//! `edgeseg`: the on-device runtime binary.
//!
//! `segment` runs a bundle on one image, `bench` measures a bundle's latency,
//! `info` reports the build.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use edgeseg_runtime::backend::{self, BackendOptions, Device, RgbFrame};
use edgeseg_runtime::bench::{self, BenchConfig};
use edgeseg_runtime::bundle::VerifyPolicy;
use edgeseg_runtime::{BoxPrompt, PointLabel, PointPrompt, Prompt};

#[derive(Parser)]
#[command(
    name = "edgeseg",
    version,
    about = "edgeseg on-device segmentation runtime"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the runtime version and what this build contains.
    Info,
    /// Stream frames through the model: overlays, masks and a per-frame log.
    Run(edgeseg_runtime::stream::cli::RunArgs),
    /// Run the default model on the committed sample sequence.
    Demo(edgeseg_runtime::stream::cli::DemoArgs),
    /// Measure streaming pass-through and annotation latency.
    BenchStream(edgeseg_runtime::stream::cli::BenchStreamArgs),
    /// Segment one image with a bundle and a box and/or points; write the mask as PNG.
    Segment(SegmentArgs),
    /// Measure a bundle: cold start, encoder and decoder latency, peak memory.
    Bench(BenchArgs),
}

/// Options shared by the commands that open a bundle.
#[derive(Args, Debug)]
struct BundleArgs {
    /// The model bundle.
    #[arg(long)]
    bundle: PathBuf,
    /// Worker threads [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Require a valid signature by this Ed25519 public key (hex file, NAME.pub).
    #[arg(long)]
    pubkey: Option<PathBuf>,
    /// Where the model runs: `auto` (the GPU if usable, else the CPU, with one
    /// log line saying why), `cpu` (tract), or `gpu` (an error without a usable GPU).
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    device: Device,
}

impl BundleArgs {
    fn options(&self) -> Result<BackendOptions> {
        let mut o = BackendOptions {
            device: self.device,
            ..BackendOptions::default()
        };
        if let Some(t) = self.threads {
            o.threads = t;
        }
        if let Some(p) = &self.pubkey {
            o.verify = VerifyPolicy::require_signature(read_pubkey(p)?);
        }
        Ok(o)
    }
}

#[derive(Args, Debug)]
struct SegmentArgs {
    #[command(flatten)]
    bundle: BundleArgs,
    /// Input image (PNG or JPEG; grey images are replicated to RGB).
    #[arg(long)]
    image: PathBuf,
    /// Box `x0,y0,x1,y1` in pixels (x1/y1 inclusive).
    #[arg(long = "box", value_parser = parse_box)]
    bbox: Option<BoxPrompt>,
    /// Point `x,y[,fg|bg]` in pixels (repeatable; default label fg).
    #[arg(long = "point", value_parser = parse_point)]
    points: Vec<PointPrompt>,
    /// Output mask PNG (0/255) [default: <image stem>.mask.png in the current folder].
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct BenchArgs {
    #[command(flatten)]
    bundle: BundleArgs,
    /// Timed runs of the encoder and of the decoder.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Untimed warm-up runs.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Frame to use [default: a synthetic 640x480 frame].
    #[arg(long)]
    image: Option<PathBuf>,
    /// Box prompt `x0,y0,x1,y1` [default: the central half of the frame].
    #[arg(long = "box", value_parser = parse_box)]
    bbox: Option<BoxPrompt>,
    /// Also time the plain ONNX graphs of this export folder as bare tract plans.
    #[arg(long)]
    bare_onnx: Option<PathBuf>,
    /// Build the --bare-onnx plans without edgeseg's fused ops (plain tract),
    /// so that the bundle/bare ratio measures them.
    #[arg(long)]
    bare_unfused: bool,
    /// Also time the bundle's graphs as plain tract plans (without edgeseg's
    /// own tract ops), interleaved run by run with the bundle's plans: the
    /// encoder ratio measures those ops
    #[arg(long, conflicts_with = "bare_onnx")]
    unfused_baseline: bool,
    /// With --profile: also profile the plans without edgeseg's fused ops.
    #[arg(long)]
    profile_unfused: bool,
    /// Also profile the bundle's encoder and decoder plans node by node
    /// (after the latency runs, same run counts); printed, and in the JSON.
    #[arg(long)]
    profile: bool,
    /// Also time the few-shot prototype head + auto-prompter with this
    /// prototype set on the frame's embedding (per-frame cost of `run
    /// --support` beyond the encoder and decoder).
    #[arg(long)]
    support: Option<PathBuf>,
    /// With --support: timed runs of the head (after a tenth as many warm-up runs).
    #[arg(long, default_value_t = 200)]
    fewshot_runs: usize,
    /// With --profile: how many op types and nodes to print.
    #[arg(long, default_value_t = 15)]
    profile_top: usize,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn parse_box(s: &str) -> Result<BoxPrompt, String> {
    let v: Vec<f32> = s
        .split(',')
        .map(|t| t.trim().parse::<f32>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("box `{s}`: {e}"))?;
    let [x0, y0, x1, y1] = v[..] else {
        return Err(format!("box `{s}` needs 4 numbers x0,y0,x1,y1"));
    };
    if !v.iter().all(|x| x.is_finite()) || x1 < x0 || y1 < y0 {
        return Err(format!(
            "box `{s}` must be finite with x0 <= x1 and y0 <= y1"
        ));
    }
    Ok(BoxPrompt { x0, y0, x1, y1 })
}

fn parse_point(s: &str) -> Result<PointPrompt, String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let (x, y, label) = match parts[..] {
        [x, y] => (x, y, PointLabel::Foreground),
        [x, y, "fg"] => (x, y, PointLabel::Foreground),
        [x, y, "bg"] => (x, y, PointLabel::Background),
        _ => return Err(format!("point `{s}` must be x,y or x,y,fg or x,y,bg")),
    };
    let p = |t: &str| {
        t.parse::<f32>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("point `{s}`: `{t}` is not a finite number"))
    };
    Ok(PointPrompt {
        x: p(x)?,
        y: p(y)?,
        label,
    })
}

fn read_pubkey(p: &Path) -> Result<ed25519_dalek::VerifyingKey> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    let t = text.trim();
    if t.len() != 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!(
            "{}: expected 64 hex digits (an Ed25519 public key)",
            p.display()
        );
    }
    let mut raw = [0u8; 32];
    for (i, b) in raw.iter_mut().enumerate() {
        *b = u8::from_str_radix(&t[2 * i..2 * i + 2], 16)?;
    }
    ed25519_dalek::VerifyingKey::from_bytes(&raw)
        .with_context(|| format!("{}: not a valid Ed25519 public key", p.display()))
}

/// Reads an image as RGB8 (width, height, pixels).
fn read_rgb(p: &Path) -> Result<(usize, usize, Vec<u8>)> {
    let img = image::open(p).with_context(|| format!("reading {}", p.display()))?;
    let rgb = img.to_rgb8();
    Ok((rgb.width() as usize, rgb.height() as usize, rgb.into_raw()))
}

fn segment(a: SegmentArgs) -> Result<()> {
    if a.bbox.is_none() && a.points.is_empty() {
        bail!("give a prompt: --box x0,y0,x1,y1 and/or --point x,y[,fg|bg]");
    }
    let (w, h, rgb) = read_rgb(&a.image)?;
    let t = Instant::now();
    let mut seg = backend::open_bundle(&a.bundle.bundle, &a.bundle.options()?)
        .with_context(|| format!("opening {}", a.bundle.bundle.display()))?;
    let open_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    seg.set_frame(RgbFrame::new(w, h, &rgb)?)?;
    let enc_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let prompt = Prompt {
        boxes: a.bbox,
        points: a.points.clone(),
    };
    let out = seg.segment(&prompt)?;
    let dec_ms = t.elapsed().as_secs_f64() * 1e3;
    let path = a.out.unwrap_or_else(|| {
        let stem = a
            .image
            .file_stem()
            .map_or_else(|| "image".into(), |s| s.to_string_lossy().to_string());
        PathBuf::from(format!("{stem}.mask.png"))
    });
    let px: Vec<u8> = out
        .mask
        .iter()
        .map(|&v| if v != 0 { 255 } else { 0 })
        .collect();
    image::GrayImage::from_raw(w as u32, h as u32, px)
        .context("mask buffer size")?
        .save(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    println!(
        "{}: {} px foreground of {}x{}, predicted IoU {:.4}",
        path.display(),
        out.area(),
        w,
        h,
        out.iou_prediction.unwrap_or(f32::NAN)
    );
    println!(
        "{}: open {open_ms:.0} ms, encode {enc_ms:.0} ms, decode {dec_ms:.1} ms",
        seg.name()
    );
    Ok(())
}

fn bench_cmd(a: BenchArgs) -> Result<()> {
    if a.bundle.device == Device::Gpu {
        bail!(
            "edgeseg bench times the tract CPU backend only (--device cpu or auto); \
             GPU timing is not implemented yet (kernels/bench/gpu-check.sh, issue 8 part 5)"
        );
    }
    let frame = match &a.image {
        Some(p) => {
            let (w, h, rgb) = read_rgb(p)?;
            Some((rgb, w, h))
        }
        None => None,
    };
    let cfg = BenchConfig {
        bundle: a.bundle.bundle.clone(),
        options: a.bundle.options()?,
        warmup: a.warmup,
        runs: a.runs,
        frame,
        prompt_box: a.bbox,
        bare_onnx: a.bare_onnx.clone(),
        bare_fused: !a.bare_unfused,
        unfused_baseline: a.unfused_baseline,
        profile: a.profile,
        profile_unfused: a.profile_unfused,
        support: match &a.support {
            Some(p) => Some(
                edgeseg_runtime::fewshot::PrototypeSet::open(p, &Default::default())
                    .with_context(|| format!("--support {}", p.display()))?
                    .0,
            ),
            None => None,
        },
        fewshot_runs: (a.fewshot_runs.div_ceil(10), a.fewshot_runs),
    };
    let r = bench::run(&cfg)?;
    println!(
        "{} on tract, {} thread(s), frame {}x{}",
        r.model, r.threads, r.frame.0, r.frame.1
    );
    println!(
        "edgeseg tract ops: encoder {}; decoder {}",
        r.fused_ops[0], r.fused_ops[1]
    );
    println!("cold start: {:.0} ms", r.cold_start_ms);
    for (k, v) in &r.cold_start_parts {
        println!("  {k:<28} {v:>8.1} ms");
    }
    let row = |name: &str, s: &bench::Stats| {
        println!(
            "{name:<22} median {:>8.2} ms  p90 {:>8.2}  p99 {:>8.2}  min {:>8.2}  max {:>8.2}  (n={})",
            s.median_ms, s.p90_ms, s.p99_ms, s.min_ms, s.max_ms, s.runs
        );
    };
    row("encoder", &r.encoder);
    row("decoder (+post)", &r.decoder);
    let baseline = r.baseline.as_deref().unwrap_or("bare tract");
    if let Some(s) = &r.bare_encoder {
        row(&format!("{baseline} encoder"), s);
        println!(
            "  bundle/{baseline} encoder median ratio {:.3}",
            r.encoder.median_ms / s.median_ms
        );
    }
    if let Some(s) = &r.bare_decoder {
        row(&format!("{baseline} decoder"), s);
        println!("  ({baseline} decoder: the graph alone, without post-processing)");
    }
    if let Some(s) = &r.fewshot_head {
        row("few-shot head+prompt", s);
        println!(
            "  {} prototypes; thread CPU {} ms per run",
            r.fewshot_prototypes.unwrap_or(0),
            r.fewshot_head_cpu_ms
                .map_or("-".to_string(), |v| format!("{v:.3}"))
        );
    }
    if let Some(b) = r.peak_rss_bytes {
        println!("peak RSS: {:.1} MiB", b as f64 / (1024.0 * 1024.0));
    }
    for p in &r.profile {
        print!("{}", p.summary(a.profile_top, a.profile_top));
    }
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&r)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(a) => edgeseg_runtime::stream::cli::run(a),
        Command::Demo(a) => edgeseg_runtime::stream::cli::demo(a),
        Command::BenchStream(a) => edgeseg_runtime::stream::cli::bench_stream(a),
        Command::Info => {
            println!("edgeseg {}", env!("CARGO_PKG_VERSION"));
            if cfg!(feature = "_gpu") {
                println!(
                    "backends: tract-cpu (multithreaded); CUDA kernel plan (feature cuda / cuda-13000)"
                );
                match backend::gpu_probe(&BackendOptions::default()) {
                    Ok(()) => println!("GPU: CUDA driver and NVRTC found"),
                    Err(e) => println!("GPU: not usable here ({e})"),
                }
            } else {
                println!("backends: tract-cpu (multithreaded); CUDA backend not in this build (feature cuda)");
            }
            Ok(())
        }
        Command::Segment(a) => segment(a),
        Command::Bench(a) => bench_cmd(a),
    }
}
