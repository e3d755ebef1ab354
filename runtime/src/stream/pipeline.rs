//! The streaming pipeline: ingest, the AI worker behind a latest-frame
//! mailbox, the supervisor (watchdog, restarts, fallback chain), the
//! compositor and the sink thread.
//!
//! ```text
//! source ─► ingest + compositor (one thread) ──outputs──► sink thread
//!               │ put (Arc of the unconverted frame, ▲ reads the newest annotation
//!               │      never blocks)                 │
//!               ▼                                    │
//!        latest-frame mailbox ─► AI worker ──────────┘  ◄── supervisor: watchdog,
//!                                                          restart, fallback → AI off
//! ```
//!
//! The compositor runs inline on the ingest thread: the video path has no
//! thread hand-over between capture and emit, only one conversion (into the
//! compositor's own buffer, drawn on in place) and the overlay. The AI worker
//! converts its own copy of the frames it takes. The AI worker and the supervisor run at a lower scheduling
//! priority ([`StreamConfig::ai_nice`]) so that a busy model cannot take the
//! CPU from the video path.
//!
//! Guarantees (each is checked by `runtime/tests/stream_faults.rs`):
//!
//! - every frame the source delivers is either emitted exactly once, in order,
//!   or logged with a per-frame error; nothing waits for the AI;
//! - an overlay is drawn only when its source frame was captured no longer
//!   than the deadline before composition (minus a small drawing margin) and
//!   has the frame's size; otherwise "AI late" is shown;
//! - a result from a panicking, failing or abandoned worker is never drawn,
//!   and a mask is drawn only after validation (size, length, finite IoU);
//! - a worker busy for longer than the watchdog period is abandoned, "AI
//!   unavailable" is shown, and a fresh worker with a freshly opened backend
//!   takes over; repeated failures move down the backend chain to "AI off".

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use super::fewshot::{
    segment_with_prototypes, stream_provenance, teach_from_box, FewShotSpec, FewShotState,
    StructureState, TeachOutcome,
};
use super::frame::{
    to_rgb_filled, to_rgb_split, BufferPool, Frame, FrameError, PixelFormat, RgbImage,
};
use super::mailbox::{Mailbox, Take};
use super::overlay::{self, Canvas, Indicator, MaskShape, OverlayStyle, RowFill};
use super::prompting::{PromptSpec, Prompter, TrackEvent, TrackParams};
use super::record::{FrameRecord, OverlayState};
use super::sink::Sink;
use super::source::Source;
use crate::backend::{BackendError, PromptableSegmenter};
use crate::prompt::BoxPrompt;
use crate::Segmentation;

/// Opens a fresh backend instance (called again after every restart).
pub type BackendOpener =
    Box<dyn Fn() -> Result<Box<dyn PromptableSegmenter>, BackendError> + Send + Sync>;

/// One step of the fallback chain (e.g. GPU, then CPU). After the last one
/// fails the pipeline runs with the AI off.
pub struct BackendChoice {
    /// Name for logs.
    pub name: String,
    /// Opens an instance.
    pub open: BackendOpener,
}

impl std::fmt::Debug for BackendChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendChoice")
            .field("name", &self.name)
            .finish()
    }
}

/// Pipeline settings.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// Oldest annotation (capture → composition) that may be drawn.
    pub deadline: Duration,
    /// A worker busy on one frame for longer than this is declared hung.
    pub watchdog: Duration,
    /// Consecutive failures (errors, invalid outputs, panics, hangs) of one
    /// backend before falling back to the next.
    pub max_failures: u32,
    /// Pace non-live sources at this rate (frames per second); `None` reads
    /// them as fast as possible. Live sources are never paced.
    pub pace_fps: Option<f64>,
    /// Label drawn next to the mask.
    pub label: String,
    /// Overlay colours.
    pub style: OverlayStyle,
    /// Track-mode tuning.
    pub track: TrackParams,
    /// Attach the per-pixel "touched by the overlay" map and the input frame
    /// to every output (for tests that check untouched pixels).
    pub record_touched: bool,
    /// Print pipeline events (watchdog, fallback ...) to stderr as they happen.
    pub log_events: bool,
    /// Capacity of the ingest → compositor and compositor → sink queues.
    pub queue: usize,
    /// After the watchdog abandons a hung worker, "AI unavailable" stays up at
    /// least this long (so that it is seen, not flashed for one frame).
    pub unavailable_hold: Duration,
    /// How much lower than the video path the AI worker thread is scheduled
    /// (Linux nice increment, 0..=19; 0 leaves it alone). The ingest,
    /// compositor and sink threads keep the process's priority, so a busy
    /// model can never slow the pass-through video on a small CPU.
    pub ai_nice: i32,
    /// Segment from few-shot prototypes instead of prompts (`--support`,
    /// `--teach-from`); the prompt spec should then be [`PromptSpec::None`].
    pub fewshot: Option<FewShotSpec>,
    /// Threads converting each frame on the video path (the ingest thread and
    /// scoped helpers, rows split between them; 1: the ingest thread alone).
    /// The helpers run at the video path's priority, so they take CPU from a
    /// busy AI worker rather than wait for it.
    pub convert_threads: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            deadline: Duration::from_millis(120),
            watchdog: Duration::from_millis(500),
            max_failures: 3,
            pace_fps: None,
            label: "ROI".into(),
            style: OverlayStyle::default(),
            track: TrackParams::default(),
            record_touched: false,
            log_events: false,
            queue: 8,
            unavailable_hold: Duration::from_millis(300),
            ai_nice: 10,
            fewshot: None,
            convert_threads: 1,
        }
    }
}

/// The composition margin: an annotation is drawn only if it will still be
/// within the deadline after this much drawing time.
pub const DRAW_MARGIN: Duration = Duration::from_millis(3);

/// One AI result, validated and ready to draw.
#[derive(Debug)]
pub struct Annotation {
    /// Frame the AI ran on.
    pub source_id: u64,
    /// That frame's capture time.
    pub source_capture: Instant,
    /// The validated segmentation.
    pub seg: Arc<Segmentation>,
    /// What the overlay draws of it.
    pub shape: MaskShape,
    /// The prompt box used (if any).
    pub prompt_box: Option<BoxPrompt>,
    /// Time spent in the backend.
    pub infer: Duration,
    /// Backend name.
    pub backend: String,
    /// Tracking outcome.
    pub track: TrackEvent,
    /// In prototype mode: the structure and whether it was found.
    pub structure: Option<StructureState>,
    generation: u64,
}

/// A composed frame, as the sinks receive it.
#[derive(Debug)]
pub struct Output {
    /// Frame id.
    pub id: u64,
    /// The composed image (`None` for a frame that could not be read).
    pub image: Option<RgbImage>,
    /// The log record.
    pub record: FrameRecord,
    /// An annotation the compositor saw for the first time on this frame
    /// (drawn or not), for the mask sink.
    pub new_annotation: Option<Arc<Annotation>>,
    /// With [`StreamConfig::record_touched`]: one flag per pixel written by
    /// the overlay, and the frame as it came in.
    pub touched: Option<(Vec<bool>, Arc<RgbImage>)>,
}

/// Totals of a run.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// Items the source delivered (frames and per-frame errors).
    pub frames_in: u64,
    /// Frames emitted to the sinks.
    pub frames_out: u64,
    /// Per-frame errors (logged, not emitted).
    pub frame_errors: u64,
    /// Emitted frames whose id was not larger than the previous one (must be 0).
    pub out_of_order: u64,
    /// Pass-through latency of each emitted frame, ingest → emit, in µs.
    pub passthrough_us: Vec<u64>,
    /// Capture → overlay first shown, per drawn annotation, in µs.
    pub annotation_latency_us: Vec<u64>,
    /// Largest annotation age on a drawn overlay, at emit, in µs.
    pub max_drawn_age_us: u64,
    /// Overlays withdrawn (replaced by "AI late") because they went past the
    /// deadline while being drawn.
    pub withdrawn: u64,
    /// Frames with an overlay drawn.
    pub drawn: u64,
    /// Frames showing "AI late".
    pub late: u64,
    /// Frames showing "AI unavailable".
    pub unavailable: u64,
    /// Frames showing "AI off".
    pub off: u64,
    /// Frames showing "no structure found" (prototype mode).
    pub not_found: u64,
    /// Valid AI results.
    pub ai_results: u64,
    /// AI errors and rejected outputs.
    pub ai_errors: u64,
    /// Worker panics caught.
    pub panics: u64,
    /// Hangs detected by the watchdog.
    pub hangs: u64,
    /// Backend fallbacks (down the chain).
    pub fallbacks: u64,
    /// Frames the AI mailbox dropped (the AI skipped them; video did not).
    pub ai_dropped: u64,
    /// Sink write errors.
    pub sink_errors: u64,
    /// Every pipeline event, in order.
    pub events: Vec<String>,
    /// What became of `--teach-from` (prototype mode with teaching only).
    pub teach: Option<TeachOutcome>,
}

/// Errors that stop a run before it starts.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// A thread could not be spawned.
    #[error("cannot spawn the {0} thread: {1}")]
    Spawn(&'static str, std::io::Error),
    /// A thread of the pipeline itself (not the AI) panicked.
    #[error("the {0} thread panicked")]
    Panicked(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AiState {
    Running,
    Unavailable,
    Off,
}

#[derive(Debug, Clone, Copy)]
struct Busy {
    generation: u64,
    since: Instant,
    frame: u64,
}

#[derive(Debug, Default)]
struct Counters {
    results: AtomicU64,
    errors: AtomicU64,
    panics: AtomicU64,
    hangs: AtomicU64,
    fallbacks: AtomicU64,
}

struct Shared {
    start: Instant,
    pool: Arc<BufferPool>,
    mailbox: Mailbox<Arc<Frame>>,
    latest: Mutex<Option<Arc<Annotation>>>,
    state: Mutex<AiState>,
    unavailable_until: Mutex<Option<Instant>>,
    busy: Mutex<Option<Busy>>,
    generation: AtomicU64,
    prompter: Mutex<Prompter>,
    fewshot: Option<Mutex<FewShotState>>,
    events: Mutex<Vec<String>>,
    all_events: Mutex<Vec<String>>,
    stop: AtomicBool,
    counters: Counters,
    log_events: bool,
}

/// Locks a mutex, ignoring poisoning: every critical section of the pipeline
/// is a plain field update that a panic cannot leave half done.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn event(&self, msg: String) {
        let line = format!("[{:>9.3} s] {msg}", self.start.elapsed().as_secs_f64());
        if self.log_events {
            eprintln!("edgeseg stream: {line}");
        }
        lock(&self.all_events).push(line.clone());
        lock(&self.events).push(line);
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

/// Checks a backend's result before anything is drawn from it.
pub fn validate(seg: &Segmentation, width: usize, height: usize) -> Result<(), String> {
    if (seg.width, seg.height) != (width, height) {
        return Err(format!(
            "mask is {}x{}, frame is {width}x{height}",
            seg.width, seg.height
        ));
    }
    if Some(seg.mask.len()) != width.checked_mul(height) {
        return Err(format!(
            "mask has {} values for {width}x{height}",
            seg.mask.len()
        ));
    }
    if let Some(iou) = seg.iou_prediction {
        if !iou.is_finite() {
            return Err(format!("IoU prediction is {iou}"));
        }
    }
    Ok(())
}

#[derive(Debug)]
enum ExitReason {
    Closed,
    Panicked(String),
    Failed(String),
}

#[derive(Debug)]
struct WorkerExit {
    generation: u64,
    reason: ExitReason,
}

/// Lowers the calling thread's scheduling priority by `increment` nice levels
/// (capped at 19). Lowering is always permitted; only Linux is supported.
pub fn lower_thread_priority(increment: i32) -> Result<(), String> {
    if increment <= 0 {
        return Ok(());
    }
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        let now = rustix::process::getpriority_process(Some(tid)).map_err(|e| e.to_string())?;
        rustix::process::setpriority_process(Some(tid), (now + increment).min(19))
            .map_err(|e| e.to_string())
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err("thread priorities are only set on Linux".into())
    }
}

fn worker(
    shared: Arc<Shared>,
    generation: u64,
    name: String,
    mut backend: Box<dyn PromptableSegmenter>,
    max_failures: u32,
    ai_nice: i32,
    exits: Sender<WorkerExit>,
) {
    if let Err(e) = lower_thread_priority(ai_nice) {
        shared.event(format!(
            "{name}: could not lower the AI worker's priority: {e}"
        ));
    }
    let exit = |reason| {
        let _ = exits.send(WorkerExit { generation, reason });
    };
    let mut failures = 0u32;
    // The worker's RGB buffer, reused from frame to frame.
    let mut rgb = Vec::new();
    loop {
        if shared.generation.load(Ordering::SeqCst) != generation {
            return; // abandoned by the watchdog
        }
        let frame = match shared.mailbox.take(Duration::from_millis(50)) {
            Take::Value(f) => f,
            Take::Empty => continue,
            Take::Closed => return exit(ExitReason::Closed),
        };
        // In prototype mode a pending teach frame goes first (ingest hands it
        // over outside the mailbox, which may drop it); the frame just taken
        // from the mailbox is then skipped, newer ones follow.
        let (frame, task) = match &shared.fewshot {
            Some(fs) => {
                let mut st = lock(fs);
                match st.slot.take() {
                    Some(teach_frame) => {
                        st.teaching = true;
                        (teach_frame, Task::Teach)
                    }
                    None => match st.set_for(frame.id) {
                        Some(set) => (frame, Task::Prototypes(set, st.prompt)),
                        None => continue,
                    },
                }
            }
            None => {
                let (w, h) = (frame.width, frame.height);
                match lock(&shared.prompter).prompt_for(frame.id, w, h) {
                    Some(p) => (frame, Task::Prompt(p)),
                    None => continue,
                }
            }
        };
        let (w, h) = (frame.width, frame.height);
        let t0 = Instant::now();
        *lock(&shared.busy) = Some(Busy {
            generation,
            since: t0,
            frame: frame.id,
        });
        let result = catch_unwind(AssertUnwindSafe(|| -> Result<TaskResult, String> {
            let prompted = |backend: &mut dyn PromptableSegmenter, prompt: &crate::Prompt| {
                let seg = backend.segment(prompt).map_err(|e| e.to_string())?;
                Ok(TaskResult {
                    seg,
                    prompt_box: prompt.boxes,
                    structure: None,
                })
            };
            // A prompt needs only the model input: resize while converting,
            // row by row, instead of converting the whole frame first.
            if let Task::Prompt(prompt) = &task {
                if let Some(mut rows) = frame.rgb_rows().map_err(|e| e.to_string())? {
                    backend
                        .set_frame_rows(&mut rows)
                        .map_err(|e| e.to_string())?;
                    return prompted(backend.as_mut(), prompt);
                }
            }
            let image = frame
                .to_rgb(std::mem::take(&mut rgb))
                .map_err(|e| e.to_string())?;
            let f = image.as_frame().map_err(|e| e.to_string())?;
            let result = match &task {
                Task::Prompt(prompt) => {
                    backend.set_frame(f).map_err(|e| e.to_string())?;
                    prompted(backend.as_mut(), prompt)
                }
                Task::Prototypes(set, cfg) => {
                    let r = segment_with_prototypes(backend.as_mut(), set, f, cfg)
                        .map_err(|e| e.to_string())?;
                    Ok(TaskResult {
                        seg: r.seg,
                        prompt_box: r.prompt_box,
                        structure: Some(r.structure),
                    })
                }
                Task::Teach => teach_task(&shared, backend.as_mut(), frame.id, f),
            };
            rgb = image.data;
            result
        }));
        let infer = t0.elapsed();
        {
            let mut b = lock(&shared.busy);
            if b.is_some_and(|b| b.generation == generation) {
                *b = None;
            }
        }
        if shared.generation.load(Ordering::SeqCst) != generation {
            return; // too late: the watchdog replaced this worker
        }
        let outcome = match result {
            Err(p) => {
                shared.counters.panics.fetch_add(1, Ordering::SeqCst);
                if let (Task::Teach, Some(fs)) = (&task, &shared.fewshot) {
                    let mut st = lock(fs);
                    st.teaching = false;
                    st.outcome =
                        TeachOutcome::Failed("the AI worker panicked on the teach frame".into());
                }
                let msg = format!(
                    "{name}: worker panicked on frame {}: {}",
                    frame.id,
                    panic_message(p.as_ref())
                );
                return exit(ExitReason::Panicked(msg));
            }
            // already reported as an event; not a backend failure
            Ok(Err(e)) if e == TEACH_FAILED => continue,
            Ok(Err(e)) => Err(format!("{name}: frame {}: {e}", frame.id)),
            Ok(Ok(r)) => validate(&r.seg, w, h)
                .map(|()| r)
                .map_err(|e| format!("{name}: frame {}: output rejected: {e}", frame.id)),
        };
        match outcome {
            Err(msg) => {
                shared.counters.errors.fetch_add(1, Ordering::SeqCst);
                failures += 1;
                if failures >= max_failures {
                    return exit(ExitReason::Failed(format!(
                        "{msg} ({failures} failures in a row)"
                    )));
                }
                shared.event(msg);
            }
            Ok(TaskResult {
                seg,
                prompt_box,
                structure,
            }) => {
                failures = 0;
                let track = lock(&shared.prompter).observe(&seg);
                let shape = MaskShape::of(&seg);
                let ann = Arc::new(Annotation {
                    source_id: frame.id,
                    source_capture: frame.capture,
                    seg: Arc::new(seg),
                    shape,
                    prompt_box,
                    infer,
                    backend: name.clone(),
                    track,
                    structure,
                    generation,
                });
                let mut latest = lock(&shared.latest);
                if shared.generation.load(Ordering::SeqCst) != generation {
                    return;
                }
                *latest = Some(ann);
                drop(latest);
                *lock(&shared.state) = AiState::Running;
                shared.counters.results.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

/// What the worker does with a frame.
enum Task {
    /// Encode, then decode this prompt.
    Prompt(crate::prompt::Prompt),
    /// Encode, prototype head, auto-prompt, decode.
    Prototypes(
        Arc<crate::fewshot::PrototypeSet>,
        crate::fewshot::AutoPromptConfig,
    ),
    /// Learn the prototype set from the box-prompted mask (`--teach-from`).
    Teach,
}

struct TaskResult {
    seg: Segmentation,
    prompt_box: Option<BoxPrompt>,
    structure: Option<StructureState>,
}

/// Marks a teaching failure that is already reported as an event.
const TEACH_FAILED: &str = "\0teach failed";

/// `--teach-from`: the box-prompted mask on the teach frame becomes the
/// support. Failures are reported as events and leave the stream
/// un-annotated; they are not backend failures.
fn teach_task(
    shared: &Shared,
    backend: &mut dyn PromptableSegmenter,
    id: u64,
    f: crate::RgbFrame<'_>,
) -> Result<TaskResult, String> {
    let Some(fs) = &shared.fewshot else {
        return Err(TEACH_FAILED.into());
    };
    let Some(spec) = lock(fs).teach.clone() else {
        return Err(TEACH_FAILED.into());
    };
    let outcome = teach_from_box(backend, f, spec.bbox, &spec.name, spec.head);
    let mut st = lock(fs);
    st.teaching = false;
    let b = [spec.bbox.x0, spec.bbox.y0, spec.bbox.x1, spec.bbox.y1];
    match outcome {
        Err(e) => {
            st.outcome = TeachOutcome::Failed(e.to_string());
            drop(st);
            shared.event(format!(
                "teach-from frame {id}: teaching failed: {e}; frames stay un-annotated"
            ));
            Err(TEACH_FAILED.into())
        }
        Ok((_, None)) => {
            st.outcome = TeachOutcome::EmptyMask;
            drop(st);
            shared.event(format!(
                "teach-from frame {id}: the box {b:?} gave an empty mask: nothing to learn; frames stay un-annotated"
            ));
            Err(TEACH_FAILED.into())
        }
        Ok((seg, Some(set))) => {
            let saved = spec.save.as_ref().map(|p| {
                set.write_to(p, &stream_provenance(&spec, &st.source), None)
                    .map(|_| p.clone())
                    .map_err(|e| e.to_string())
            });
            let prototypes = set.prototypes.len();
            let area = seg.area();
            st.outcome = TeachOutcome::Taught {
                prototypes,
                mask_area: area,
                saved: saved.clone(),
            };
            st.set = Some(Arc::new(set));
            drop(st);
            shared.event(format!(
                "teach-from frame {id}: learned `{}` from a {area}-pixel mask ({prototypes} prototypes){}",
                spec.name,
                match &saved {
                    Some(Ok(p)) => format!(", saved to {}", p.display()),
                    Some(Err(e)) => format!(", NOT saved: {e}"),
                    None => String::new(),
                }
            ));
            Ok(TaskResult {
                seg,
                prompt_box: Some(spec.bbox),
                structure: Some(StructureState {
                    name: spec.name.clone(),
                    found: true,
                    confidence: None,
                    head: Duration::ZERO,
                }),
            })
        }
    }
}

struct Supervisor {
    shared: Arc<Shared>,
    chain: Vec<BackendChoice>,
    config: StreamConfig,
    exits_tx: Sender<WorkerExit>,
    exits: Receiver<WorkerExit>,
    level: usize,
    generation: u64,
    strikes: u32,
    results_at_start: u64,
}

impl Supervisor {
    /// Invalidates the current worker: its results are discarded from now on.
    fn abandon(&mut self) {
        let _latest = lock(&self.shared.latest);
        self.generation = self.shared.generation.fetch_add(1, Ordering::SeqCst) + 1;
    }

    /// Opens the backend at `self.level` (moving down the chain while opening
    /// fails) and starts a worker on it.
    fn start(&mut self) {
        while let Some(choice) = self.chain.get(self.level) {
            let name = choice.name.clone();
            match (choice.open)() {
                Ok(backend) => {
                    self.abandon();
                    let (shared, gen) = (Arc::clone(&self.shared), self.generation);
                    let (tx, maxf) = (self.exits_tx.clone(), self.config.max_failures);
                    let nice = self.config.ai_nice;
                    self.results_at_start = self.shared.counters.results.load(Ordering::SeqCst);
                    let spawned = thread::Builder::new()
                        .name(format!("ai-worker-{gen}"))
                        .spawn(move || worker(shared, gen, name, backend, maxf, nice, tx));
                    match spawned {
                        Ok(_) => return, // detached: a hung worker cannot be joined
                        Err(e) => self.fall_back(&format!("cannot spawn worker: {e}")),
                    }
                }
                Err(e) => self.fall_back(&format!("cannot open: {e}")),
            }
        }
        *lock(&self.shared.state) = AiState::Off;
        self.shared
            .event("fallback: no backend left, AI off (pass-through continues)".into());
    }

    fn fall_back(&mut self, why: &str) {
        let name = self.chain.get(self.level).map_or("?", |c| c.name.as_str());
        let next = self
            .chain
            .get(self.level + 1)
            .map_or("AI off".to_string(), |c| format!("backend {}", c.name));
        self.shared.event(format!(
            "fallback: backend {name} failed ({why}); switching to {next}"
        ));
        self.shared
            .counters
            .fallbacks
            .fetch_add(1, Ordering::SeqCst);
        self.level += 1;
        self.strikes = 0;
    }

    /// After a panic or hang: restart on the same backend, or fall back after
    /// `max_failures` strikes without a single good result in between.
    fn restart_or_fall_back(&mut self, why: String) {
        *lock(&self.shared.state) = AiState::Unavailable;
        self.abandon();
        if self.shared.counters.results.load(Ordering::SeqCst) > self.results_at_start {
            self.strikes = 0;
        }
        self.strikes += 1;
        if self.strikes >= self.config.max_failures {
            self.fall_back(&format!("{why}; {} strikes", self.strikes));
        } else {
            self.shared.event(format!("{why}; restarting the worker"));
        }
        self.start();
    }

    fn run(mut self) {
        // Backends are opened here: thread pools they start inherit the lower
        // priority too. The watchdog only needs to tick every watchdog/5.
        if let Err(e) = lower_thread_priority(self.config.ai_nice) {
            self.shared
                .event(format!("could not lower the AI supervisor's priority: {e}"));
        }
        if self.chain.is_empty() {
            *lock(&self.shared.state) = AiState::Off;
            self.shared.event("AI off: no backend configured".into());
            return;
        }
        self.start();
        let tick =
            (self.config.watchdog / 5).clamp(Duration::from_millis(1), Duration::from_millis(50));
        while !self.shared.stop.load(Ordering::SeqCst) {
            if *lock(&self.shared.state) == AiState::Off {
                return;
            }
            match self.exits.recv_timeout(tick) {
                Ok(exit) if exit.generation != self.generation => {}
                Ok(WorkerExit { reason, .. }) => match reason {
                    ExitReason::Closed => return,
                    ExitReason::Panicked(msg) => self.restart_or_fall_back(msg),
                    ExitReason::Failed(msg) => {
                        *lock(&self.shared.state) = AiState::Unavailable;
                        self.fall_back(&msg);
                        self.start();
                    }
                },
                Err(RecvTimeoutError::Timeout) => {
                    let busy = *lock(&self.shared.busy);
                    if let Some(b) = busy.filter(|b| b.generation == self.generation) {
                        let held = b.since.elapsed();
                        if held > self.config.watchdog {
                            self.shared.counters.hangs.fetch_add(1, Ordering::SeqCst);
                            *lock(&self.shared.unavailable_until) =
                                Some(Instant::now() + self.config.unavailable_hold);
                            let name = self.chain.get(self.level).map_or("?", |c| &c.name);
                            let msg = format!(
                                "watchdog: {name} worker busy {:.0} ms on frame {} (limit {:.0} ms), abandoned",
                                ms(held),
                                b.frame,
                                ms(self.config.watchdog)
                            );
                            self.restart_or_fall_back(msg);
                        }
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

enum Item {
    /// A frame and the compositor's own RGB copy of it, to draw on.
    Frame(Arc<Frame>, RgbImage),
    Error {
        error: FrameError,
        capture: Instant,
        ingest: Instant,
    },
}

/// Reads, converts and hands over every frame: to the AI mailbox first (an
/// `Arc` clone of the unconverted frame, never blocking), then, with its one
/// RGB conversion, to the compositor, inline on the same thread so that no
/// thread hand-over sits in the video path, and the composed frame to `send`.
/// The video path thus costs one conversion and the overlay; the AI converts
/// its own copy. For raw layouts the compositor decides what to draw before
/// the conversion, and a mask fill is blended into each row as it is
/// converted rather than over the whole frame afterwards.
fn ingest(
    source: &mut dyn Source,
    shared: &Shared,
    pace: Option<f64>,
    comp: &mut Compositor,
    mut send: impl FnMut(Output) -> bool,
) -> u64 {
    let convert_threads = comp.config.convert_threads;
    let pace = pace.filter(|f| *f > 0.0 && f.is_finite() && !source.is_live());
    let mut n = 0u64;
    loop {
        if let Some(fps) = pace {
            let due = shared.start + Duration::from_secs_f64(n as f64 / fps);
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            }
        }
        let Some(item) = source.next_frame() else {
            break;
        };
        let ingest = Instant::now();
        n += 1;
        let item = match item {
            Ok(raw) => {
                let mut data = shared
                    .pool
                    .take(raw.width.saturating_mul(raw.height).saturating_mul(3));
                // A raw frame's size is known before converting it (a JPEG's
                // only after decoding).
                let decision = matches!(raw.format, PixelFormat::Raw(_))
                    .then(|| comp.decide(raw.id, raw.width, raw.height));
                let fill = decision.as_ref().and_then(|d| comp.fill_for(d));
                let (converted, prefilled) =
                    match fill.as_ref().map(|f| to_rgb_filled(&raw, &mut data, f)) {
                        Some(Ok(Some(size))) => (Ok(size), true),
                        Some(Err(e)) => (Err(e), false),
                        Some(Ok(None)) | None => {
                            (to_rgb_split(&raw, &mut data, convert_threads), false)
                        }
                    };
                match converted {
                    Ok((width, height)) => {
                        let image = RgbImage {
                            width,
                            height,
                            data,
                        };
                        let frame = Arc::new(Frame {
                            id: raw.id,
                            capture: raw.capture,
                            ingest,
                            format: raw.format,
                            width,
                            height,
                            raw,
                        });
                        if *lock(&shared.state) != AiState::Off {
                            if let Some(fs) = &shared.fewshot {
                                let mut st = lock(fs);
                                if st.teach.as_ref().is_some_and(|t| t.frame == frame.id)
                                    && st.outcome == TeachOutcome::NotSeen
                                    && st.set.is_none()
                                {
                                    st.slot = Some(Arc::clone(&frame));
                                }
                            }
                            shared.mailbox.put(Arc::clone(&frame));
                        }
                        let decided = decision.map(|d| (d, prefilled));
                        if !send(comp.compose(Item::Frame(frame, image), decided)) {
                            break;
                        }
                        continue;
                    }
                    Err(error) => {
                        shared.pool.put(data);
                        Item::Error {
                            error,
                            capture: raw.capture,
                            ingest,
                        }
                    }
                }
            }
            Err(error) => Item::Error {
                error,
                capture: ingest,
                ingest,
            },
        };
        if !send(comp.compose(item, None)) {
            break;
        }
    }
    shared.mailbox.close();
    n
}

/// What the compositor draws on one frame, decided before the frame is
/// converted ([`Compositor::decide`]).
struct Decision {
    /// The frame size it was decided for.
    size: (usize, usize),
    /// The newest annotation then.
    ann: Option<Arc<Annotation>>,
    /// That annotation if it may be drawn on this frame.
    usable: Option<Arc<Annotation>>,
    /// Its age then.
    age: Option<Duration>,
    state: OverlayState,
}

struct Compositor {
    shared: Arc<Shared>,
    config: StreamConfig,
    summary: RunSummary,
    last_id: Option<u64>,
    geometry: Option<(usize, usize, PixelFormat)>,
    last_seen: Option<u64>,
    last_drawn: Option<u64>,
}

impl Compositor {
    fn rel(&self, t: Instant) -> f64 {
        ms(t.saturating_duration_since(self.shared.start))
    }

    fn blank_record(&self, id: u64, capture: Instant, ingest: Instant) -> FrameRecord {
        FrameRecord {
            frame: id,
            emitted: false,
            error: None,
            t_capture_ms: self.rel(capture),
            t_ingest_ms: self.rel(ingest),
            t_emit_ms: None,
            passthrough_ms: None,
            overlay: OverlayState::None,
            annotation_frame: None,
            annotation_age_ms: None,
            annotation_latency_ms: None,
            infer_ms: None,
            mask_area: None,
            mask_box: None,
            prompt_box: None,
            iou_prediction: None,
            track: None,
            structure: None,
            structure_found: None,
            prototype_confidence: None,
            head_ms: None,
            backend: None,
            late: false,
            ai_dropped_total: self.shared.mailbox.dropped(),
            events: Vec::new(),
        }
    }

    /// Draws the overlay or indicator for `state` on `image`, the compositor's
    /// own RGB copy of the frame, in place.
    /// `prefilled`: the mask fill of `ann` was blended in while the frame was
    /// converted ([`to_rgb_filled`]); only the rest is drawn here.
    fn draw(
        &self,
        mut image: RgbImage,
        state: OverlayState,
        ann: Option<&Arc<Annotation>>,
        age: Option<Duration>,
        prefilled: bool,
    ) -> (RgbImage, Option<Vec<bool>>) {
        let (w, h) = (image.width, image.height);
        let mut touched = self.config.record_touched.then(|| vec![false; w * h]);
        // `Canvas::new` only fails on inconsistent sizes, which `to_rgb` rules
        // out; drawing is then skipped rather than panicking.
        if let Some(mut canvas) = Canvas::new(w, h, &mut image.data, touched.as_deref_mut()) {
            match (state, ann) {
                (OverlayState::NotFound, Some(a)) => {
                    let name = a
                        .structure
                        .as_ref()
                        .map_or("structure", |s| s.name.as_str());
                    let readout = format!(
                        "AI {:.0} ms  age {:.0} ms",
                        ms(a.infer),
                        ms(age.unwrap_or_default())
                    );
                    overlay::draw_not_found(&mut canvas, name, &readout);
                }
                (OverlayState::Drawn, Some(a)) => {
                    let base = a
                        .structure
                        .as_ref()
                        .map_or(self.config.label.as_str(), |s| s.name.as_str());
                    let label = match a.seg.iou_prediction {
                        Some(iou) => format!("{base} {iou:.2}"),
                        None => base.to_string(),
                    };
                    let readout = format!(
                        "AI {:.0} ms  age {:.0} ms",
                        ms(a.infer),
                        ms(age.unwrap_or_default())
                    );
                    if prefilled {
                        canvas.mark_runs(&a.shape.runs);
                        overlay::draw_annotation_outline(
                            &mut canvas,
                            &a.shape,
                            a.prompt_box,
                            &label,
                            &readout,
                            &self.config.style,
                        );
                    } else {
                        overlay::draw_annotation(
                            &mut canvas,
                            &a.shape,
                            a.prompt_box,
                            &label,
                            &readout,
                            &self.config.style,
                        );
                    }
                }
                (OverlayState::Late, _) => overlay::draw_indicator(&mut canvas, Indicator::Late),
                (OverlayState::Unavailable, _) => {
                    overlay::draw_indicator(&mut canvas, Indicator::Unavailable)
                }
                (OverlayState::Off, _) => overlay::draw_indicator(&mut canvas, Indicator::Off),
                _ => {}
            }
        }
        (image, touched)
    }

    /// What to draw on frame `id` of `w × h`, decided from the newest
    /// annotation and the AI's state now. Taken before the frame is converted,
    /// so that the mask fill can be blended in during the conversion; the
    /// annotation's age is checked again when the frame is emitted.
    fn decide(&self, id: u64, w: usize, h: usize) -> Decision {
        let ann = lock(&self.shared.latest).clone();
        let mut state = *lock(&self.shared.state);
        if state == AiState::Running
            && lock(&self.shared.unavailable_until).is_some_and(|t| Instant::now() < t)
        {
            state = AiState::Unavailable;
        }
        let has_prompt = match &self.shared.fewshot {
            Some(fs) => lock(fs).active(id),
            None => lock(&self.shared.prompter).prompt_for(id, w, h).is_some(),
        };
        let now = Instant::now();
        // Usable: computed on this frame or an earlier one of the same size, by
        // the current worker, and young enough to still be young when emitted.
        let usable = ann.clone().filter(|a| {
            a.source_id <= id
                && (a.seg.width, a.seg.height) == (w, h)
                && a.generation == self.shared.generation.load(Ordering::SeqCst)
        });
        let age = usable
            .as_ref()
            .map(|a| now.saturating_duration_since(a.source_capture));
        let fresh = age.is_some_and(|age| age + DRAW_MARGIN <= self.config.deadline);
        let state = match state {
            AiState::Off => OverlayState::Off,
            AiState::Unavailable => OverlayState::Unavailable,
            AiState::Running if !has_prompt => OverlayState::None,
            AiState::Running if fresh => {
                let not_found = usable
                    .as_ref()
                    .and_then(|a| a.structure.as_ref())
                    .is_some_and(|s| !s.found);
                if not_found {
                    OverlayState::NotFound
                } else {
                    OverlayState::Drawn
                }
            }
            AiState::Running => OverlayState::Late,
        };
        Decision {
            size: (w, h),
            ann,
            usable,
            age,
            state,
        }
    }

    /// The mask fill to blend in while converting a frame decided as `d`.
    fn fill_for<'a>(&'a self, d: &'a Decision) -> Option<RowFill<'a>> {
        if d.state != OverlayState::Drawn || self.config.convert_threads > 1 {
            return None;
        }
        d.usable.as_ref().map(|a| RowFill {
            runs: &a.shape.runs,
            rgb: self.config.style.mask,
            alpha: self.config.style.fill_alpha,
        })
    }

    /// Composes one frame. `decided`: the decision taken before converting it
    /// (taken here if `None`) and whether its fill was blended in then.
    fn compose(&mut self, item: Item, decided: Option<(Decision, bool)>) -> Output {
        let (frame, image) = match item {
            Item::Error {
                error,
                capture,
                ingest,
            } => {
                self.summary.frame_errors += 1;
                self.shared.event(format!("frame error: {error}"));
                let mut record = self.blank_record(error.id(), capture, ingest);
                record.error = Some(error.to_string());
                record.events = std::mem::take(&mut *lock(&self.shared.events));
                return Output {
                    id: error.id(),
                    image: None,
                    record,
                    new_annotation: None,
                    touched: None,
                };
            }
            Item::Frame(f, image) => (f, image),
        };
        let mut record = self.blank_record(frame.id, frame.capture, frame.ingest);
        let (w, h) = (image.width, image.height);
        let geometry = (w, h, frame.format);
        if self.geometry.is_some_and(|g| g != geometry) {
            let (ow, oh, of) = self.geometry.unwrap_or(geometry);
            let msg = format!(
                "frame {}: stream changed from {ow}x{oh} {of} to {w}x{h} {}; older annotations are not drawn",
                frame.id, frame.format
            );
            self.shared.event(msg.clone());
            record.error = Some(msg);
        }
        self.geometry = Some(geometry);
        if self.last_id.is_some_and(|l| frame.id <= l) {
            self.summary.out_of_order += 1;
        }
        self.last_id = Some(frame.id);

        // A decision taken for another size cannot happen (raw frames convert
        // to their declared size), but is not trusted if it does.
        let (decision, prefilled) = decided
            .filter(|(d, _)| d.size == (w, h))
            .unwrap_or_else(|| (self.decide(frame.id, w, h), false));
        let Decision {
            ann,
            usable,
            size: _,
            age,
            state: mut overlay_state,
        } = decision;
        // A fill blended in during conversion belongs to `usable` and to a
        // frame of this size (`decide` checked both against the raw frame).
        let prefilled = prefilled && overlay_state == OverlayState::Drawn && usable.is_some();
        let new_annotation = ann
            .as_ref()
            .filter(|a| self.last_seen != Some(a.source_id))
            .cloned();
        if let Some(a) = &ann {
            self.last_seen = Some(a.source_id);
        }
        // The input as it came in, for tests that check untouched pixels.
        // With the fill blended in already, that is a second, clean conversion
        // (tests only).
        let input = match (self.config.record_touched, prefilled) {
            (false, _) => None,
            (true, false) => Some(Arc::new(image.clone())),
            (true, true) => frame.to_rgb(Vec::new()).ok().map(Arc::new),
        };
        let (mut image, mut touched) =
            self.draw(image, overlay_state, usable.as_ref(), age, prefilled);
        let mut emit = Instant::now();
        if matches!(overlay_state, OverlayState::Drawn | OverlayState::NotFound)
            && usable.as_ref().is_some_and(|a| {
                emit.saturating_duration_since(a.source_capture) > self.config.deadline
            })
        {
            // Went stale while drawing (the thread was descheduled): withdraw
            // it. The overlay was drawn in place, so convert the frame again
            // (the same bytes and the same conversion as ingest: it cannot
            // fail where ingest succeeded, but if it did the frame is not
            // emitted with a stale overlay).
            overlay_state = OverlayState::Late;
            match frame.to_rgb(image.data) {
                Ok(clean) => (image, touched) = self.draw(clean, overlay_state, None, None, false),
                Err(e) => {
                    let msg = format!("frame {}: reconversion failed: {e}", frame.id);
                    self.shared.event(msg.clone());
                    self.summary.frame_errors += 1;
                    record.error = Some(msg);
                    record.events = std::mem::take(&mut *lock(&self.shared.events));
                    return Output {
                        id: frame.id,
                        image: None,
                        record,
                        new_annotation,
                        touched: None,
                    };
                }
            }
            emit = Instant::now();
            self.summary.withdrawn += 1;
        }
        let passthrough = emit.saturating_duration_since(frame.ingest);
        self.summary.frames_out += 1;
        self.summary
            .passthrough_us
            .push(passthrough.as_micros().min(u128::from(u64::MAX)) as u64);
        record.emitted = true;
        record.t_emit_ms = Some(self.rel(emit));
        record.passthrough_ms = Some(ms(passthrough));
        record.overlay = overlay_state;
        record.late = overlay_state == OverlayState::Late;
        match overlay_state {
            OverlayState::Drawn => self.summary.drawn += 1,
            OverlayState::Late => self.summary.late += 1,
            OverlayState::Unavailable => self.summary.unavailable += 1,
            OverlayState::Off => self.summary.off += 1,
            OverlayState::NotFound => self.summary.not_found += 1,
            OverlayState::None => {}
        }
        if let Some(a) = &usable {
            let emit_age = emit.saturating_duration_since(a.source_capture);
            record.annotation_frame = Some(a.source_id);
            record.annotation_age_ms = Some(ms(emit_age));
            record.infer_ms = Some(ms(a.infer));
            record.backend = Some(a.backend.clone());
            record.track = Some(a.track.name());
            if let Some(st) = &a.structure {
                record.structure = Some(st.name.clone());
                record.structure_found = Some(st.found);
                record.prototype_confidence = st.confidence;
                record.head_ms = (st.head > Duration::ZERO).then(|| ms(st.head));
            }
            if overlay_state == OverlayState::NotFound {
                record.mask_area = Some(0);
            }
            if overlay_state == OverlayState::Drawn {
                let us = emit_age.as_micros().min(u128::from(u64::MAX)) as u64;
                self.summary.max_drawn_age_us = self.summary.max_drawn_age_us.max(us);
                record.mask_area = Some(a.shape.area);
                record.mask_box = a.shape.bbox;
                record.prompt_box = a.prompt_box.map(|b| [b.x0, b.y0, b.x1, b.y1]);
                record.iou_prediction = a.seg.iou_prediction;
                if self.last_drawn != Some(a.source_id) {
                    self.last_drawn = Some(a.source_id);
                    record.annotation_latency_ms = Some(ms(emit_age));
                    self.summary.annotation_latency_us.push(us);
                }
            }
        }
        record.events = std::mem::take(&mut *lock(&self.shared.events));
        let id = frame.id;
        let touched = touched.zip(input);
        Output {
            id,
            image: Some(image),
            record,
            new_annotation,
            touched,
        }
    }
}

/// Runs a stream to its end: every frame of `source` is composed and handed to
/// every sink in order. `chain` is the backend fallback chain (empty: AI off).
pub fn run_stream(
    source: Box<dyn Source>,
    chain: Vec<BackendChoice>,
    prompts: PromptSpec,
    mut sinks: Vec<Box<dyn Sink>>,
    config: StreamConfig,
) -> Result<RunSummary, StreamError> {
    let shared = Arc::new(Shared {
        start: Instant::now(),
        pool: Arc::new(BufferPool::new(2 * config.queue.max(1) + 8)),
        mailbox: Mailbox::new(),
        latest: Mutex::new(None),
        // Known before any thread starts, so the first frame already says "AI off".
        state: Mutex::new(if chain.is_empty() {
            AiState::Off
        } else {
            AiState::Running
        }),
        unavailable_until: Mutex::new(None),
        busy: Mutex::new(None),
        generation: AtomicU64::new(0),
        prompter: Mutex::new(Prompter::new(prompts, config.track)),
        fewshot: config
            .fewshot
            .clone()
            .map(|spec| Mutex::new(FewShotState::new(spec, source.describe()))),
        events: Mutex::new(Vec::new()),
        all_events: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
        counters: Counters::default(),
        log_events: config.log_events,
    });
    shared.event(format!("input: {}", source.describe()));
    let (exits_tx, exits) = mpsc::channel();
    let supervisor = Supervisor {
        shared: Arc::clone(&shared),
        chain,
        config: config.clone(),
        exits_tx,
        exits,
        level: 0,
        generation: 0,
        strikes: 0,
        results_at_start: 0,
    };
    // The supervisor opens the first backend itself so that a slow backend
    // load never delays the first frames.
    let supervisor = thread::Builder::new()
        .name("ai-supervisor".into())
        .spawn(move || supervisor.run())
        .map_err(|e| StreamError::Spawn("supervisor", e))?;

    let (out_tx, out_rx) = mpsc::sync_channel::<Output>(config.queue.max(1));
    let pace = config.pace_fps;
    let sink_pool = Arc::clone(&shared.pool);
    let sink_thread = thread::Builder::new()
        .name("sinks".into())
        .spawn(move || {
            let mut errors = 0u64;
            let mut reported = vec![0u32; sinks.len()];
            for mut out in out_rx {
                for (i, sink) in sinks.iter_mut().enumerate() {
                    if let Err(e) = sink.write(&out) {
                        errors += 1;
                        reported[i] += 1;
                        if reported[i] <= 5 {
                            eprintln!(
                                "edgeseg stream: sink {}: frame {}: {e}",
                                sink.name(),
                                out.id
                            );
                        }
                    }
                }
                if let Some(img) = out.image.take() {
                    sink_pool.put(img.data);
                }
            }
            for sink in &mut sinks {
                if let Err(e) = sink.finish() {
                    errors += 1;
                    eprintln!("edgeseg stream: sink {}: {e}", sink.name());
                }
            }
            errors
        })
        .map_err(|e| StreamError::Spawn("sink", e))?;

    let mut comp = Compositor {
        shared: Arc::clone(&shared),
        config,
        summary: RunSummary::default(),
        last_id: None,
        geometry: None,
        last_seen: None,
        last_drawn: None,
    };
    let mut source = source;
    let frames_in = ingest(source.as_mut(), &shared, pace, &mut comp, |out| {
        out_tx.send(out).is_ok()
    });
    drop(out_tx);
    shared.stop.store(true, Ordering::SeqCst);
    shared.mailbox.close();
    let sink_errors = sink_thread
        .join()
        .map_err(|_| StreamError::Panicked("sink"))?;
    supervisor
        .join()
        .map_err(|_| StreamError::Panicked("supervisor"))?;

    // A short input can end while the worker is still learning from the teach
    // frame: wait for that (at most one watchdog period), so that `--teach-from`
    // on a file does not depend on how fast the model is.
    if let Some(fs) = &shared.fewshot {
        let until = Instant::now() + comp.config.watchdog;
        while lock(fs).teaching && Instant::now() < until {
            thread::sleep(Duration::from_millis(10));
        }
    }
    let mut s = comp.summary;
    s.frames_in = frames_in;
    s.sink_errors = sink_errors;
    let c = &shared.counters;
    s.ai_results = c.results.load(Ordering::SeqCst);
    s.ai_errors = c.errors.load(Ordering::SeqCst);
    s.panics = c.panics.load(Ordering::SeqCst);
    s.hangs = c.hangs.load(Ordering::SeqCst);
    s.fallbacks = c.fallbacks.load(Ordering::SeqCst);
    s.ai_dropped = shared.mailbox.dropped();
    s.events = std::mem::take(&mut *lock(&shared.all_events));
    s.teach = shared.fewshot.as_ref().and_then(|fs| {
        let st = lock(fs);
        st.teach.as_ref().map(|_| st.outcome.clone())
    });
    Ok(s)
}

/// Percentile (nearest rank) of unsorted samples; `None` when empty.
pub fn percentile(samples: &[u64], p: f64) -> Option<u64> {
    if samples.is_empty() {
        return None;
    }
    let mut v = samples.to_vec();
    v.sort_unstable();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v.get(rank.clamp(1, v.len()) - 1).copied()
}
