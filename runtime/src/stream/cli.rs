//! The streaming commands of the `edgeseg` binary: `run`, `demo` and
//! `bench-stream`. `main.rs` only declares the subcommands and calls
//! [`run`], [`demo`] and [`bench_stream`].

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use edgeseg_kernels::pixfmt::RawFormat;

use super::fewshot::{FewShotSpec, TeachOutcome, TeachSpec};
use super::mock::{MockConfig, MockSegmenter};
use super::pipeline::{percentile, run_stream, BackendChoice, RunSummary, StreamConfig};
use super::prompting::PromptSpec;
use super::sink::{JsonLog, MaskPngs, PngFrames, Sink, Y4mVideo};
use super::source::{open_source, Source, SyntheticSource};
use crate::backend::{open_bundle, BackendOptions, Device, PromptableSegmenter};
use crate::bundle::{Bundle, VerifyPolicy};
use crate::fewshot::{AutoPromptConfig, HeadConfig, PrototypeSet};
use crate::prompt::BoxPrompt;

/// Where the AI comes from.
#[derive(clap::Args, Debug, Clone)]
pub struct AiArgs {
    /// Model bundle to run (the backend chain is whatever `open_bundle` picks,
    /// then AI off).
    #[arg(long, conflicts_with_all = ["mock", "ai_off"])]
    pub bundle: Option<PathBuf>,
    /// Use the mock backend instead of a model, e.g. `delay=30,busy` or
    /// `delay=5,panic-every=7,hang-at=50` (see `stream::mock::MockConfig`).
    #[arg(long, conflicts_with = "ai_off")]
    pub mock: Option<String>,
    /// No AI: pass-through video with the "AI off" indicator.
    #[arg(long)]
    pub ai_off: bool,
    /// CPU threads for the model [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Where the model runs: `auto` (the GPU if usable, else the CPU, with one
    /// log line saying why), `cpu` (tract), or `gpu` (an error without a usable GPU).
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub device: Device,
}

/// Pipeline timing options.
#[derive(clap::Args, Debug, Clone)]
pub struct TimingArgs {
    /// Oldest annotation that may be drawn (capture → composition), ms.
    #[arg(long, default_value_t = 120)]
    pub deadline_ms: u64,
    /// A worker busy longer than this on one frame is declared hung, ms.
    #[arg(long, default_value_t = 500)]
    pub watchdog_ms: u64,
    /// Threads that convert each frame to RGB on the video path (rows split
    /// between them). 1 is fastest on the 2-vCPU machine of
    /// docs/perf/streaming.md; more may pay on a device with idle cores.
    #[arg(long, default_value_t = 1)]
    pub convert_threads: usize,
}

/// `edgeseg run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    ai: AiArgs,
    /// Input: a folder of images, a manifest `.csv[#GROUP]`, a `.y4m` file,
    /// `raw:WxH:FORMAT[:PATH]` (stdin without PATH), `synthetic:WxH[:N[:FMT]]`
    /// or `v4l2:/dev/videoN[:WxH[:FORMAT]]`.
    #[arg(long)]
    input: String,
    /// `box:x0,y0,x1,y1`, `points:x,y[,fg|bg];…`, `track:x0,y0,x1,y1` or
    /// `file:prompts.jsonl`.
    #[arg(
        long,
        required_unless_present_any = ["support", "teach_from"],
        conflicts_with_all = ["support", "teach_from"]
    )]
    prompt: Option<String>,
    /// Segment every frame with no prompt from this few-shot prototype set
    /// (`edgeseg-tools teach` or `--save-support`): encoder, prototype head,
    /// auto-prompt, mask decoder. Refused before streaming when it was taught
    /// with another model.
    #[arg(long, conflicts_with = "teach_from")]
    support: Option<PathBuf>,
    /// Teach from the stream: on this frame id the `--box` mask becomes the
    /// (1-shot) support, and later frames are segmented from its prototypes.
    /// Earlier frames pass through un-annotated. The structure's name is `--label`.
    #[arg(long, requires = "teach_box")]
    teach_from: Option<u64>,
    /// The box on the `--teach-from` frame: `x0,y0,x1,y1` in frame pixels.
    #[arg(long = "box", id = "teach_box", requires = "teach_from")]
    teach_box: Option<String>,
    /// Write the set taught with `--teach-from` here (reusable with `--support`).
    #[arg(long, requires = "teach_from")]
    save_support: Option<PathBuf>,
    /// Prototype mode: a grid cell is confident for a structure when its
    /// probability is at least this.
    #[arg(long, default_value_t = 0.5)]
    confidence: f32,
    /// Prototype mode: smallest confident component (embedding grid cells) that
    /// counts as a found structure.
    #[arg(long, default_value_t = 2)]
    min_cells: usize,
    /// Output folder: overlay.y4m, log.jsonl, masks/, frames/ (with --png-frames).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    timing: TimingArgs,
    /// Pace file inputs at this rate like a live feed (0: as fast as possible)
    /// [default: the file's rate, 25 for image folders].
    #[arg(long)]
    fps: Option<f64>,
    /// Also write every composed frame as PNG.
    #[arg(long)]
    png_frames: bool,
    /// Label drawn next to the mask (with `--teach-from`: the taught
    /// structure's name; with `--support` the set's own names are drawn).
    #[arg(long, default_value = "ROI")]
    label: String,
}

/// `edgeseg demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Model bundle [default: $EDGESEG_BUNDLE, else models/zoo/edge-s.bundle, else the first bundle there].
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// Output folder.
    #[arg(long, default_value = "demo-out")]
    out: PathBuf,
    /// Frames per second of the replay.
    #[arg(long, default_value_t = 25.0)]
    fps: f64,
    /// Oldest annotation that may be drawn (capture → composition), ms.
    #[arg(long, default_value_t = 120)]
    deadline_ms: u64,
    /// Where the model runs: auto, cpu or gpu (see `edgeseg run --help`).
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    device: Device,
    /// Watchdog, ms. Longer than `run`'s default because a teacher-sized model
    /// takes seconds per frame on a CPU; a student fits the 500 ms default.
    #[arg(long, default_value_t = 10_000)]
    watchdog_ms: u64,
}

/// `edgeseg bench-stream`.
#[derive(clap::Args, Debug)]
pub struct BenchStreamArgs {
    #[command(flatten)]
    ai: AiArgs,
    /// Frames to stream.
    #[arg(long, default_value_t = 10_000)]
    frames: u64,
    /// Frame size.
    #[arg(long, default_value = "1920x1080")]
    size: String,
    /// Capture pixel format of the synthetic source (rgb24, grey, yuyv).
    #[arg(long, default_value = "yuyv")]
    format: String,
    /// Input frame rate.
    #[arg(long, default_value_t = 60.0)]
    fps: f64,
    #[command(flatten)]
    timing: TimingArgs,
    /// Write the per-frame JSON log here.
    #[arg(long)]
    log: Option<PathBuf>,
    /// Before streaming, time this many bare conversions of one frame, paced at
    /// `--fps`, alone on one thread: the machine's floor for the pass-through
    /// figures (0: skip).
    #[arg(long, default_value_t = 900)]
    floor_frames: usize,
}

const DEFAULT_MOCK_BENCH: &str = "delay=30,busy";

fn chain(ai: &AiArgs) -> Result<Vec<BackendChoice>> {
    if ai.ai_off {
        return Ok(Vec::new());
    }
    if let Some(spec) = &ai.mock {
        let config = MockConfig::parse(spec).map_err(anyhow::Error::msg)?;
        let counter = Arc::new(AtomicU64::new(0));
        return Ok(vec![BackendChoice {
            name: "mock".into(),
            open: Box::new(move || {
                Ok(
                    Box::new(MockSegmenter::new(config.clone(), Arc::clone(&counter)))
                        as Box<dyn PromptableSegmenter>,
                )
            }),
        }]);
    }
    let Some(bundle) = ai.bundle.clone() else {
        bail!("give --bundle B, --mock SPEC or --ai-off");
    };
    let mut options = BackendOptions {
        device: ai.device,
        ..BackendOptions::default()
    };
    if let Some(t) = ai.threads {
        options.threads = t.max(1);
    }
    Ok(vec![bundle_choice(bundle, options)])
}

fn bundle_choice(bundle: PathBuf, options: BackendOptions) -> BackendChoice {
    BackendChoice {
        name: format!(
            "bundle {}",
            bundle.file_name().unwrap_or_default().to_string_lossy()
        ),
        open: Box::new(move || open_bundle(&bundle, &options)),
    }
}

fn stream_config(timing: &TimingArgs, pace: Option<f64>, label: &str) -> StreamConfig {
    StreamConfig {
        deadline: Duration::from_millis(timing.deadline_ms),
        watchdog: Duration::from_millis(timing.watchdog_ms.max(1)),
        pace_fps: pace.filter(|f| *f > 0.0),
        label: label.to_string(),
        log_events: true,
        convert_threads: timing.convert_threads.max(1),
        ..StreamConfig::default()
    }
}

fn file_sinks(out: &Path, fps: f64, png_frames: bool) -> Result<Vec<Box<dyn Sink>>> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let (num, den) = fps_ratio(fps);
    let mut sinks: Vec<Box<dyn Sink>> = vec![
        Box::new(Y4mVideo::new(&out.join("overlay.y4m"), num, den)?),
        Box::new(MaskPngs::new(&out.join("masks"))?),
        Box::new(JsonLog::new(&out.join("log.jsonl"))?),
    ];
    if png_frames {
        sinks.push(Box::new(PngFrames::new(&out.join("frames"))?));
    }
    Ok(sinks)
}

fn fps_ratio(fps: f64) -> (u32, u32) {
    if fps.is_finite() && fps > 0.0 && fps < 1000.0 {
        ((fps * 1000.0).round() as u32, 1000)
    } else {
        (25, 1)
    }
}

fn ms(us: Option<u64>) -> String {
    us.map_or("-".into(), |v| format!("{:.3}", v as f64 / 1e3))
}

/// Prints the totals and latency percentiles of a run.
pub fn print_summary(s: &RunSummary) {
    let p = |v: &[u64], q| ms(percentile(v, q));
    println!(
        "frames: in {} out {} errors {} (repeated/out of order: {})",
        s.frames_in, s.frames_out, s.frame_errors, s.out_of_order
    );
    println!(
        "overlay: drawn {} late {} unavailable {} off {} (withdrawn at emit: {})",
        s.drawn, s.late, s.unavailable, s.off, s.withdrawn
    );
    if s.not_found > 0 {
        println!("overlay: no structure found on {} frames", s.not_found);
    }
    println!(
        "pass-through ingest->emit ms: p50 {} p99 {} p99.9 {} max {}",
        p(&s.passthrough_us, 50.0),
        p(&s.passthrough_us, 99.0),
        p(&s.passthrough_us, 99.9),
        ms(s.passthrough_us.iter().max().copied())
    );
    println!(
        "annotation latency capture->shown ms ({} annotations): p50 {} p99 {} max {}; max age drawn {}",
        s.annotation_latency_us.len(),
        p(&s.annotation_latency_us, 50.0),
        p(&s.annotation_latency_us, 99.0),
        ms(s.annotation_latency_us.iter().max().copied()),
        ms(Some(s.max_drawn_age_us))
    );
    println!(
        "AI: results {} errors {} panics {} hangs {} fallbacks {} frames skipped by the AI mailbox {}",
        s.ai_results, s.ai_errors, s.panics, s.hangs, s.fallbacks, s.ai_dropped
    );
    if s.sink_errors > 0 {
        println!("sink errors: {}", s.sink_errors);
    }
}

/// Loads `--support` and refuses it, before any frame is streamed, when it was
/// taught with another model than the one `ai` runs.
fn load_support(path: &Path, ai: &AiArgs) -> Result<PrototypeSet> {
    let (set, _) = PrototypeSet::open(path, &VerifyPolicy::default())
        .with_context(|| format!("--support {}", path.display()))?;
    let refused = || {
        format!(
            "--support {}: this prototype set was taught with another model; teach it again with this one",
            path.display()
        )
    };
    if let Some(b) = &ai.bundle {
        let bundle = Bundle::open(b, &VerifyPolicy::default())
            .with_context(|| format!("--bundle {}", b.display()))?;
        set.embedding
            .check_bundle_file(&bundle)
            .with_context(refused)?;
    } else if ai.mock.is_some() {
        set.embedding
            .check_model(&MockSegmenter::mock_embedding_id())
            .with_context(refused)?;
    }
    Ok(set)
}

fn parse_teach_box(s: &str) -> Result<BoxPrompt> {
    match PromptSpec::parse(&format!("box:{s}")) {
        Ok(PromptSpec::Fixed(p)) => p.boxes.context("--box: no box"),
        _ => bail!("--box {s}: expected x0,y0,x1,y1 (frame pixels) with x0<=x1, y0<=y1, all >= 0"),
    }
}

/// The prototype-mode settings of `run`, `None` when prompts are used.
fn fewshot_spec(args: &RunArgs) -> Result<Option<FewShotSpec>> {
    let prompt = AutoPromptConfig {
        threshold: args.confidence,
        min_cells: args.min_cells,
        ..AutoPromptConfig::default()
    };
    if !(0.0..=1.0).contains(&prompt.threshold) {
        bail!("--confidence {}: must be in [0, 1]", prompt.threshold);
    }
    if let Some(path) = &args.support {
        let set = load_support(path, &args.ai)?;
        let names = set.names.join(", ");
        println!(
            "support: {} ({} prototypes of {}, {} shot(s), structure(s): {names})",
            path.display(),
            set.prototypes.len(),
            set.embedding,
            set.shots
        );
        return Ok(Some(FewShotSpec {
            support: Some(Arc::new(set)),
            teach: None,
            prompt,
        }));
    }
    if let Some(frame) = args.teach_from {
        let bbox = parse_teach_box(args.teach_box.as_deref().unwrap_or_default())?;
        return Ok(Some(FewShotSpec {
            support: None,
            teach: Some(TeachSpec {
                frame,
                bbox,
                name: args.label.clone(),
                save: args.save_support.clone(),
                head: HeadConfig::default(),
            }),
            prompt,
        }));
    }
    Ok(None)
}

/// Reports what became of `--teach-from`; an error when nothing was learned or
/// the set could not be saved (all outputs are written by then).
fn report_teach(args: &RunArgs, outcome: Option<&TeachOutcome>) -> Result<()> {
    let (Some(frame), Some(outcome)) = (args.teach_from, outcome) else {
        return Ok(());
    };
    match outcome {
        TeachOutcome::NotSeen => bail!(
            "--teach-from {frame}: that frame never reached the AI (no frame of the stream has this id, the AI was off, or the stream ended before the model was ready); nothing was learned, every frame passed through un-annotated"
        ),
        TeachOutcome::EmptyMask => bail!(
            "--teach-from {frame}: the --box mask on that frame is empty, so there was nothing to learn; the stream passed through un-annotated. Draw the box around the structure."
        ),
        TeachOutcome::Failed(e) => bail!(
            "--teach-from {frame}: teaching failed ({e}); the stream passed through un-annotated"
        ),
        TeachOutcome::Taught {
            prototypes,
            mask_area,
            saved,
        } => {
            println!(
                "taught `{}` on frame {frame} from a {mask_area}-pixel mask ({prototypes} prototypes)",
                args.label
            );
            match saved {
                Some(Ok(p)) => println!("saved the prototype set to {}", p.display()),
                Some(Err(e)) => bail!("--save-support: could not write the prototype set: {e}"),
                None => {}
            }
            Ok(())
        }
    }
}

/// `edgeseg run`: streams an input through the pipeline into `--out`.
pub fn run(args: RunArgs) -> Result<()> {
    let fewshot = fewshot_spec(&args)?;
    let prompts = match (&args.prompt, &fewshot) {
        (Some(p), _) => PromptSpec::parse(p)?,
        (None, Some(_)) => PromptSpec::None,
        (None, None) => bail!("give --prompt, --support or --teach-from"),
    };
    let source = open_source(&args.input, args.fps.unwrap_or(25.0))?;
    let pace = match args.fps {
        Some(f) => Some(f),
        None => source.fps(),
    };
    let chain = chain(&args.ai)?;
    let sinks = file_sinks(&args.out, pace.unwrap_or(25.0), args.png_frames)?;
    let mut config = stream_config(&args.timing, pace, &args.label);
    config.fewshot = fewshot;
    let summary = run_stream(source, chain, prompts, sinks, config)?;
    print_summary(&summary);
    println!(
        "wrote {}/{{overlay.y4m,log.jsonl,masks/}}",
        args.out.display()
    );
    if summary.sink_errors > 0 {
        bail!("{} frames could not be written", summary.sink_errors);
    }
    report_teach(&args, summary.teach.as_ref())
}

/// The repository root (the binary's source tree), for the committed fixtures.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The product's default model, in `models/zoo/`.
const DEFAULT_MODEL: &str = "edge-s.bundle";

/// Finds the default model: `$EDGESEG_BUNDLE`, else `models/zoo/edge-s.bundle`, else
/// the first `*.bundle` in `models/zoo/`.
fn default_bundle() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("EDGESEG_BUNDLE") {
        return Some(PathBuf::from(p));
    }
    let zoo = repo_root().join("models/zoo");
    if zoo.join(DEFAULT_MODEL).is_file() {
        return Some(zoo.join(DEFAULT_MODEL));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(zoo)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "bundle"))
        .collect();
    found.sort();
    found.into_iter().next()
}

/// The demo's track box: the ground-truth polyp of the first frame, as a
/// clinician's box would be drawn, with a 10% margin.
fn demo_box(mask: &Path) -> Result<String> {
    let img = image::open(mask)
        .with_context(|| format!("reading {}", mask.display()))?
        .into_luma8();
    let (w, h) = img.dimensions();
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
    for (x, y, p) in img.enumerate_pixels() {
        if p.0[0] > 127 {
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
        }
    }
    if x0 > x1 {
        bail!("{}: empty mask", mask.display());
    }
    let (mx, my) = ((x1 - x0 + 1) / 10, (y1 - y0 + 1) / 10);
    Ok(format!(
        "track:{},{},{},{}",
        x0.saturating_sub(mx),
        y0.saturating_sub(my),
        (x1 + mx).min(w - 1),
        (y1 + my).min(h - 1)
    ))
}

/// `edgeseg demo`: the default model on the committed CVC-ClinicDB sequence.
pub fn demo(args: DemoArgs) -> Result<()> {
    let root = repo_root();
    let input = root.join("fixtures/stream/cvc_seq12");
    let prompt = demo_box(&root.join("fixtures/stream/cvc_seq12_mask228.png"))?;
    println!(
        "edgeseg demo: {} (25 colonoscopy frames, CVC-ClinicDB sequence 12; see fixtures/ATTRIBUTION.md)",
        input.display()
    );
    println!("prompt: {prompt} (ground-truth box of the first frame + 10%), then track mode");
    let bundle = args.bundle.clone().or_else(default_bundle);
    let chain = match bundle {
        Some(b) => {
            let options = BackendOptions {
                device: args.device,
                ..BackendOptions::default()
            };
            match open_bundle(&b, &options) {
                Ok(backend) => {
                    println!("model: {} on {}", b.display(), backend.name());
                    // the stream reopens it: on the device just chosen, so an
                    // `auto` fallback is logged once
                    let device = if backend.name().starts_with("tract") {
                        Device::Cpu
                    } else {
                        Device::Gpu
                    };
                    drop(backend);
                    vec![bundle_choice(b, BackendOptions { device, ..options })]
                }
                Err(e) => {
                    println!("MODEL NOT AVAILABLE: {e}");
                    println!("running pass-through with the AI off (no masks are drawn)");
                    Vec::new()
                }
            }
        }
        None => {
            println!(
                "MODEL NOT AVAILABLE: no bundle given, $EDGESEG_BUNDLE unset, none in models/zoo/"
            );
            println!("running pass-through with the AI off (no masks are drawn)");
            Vec::new()
        }
    };
    let source = open_source(&input.to_string_lossy(), args.fps)?;
    let sinks = file_sinks(&args.out, args.fps, false)?;
    let timing = TimingArgs {
        deadline_ms: args.deadline_ms,
        watchdog_ms: args.watchdog_ms,
        convert_threads: 1,
    };
    let config = stream_config(&timing, Some(args.fps), "polyp");
    let summary = run_stream(source, chain, PromptSpec::parse(&prompt)?, sinks, config)?;
    print_summary(&summary);
    println!(
        "wrote {}/overlay.y4m (play with `ffplay` or `mpv`), log.jsonl, masks/",
        args.out.display()
    );
    Ok(())
}

/// `edgeseg bench-stream`: pass-through and annotation latency on synthetic
/// frames with the AI running.
pub fn bench_stream(args: BenchStreamArgs) -> Result<()> {
    let (w, h) = super::source::parse_size(&args.size)
        .with_context(|| format!("--size {}: expected WxH", args.size))?;
    let format = match super::frame::PixelFormat::parse(&args.format) {
        Some(super::frame::PixelFormat::Raw(f))
            if matches!(f, RawFormat::Rgb24 | RawFormat::Grey | RawFormat::Yuyv) =>
        {
            f
        }
        _ => bail!("--format: rgb24, grey or yuyv"),
    };
    let source: Box<dyn Source> =
        Box::new(SyntheticSource::new(w, h, format, args.frames, args.fps)?);
    let mut ai = args.ai.clone();
    if !ai.ai_off && ai.bundle.is_none() && ai.mock.is_none() {
        ai.mock = Some(DEFAULT_MOCK_BENCH.into());
    }
    let what = if ai.ai_off {
        "AI off".to_string()
    } else if let Some(m) = &ai.mock {
        format!("mock backend `{m}`")
    } else {
        format!(
            "bundle {}",
            ai.bundle.as_deref().unwrap_or(Path::new("?")).display()
        )
    };
    println!(
        "bench-stream: {} frames {w}x{h} {} at {} fps, AI: {what}, deadline {} ms, watchdog {} ms, conversion on {} thread(s)",
        args.frames,
        format.name(),
        args.fps,
        args.timing.deadline_ms,
        args.timing.watchdog_ms,
        args.timing.convert_threads.max(1)
    );
    let (cx, cy) = (w / 2, h / 2);
    let prompt = PromptSpec::parse(&format!(
        "track:{},{},{},{}",
        cx.saturating_sub(w / 3),
        cy.saturating_sub(h / 3),
        cx + w / 3,
        cy + h / 3
    ))?;
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if let Some(log) = &args.log {
        sinks.push(Box::new(JsonLog::new(log)?));
    }
    let mut config = stream_config(&args.timing, Some(args.fps), "ROI");
    config.log_events = false;
    let floor = if args.floor_frames > 0 {
        let mut probe = SyntheticSource::new(w, h, format, 1, args.fps)?;
        let frame = probe
            .next_frame()
            .context("the synthetic source gave no frame")??;
        Some(
            super::frame::conversion_floor(&frame, args.fps, args.floor_frames)
                .context("timing the conversion floor")?,
        )
    } else {
        None
    };
    let t0 = std::time::Instant::now();
    let summary = run_stream(source, chain(&ai)?, prompt, sinks, config)?;
    println!("wall time {:.1} s", t0.elapsed().as_secs_f64());
    if let Some(f) = &floor {
        let p = |q| ms(percentile(f, q));
        println!(
            "machine floor, the conversion alone ({} periods at {} fps, before the stream) ms: p50 {} p99 {} p99.9 {} max {}; over 5 ms: {}",
            f.len(),
            args.fps,
            p(50.0),
            p(99.0),
            p(99.9),
            ms(f.iter().max().copied()),
            f.iter().filter(|&&us| us > 5_000).count()
        );
    }
    print_summary(&summary);
    for e in summary.events.iter().take(20) {
        println!("event: {e}");
    }
    let lost = summary.frames_in - summary.frames_out - summary.frame_errors;
    println!(
        "frames lost: {lost}, repeated or out of order: {}; oldest drawn overlay {} ms (deadline {} ms)",
        summary.out_of_order,
        ms(Some(summary.max_drawn_age_us)),
        args.timing.deadline_ms
    );
    Ok(())
}
