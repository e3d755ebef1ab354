//! Streaming: frames in, masks and overlays out, video never frozen.
//!
//! A [`source::Source`] delivers frames in any supported pixel format; ingest
//! converts each to RGB in one pass ([`frame`], [`edgeseg_kernels::pixfmt`]),
//! puts it into a single-slot latest-frame [`mailbox`] that feeds the AI
//! worker (so ingest never waits for the AI), and composes it on the same
//! thread. The compositor ([`pipeline`]) emits every frame, drawing the newest annotation
//! with embedded-graphics ([`overlay`]) only while it is fresh, and an "AI
//! late" / "AI unavailable" / "AI off" indicator otherwise. A supervisor
//! watches the worker (watchdog, panic recovery, restart) and walks the
//! backend fallback chain. Prompts come from [`prompting`] (fixed, track mode,
//! or a JSON-lines file), or from a few-shot prototype set with no prompt at all
//! ([`fewshot`]: `--support`, `--teach-from`); outputs go to [`sink`]s (PNG frames, Y4M video, mask
//! PNGs, the per-frame JSON log of [`record`]). [`mock`] is a fault-injecting
//! backend; [`cli`] holds the `run`, `demo` and `bench-stream` commands.
//!
//! Design notes and measurements: `docs/streaming.md`, `docs/perf/streaming.md`.

pub mod cli;
pub mod fewshot;
pub mod frame;
pub mod mailbox;
pub mod mock;
pub mod overlay;
pub mod pipeline;
pub mod prompting;
pub mod record;
pub mod sink;
pub mod source;
pub mod v4l2;
pub mod y4m;

pub use frame::{FrameError, PixelFormat, RawFrame, RgbImage};
pub use pipeline::{run_stream, BackendChoice, Output, RunSummary, StreamConfig};
pub use prompting::PromptSpec;
pub use source::{open_source, Source};
