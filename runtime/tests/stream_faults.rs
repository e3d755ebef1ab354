//! Fault tests of the streaming pipeline with the mock backend: slow, hung,
//! panicking and faulty AI, broken backends, and bad frames. Every run checks
//! the pass-through invariants on every frame:
//!
//! - every delivered frame comes out exactly once, in order (or as a per-frame
//!   error record), whatever the AI does;
//! - no overlay is drawn from an annotation older than the deadline;
//! - no drawn overlay comes from a rejected output (non-finite IoU, wrong size);
//! - pixels the overlay did not touch are bit-identical to the input.
//!
//! Timing bounds here are generous (this runs on a shared 2-core machine);
//! the latency numbers themselves are measured by `edgeseg bench-stream`.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgeseg_kernels::pixfmt::RawFormat;
use edgeseg_runtime::backend::{BackendError, PromptableSegmenter};
use edgeseg_runtime::stream::frame::{FrameError, PixelFormat, RawFrame};
use edgeseg_runtime::stream::mock::{MockConfig, MockSegmenter};
use edgeseg_runtime::stream::pipeline::{
    run_stream, BackendChoice, Output, RunSummary, StreamConfig,
};
use edgeseg_runtime::stream::record::{FrameRecord, OverlayState};
use edgeseg_runtime::stream::sink::{Sink, SinkError};
use edgeseg_runtime::stream::source::{Source, SyntheticSource};
use edgeseg_runtime::stream::PromptSpec;

/// Checks the per-frame invariants and keeps the records.
struct Checker {
    deadline_ms: f64,
    records: Arc<Mutex<Vec<FrameRecord>>>,
    last_id: Option<u64>,
}

impl Sink for Checker {
    fn name(&self) -> &str {
        "checker"
    }
    fn write(&mut self, out: &Output) -> Result<(), SinkError> {
        let r = &out.record;
        if let Some(last) = self.last_id {
            assert!(
                out.id > last,
                "frame {} after {last}: repeated or out of order",
                out.id
            );
        }
        self.last_id = Some(out.id);
        assert_eq!(r.emitted, out.image.is_some());
        if r.overlay == OverlayState::Drawn {
            let age = r.annotation_age_ms.expect("drawn overlays have an age");
            assert!(
                age <= self.deadline_ms,
                "frame {}: stale overlay drawn ({age} ms)",
                out.id
            );
            assert!(
                r.iou_prediction.is_none_or(f32::is_finite),
                "frame {}: NaN IoU drawn",
                out.id
            );
            assert!(
                r.annotation_frame.unwrap() <= out.id,
                "annotation from the future"
            );
        }
        if let (Some(img), Some((touched, input))) = (&out.image, &out.touched) {
            assert_eq!((img.width, img.height), (input.width, input.height));
            for (i, t) in touched.iter().enumerate() {
                if !t {
                    assert_eq!(
                        img.data[3 * i..3 * i + 3],
                        input.data[3 * i..3 * i + 3],
                        "frame {}: untouched pixel {i} changed",
                        out.id
                    );
                }
            }
        }
        self.records.lock().unwrap().push(r.clone());
        Ok(())
    }
}

fn mock_choice(name: &str, config: MockConfig, counter: Arc<AtomicU64>) -> BackendChoice {
    BackendChoice {
        name: name.into(),
        open: Box::new(move || {
            Ok(
                Box::new(MockSegmenter::new(config.clone(), Arc::clone(&counter)))
                    as Box<dyn PromptableSegmenter>,
            )
        }),
    }
}

fn config(fps: f64) -> StreamConfig {
    StreamConfig {
        pace_fps: Some(fps),
        record_touched: true,
        // Tests run in parallel on a small shared machine: keep the AI at the
        // test's priority so the counts below do not depend on the load.
        ai_nice: 0,
        ..StreamConfig::default()
    }
}

/// Injected panics are expected: keep them quiet (printing, and with
/// RUST_BACKTRACE symbolising, a backtrace per panic takes longer than these
/// short streams on a loaded machine). Other panics keep the default hook.
fn quiet_worker_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let worker = std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("ai-worker"));
            if !worker {
                default(info);
            }
        }));
    });
}

fn run(
    source: Box<dyn Source>,
    chain: Vec<BackendChoice>,
    config: StreamConfig,
) -> (RunSummary, Vec<FrameRecord>) {
    quiet_worker_panics();
    let records = Arc::new(Mutex::new(Vec::new()));
    let checker = Checker {
        deadline_ms: config.deadline.as_secs_f64() * 1e3,
        records: Arc::clone(&records),
        last_id: None,
    };
    let prompt = PromptSpec::parse("track:8,8,40,40").unwrap();
    let summary = run_stream(source, chain, prompt, vec![Box::new(checker)], config).unwrap();
    let records = std::mem::take(&mut *records.lock().unwrap());
    assert_eq!(summary.frames_in, summary.frames_out + summary.frame_errors);
    assert_eq!(
        records.len() as u64,
        summary.frames_in,
        "one record per frame"
    );
    assert_eq!(summary.out_of_order, 0);
    assert_eq!(summary.sink_errors, 0);
    (summary, records)
}

fn synthetic(n: u64) -> Box<dyn Source> {
    Box::new(SyntheticSource::new(96, 64, RawFormat::Yuyv, n, 100.0).unwrap())
}

fn mock(s: &str) -> MockConfig {
    MockConfig::parse(s).unwrap()
}

#[test]
fn healthy_ai_draws_fresh_overlays_on_every_frame_it_can() {
    let (s, records) = run(
        synthetic(120),
        vec![mock_choice("mock", mock("delay=3"), Arc::default())],
        config(100.0),
    );
    assert_eq!(s.frames_out, 120);
    assert!(s.drawn > 30, "{s:?}");
    assert_eq!((s.panics, s.hangs, s.fallbacks, s.ai_errors), (0, 0, 0, 0));
    assert!(!s.annotation_latency_us.is_empty());
    // Track mode follows the moving disc: the mask box moves.
    let boxes: Vec<_> = records.iter().filter_map(|r| r.mask_box).collect();
    assert!(boxes.first() != boxes.last());
    assert!(records.iter().any(|r| r.track == Some("tracked")));
}

#[test]
fn ten_times_slower_ai_is_late_never_stale() {
    // 200 ms per frame against a 120 ms deadline: nothing may be drawn.
    let (s, records) = run(
        synthetic(60),
        vec![mock_choice("slow", mock("delay=200"), Arc::default())],
        config(100.0),
    );
    assert_eq!(s.frames_out, 60);
    assert_eq!(s.drawn, 0, "{s:?}");
    assert!(s.late > 50);
    assert!(
        s.ai_dropped > 0,
        "the mailbox dropped frames the AI could not take"
    );
    assert!(records.iter().all(|r| r.overlay != OverlayState::Drawn));
}

#[test]
fn watchdog_abandons_a_hung_worker_and_recovers_within_a_second() {
    let mut c = config(100.0);
    c.watchdog = Duration::from_millis(200);
    let m = MockConfig {
        hang_for: Duration::from_secs(5),
        ..mock("delay=3,hang-at=20")
    };
    let t0 = Instant::now();
    let (s, records) = run(
        synthetic(250),
        vec![mock_choice("mock", m, Arc::default())],
        c,
    );
    // The stream itself never waited for the hung call.
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_eq!(s.hangs, 1, "{:?}", s.events);
    assert_eq!(s.frames_out, 250);
    let first_unavailable = records
        .iter()
        .position(|r| r.overlay == OverlayState::Unavailable)
        .expect("AI unavailable is shown");
    let back = records[first_unavailable..]
        .iter()
        .find(|r| r.overlay == OverlayState::Drawn)
        .expect("overlays come back");
    let gap = back.t_emit_ms.unwrap() - records[first_unavailable].t_emit_ms.unwrap();
    assert!(gap < 1000.0, "recovered after {gap} ms");
    assert!(records
        .iter()
        .any(|r| r.events.iter().any(|e| e.contains("watchdog"))));
}

#[test]
fn panics_every_k_frames_are_caught_and_the_worker_restarts() {
    // The default panic hook runs before `catch_unwind` returns; with
    // RUST_BACKTRACE set on a loaded machine, symbolising takes longer than the
    // default watchdog, which would turn the panic into a hang. This test is
    // about panics, so give the watchdog room.
    let mut c = config(100.0);
    c.watchdog = Duration::from_secs(10);
    let (s, _) = run(
        synthetic(150),
        vec![mock_choice(
            "mock",
            mock("delay=2,panic-every=4"),
            Arc::default(),
        )],
        c,
    );
    assert!(s.panics >= 3, "{s:?}");
    assert_eq!(
        s.fallbacks, 0,
        "a good frame between panics resets the strikes"
    );
    assert!(s.drawn > 10, "{s:?}");
    assert_eq!(s.frames_out, 150);
}

#[test]
fn non_finite_and_malformed_outputs_are_never_drawn() {
    for faults in [
        "nan-every=2",
        "inf-every=2",
        "nan-iou-every=2",
        "wrong-size-every=2",
        "bad-shape-every=2",
    ] {
        let m = mock(&format!("delay=2,{faults}"));
        let (s, records) = run(
            synthetic(80),
            vec![mock_choice("mock", m, Arc::default())],
            config(100.0),
        );
        assert!(s.ai_errors > 5, "{faults}: {s:?}");
        assert_eq!(
            s.fallbacks, 0,
            "{faults}: faults alternate with good frames"
        );
        assert!(s.drawn > 0, "{faults}: good frames are still drawn");
        for r in records.iter().filter(|r| r.overlay == OverlayState::Drawn) {
            if let Some([x0, y0, x1, y1]) = r.mask_box {
                assert!(
                    x0 <= x1 && x1 < 96 && y0 <= y1 && y1 < 64,
                    "{faults}: {r:?}"
                );
            }
            assert!(r.iou_prediction.unwrap().is_finite());
        }
    }
}

#[test]
fn broken_backends_fall_back_down_the_chain_then_to_ai_off() {
    // GPU (fails every call) → CPU (healthy).
    let chain = vec![
        mock_choice("gpu", mock("fail"), Arc::default()),
        mock_choice("cpu", mock("delay=3"), Arc::default()),
    ];
    let (s, records) = run(synthetic(100), chain, config(100.0));
    assert_eq!(s.fallbacks, 1, "{:?}", s.events);
    assert!(s
        .events
        .iter()
        .any(|e| e.contains("fallback: backend gpu failed")
            && e.contains("switching to backend cpu")));
    assert!(records
        .iter()
        .any(|r| r.backend.as_deref() == Some("cpu") && r.overlay == OverlayState::Drawn));
    // Nothing opens: AI off, pass-through continues.
    let broken = BackendChoice {
        name: "tract-cpu".into(),
        open: Box::new(|| Err(BackendError::Unavailable("no bundle".into()))),
    };
    let (s, records) = run(synthetic(40), vec![broken], config(200.0));
    assert_eq!(s.frames_out, 40);
    assert!(s.events.iter().any(|e| e.contains("AI off")));
    assert!(records
        .iter()
        .skip(5)
        .all(|r| r.overlay == OverlayState::Off));
    // Hangs on every frame: after max_failures strikes the chain is exhausted.
    let mut c = config(100.0);
    c.watchdog = Duration::from_millis(100);
    let m = MockConfig {
        hang_for: Duration::from_secs(2),
        hang_at: (1..100).collect(),
        ..MockConfig::default()
    };
    let (s, records) = run(
        synthetic(120),
        vec![mock_choice("mock", m, Arc::default())],
        c,
    );
    assert_eq!(s.hangs, 3, "{:?}", s.events);
    assert_eq!(s.frames_out, 120);
    assert_eq!(records.last().unwrap().overlay, OverlayState::Off);
}

/// A source that delivers a scripted sequence of good and bad frames.
struct Scripted(std::vec::IntoIter<RawFrame>);

impl Source for Scripted {
    fn describe(&self) -> String {
        "scripted".into()
    }
    fn fps(&self) -> Option<f64> {
        None
    }
    fn next_frame(&mut self) -> Option<Result<RawFrame, FrameError>> {
        self.0.next().map(Ok)
    }
}

#[test]
fn bad_frames_give_per_frame_errors_and_the_stream_continues() {
    let f = |id, w, h, format, len| RawFrame {
        id,
        width: w,
        height: h,
        format,
        data: vec![100; len],
        capture: Instant::now(),
    };
    let (yuyv, nv12, rgb) = (
        PixelFormat::Raw(RawFormat::Yuyv),
        PixelFormat::Raw(RawFormat::Nv12),
        PixelFormat::Raw(RawFormat::Rgb24),
    );
    let frames = vec![
        f(0, 64, 48, yuyv, 64 * 48 * 2),
        f(1, 0, 48, yuyv, 0),                // zero size
        f(2, 63, 47, nv12, 63 * 47 * 3 / 2), // odd 4:2:0
        f(3, 64, 48, yuyv, 64 * 48 * 2 - 7), // truncated
        f(4, 64, 48, yuyv, 64 * 48 * 2),
        f(5, 32, 24, yuyv, 32 * 24 * 2),       // size change
        f(6, 32, 24, rgb, 32 * 24 * 3),        // format change
        f(7, 32, 24, PixelFormat::Mjpeg, 100), // garbage JPEG
        f(8, 32, 24, rgb, 32 * 24 * 3),
    ];
    let source = Box::new(Scripted(frames.into_iter()));
    let (s, records) = run(
        source,
        vec![mock_choice("mock", mock(""), Arc::default())],
        config(200.0),
    );
    assert_eq!(s.frame_errors, 4, "{:?}", s.events);
    assert_eq!(s.frames_out, 5);
    let err = |id: u64| {
        records
            .iter()
            .find(|r| r.frame == id)
            .unwrap()
            .error
            .clone()
            .unwrap_or_default()
    };
    assert!(err(1).contains("zero side"), "{}", err(1));
    assert!(err(2).contains("even"), "{}", err(2));
    assert!(err(3).contains("needs 6144 bytes, got 6137"), "{}", err(3));
    assert!(
        err(5).contains("changed from 64x48 yuyv to 32x24 yuyv"),
        "{}",
        err(5)
    );
    assert!(err(6).contains("to 32x24 rgb24"), "{}", err(6));
    assert!(err(7).contains("cannot decode"), "{}", err(7));
    assert!(records.iter().find(|r| r.frame == 8).unwrap().emitted);
}
