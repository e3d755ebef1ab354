//! The per-frame log record (one JSON line per frame, see `docs/streaming.md`).

use serde::Serialize;

/// What the compositor did with a frame's overlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OverlayState {
    /// A fresh annotation was drawn.
    Drawn,
    /// The newest annotation was older than the deadline: "AI late" shown.
    Late,
    /// The AI is hung or restarting: "AI unavailable" shown.
    Unavailable,
    /// The AI is off: "AI off" shown.
    Off,
    /// Prototype mode: the structure is not in the frame ("no structure
    /// found" shown, no mask drawn).
    #[serde(rename = "not_found")]
    NotFound,
    /// Nothing to show (no prompt yet, empty mask, or a frame error).
    None,
}

/// One line of the per-frame JSON log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FrameRecord {
    /// Frame id from the source.
    pub frame: u64,
    /// The frame was emitted (false: a per-frame error, see `error`).
    pub emitted: bool,
    /// Why the frame could not be used.
    pub error: Option<String>,
    /// Capture time, ms since the stream started.
    pub t_capture_ms: f64,
    /// When ingest received the frame, ms since the stream started.
    pub t_ingest_ms: f64,
    /// When the composed frame was handed to the sinks, ms since start.
    pub t_emit_ms: Option<f64>,
    /// Added pass-through latency, ingest → emit, in ms.
    pub passthrough_ms: Option<f64>,
    /// What the overlay shows.
    pub overlay: OverlayState,
    /// Id of the frame the shown (or newest) annotation was computed on.
    pub annotation_frame: Option<u64>,
    /// Age of that annotation at composition: now − its frame's capture, ms.
    pub annotation_age_ms: Option<f64>,
    /// Capture → overlay first shown, ms (only on the first frame showing it).
    pub annotation_latency_ms: Option<f64>,
    /// Time the AI spent on that annotation, ms.
    pub infer_ms: Option<f64>,
    /// Foreground pixels of the shown mask.
    pub mask_area: Option<usize>,
    /// Bounding box of the shown mask, `[x0, y0, x1, y1]` inclusive.
    pub mask_box: Option<[usize; 4]>,
    /// The prompt box the mask was computed from.
    pub prompt_box: Option<[f32; 4]>,
    /// The model's IoU prediction for the shown mask.
    pub iou_prediction: Option<f32>,
    /// Tracking state after the shown mask (`tracked`, `lost`, `jumped` ...).
    pub track: Option<&'static str>,
    /// Prototype mode: the structure's name from the prototype set.
    pub structure: Option<String>,
    /// Prototype mode: whether the structure was found on the annotation's frame.
    pub structure_found: Option<bool>,
    /// Prototype mode: mean prototype probability of the auto-prompted component.
    pub prototype_confidence: Option<f32>,
    /// Prototype mode: time of the prototype head and auto-prompter (beyond
    /// encoder and decoder) on the annotation's frame, ms.
    pub head_ms: Option<f64>,
    /// Backend that produced the annotation.
    pub backend: Option<String>,
    /// The overlay was withheld because the annotation was too old.
    pub late: bool,
    /// Frames the AI mailbox has dropped so far (replaced before the AI took
    /// them); pass-through never drops frames.
    pub ai_dropped_total: u64,
    /// Pipeline events since the previous record (watchdog, fallback, ...).
    pub events: Vec<String>,
}
