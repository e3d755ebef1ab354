//! The pipeline's prompt-free mode: every frame is segmented from a few-shot
//! prototype set (`edgeseg run --support`), or from one taught on the live
//! stream (`edgeseg run --teach-from FRAME --box …`).
//!
//! Per frame: encoder → prototype head ([`PrototypeSet::predict`]) →
//! auto-prompt ([`auto_prompts`]) → one mask-decoder pass for the most
//! confident structure. When no structure is confident the result is an
//! explicit "not found" with an empty mask, never a mask made up from a weak
//! map.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::{Embedding, PromptableSegmenter, RgbFrame};
use crate::fewshot::{
    auto_prompts, teach, AutoPromptConfig, ClassPrompt, FewShotError, FoundStructure, HeadConfig,
    LabelMask, Modality, PrototypeSet, SupportShot,
};
use crate::prompt::{BoxPrompt, Prompt};
use crate::Segmentation;

use super::frame::Frame;

/// Teaching from the live stream: the box-prompted mask on one frame becomes
/// the (1-shot) support.
#[derive(Debug, Clone, PartialEq)]
pub struct TeachSpec {
    /// Id of the frame to teach from.
    pub frame: u64,
    /// The box on that frame, in frame pixels (clamped to the frame).
    pub bbox: BoxPrompt,
    /// The structure's name (recorded in the set, drawn as the label).
    pub name: String,
    /// Write the taught set here.
    pub save: Option<PathBuf>,
    /// Head settings for teaching.
    pub head: HeadConfig,
}

/// Prototype mode settings of a stream.
#[derive(Debug, Clone)]
pub struct FewShotSpec {
    /// A set loaded with `--support` (already checked against the model).
    pub support: Option<Arc<PrototypeSet>>,
    /// Teach from the stream instead.
    pub teach: Option<TeachSpec>,
    /// Auto-prompter settings.
    pub prompt: AutoPromptConfig,
}

/// What became of `--teach-from` by the end of a run.
#[derive(Debug, Clone, PartialEq)]
pub enum TeachOutcome {
    /// The frame never reached the AI (not in the stream, or the AI was off).
    NotSeen,
    /// Prototypes were learned.
    Taught {
        /// Prototypes in the set.
        prototypes: usize,
        /// Foreground pixels of the support mask.
        mask_area: usize,
        /// Where the set was written, or why it could not be.
        saved: Option<Result<PathBuf, String>>,
    },
    /// The box gave an empty mask: nothing to learn.
    EmptyMask,
    /// Teaching failed (backend error, no embedding, bad support ...).
    Failed(String),
}

/// The structure a prototype-mode result is about.
#[derive(Debug, Clone, PartialEq)]
pub struct StructureState {
    /// The structure's name from the prototype set.
    pub name: String,
    /// Whether it was found (false: "no structure found", empty mask).
    pub found: bool,
    /// Mean prototype probability over the auto-prompt's component.
    pub confidence: Option<f32>,
    /// Time of [`locate`] (modality check, prototype head, auto-prompter):
    /// the per-frame cost beyond the encoder and decoder.
    pub head: Duration,
}

/// A frame segmented from prototypes.
#[derive(Debug, Clone, PartialEq)]
pub struct PrototypeResult {
    /// The mask (all zero when not found).
    pub seg: Segmentation,
    /// The auto-prompt box given to the decoder.
    pub prompt_box: Option<BoxPrompt>,
    /// What was found.
    pub structure: StructureState,
}

/// The prototype head and auto-prompter on one frame's embedding, i.e. the
/// per-frame work of prototype mode beyond the encoder and decoder: the
/// modality check of the frame, [`PrototypeSet::predict`], [`auto_prompts`],
/// and the choice of the most confident structure found (`None`: nothing
/// found).
pub fn locate(
    set: &PrototypeSet,
    rgb: &[u8],
    embedding: &Embedding<'_>,
    cfg: &AutoPromptConfig,
) -> Result<Option<FoundStructure>, FewShotError> {
    set.check_modality(Modality::of_rgb(rgb))?;
    let map = set.predict(embedding)?;
    Ok(auto_prompts(&map, cfg)?
        .into_iter()
        .filter_map(|p| match p {
            ClassPrompt::Found(f) => Some(f),
            ClassPrompt::NotFound { .. } => None,
        })
        .max_by(|a, b| a.mean_probability.total_cmp(&b.mean_probability)))
}

/// Segments one frame from `set`: encoder, head and auto-prompt ([`locate`]),
/// then one decoder pass for the most confident structure found. A decoder
/// mask that comes out empty counts as not found.
pub fn segment_with_prototypes(
    backend: &mut dyn PromptableSegmenter,
    set: &PrototypeSet,
    frame: RgbFrame<'_>,
    cfg: &AutoPromptConfig,
) -> Result<PrototypeResult, FewShotError> {
    backend.set_frame(frame)?;
    let t0 = Instant::now();
    let best = {
        let name = backend.name().to_string();
        let e = backend.embedding().ok_or(FewShotError::NoEmbedding(name))?;
        locate(set, frame.data, &e, cfg)?
    };
    let head = t0.elapsed();
    let name_of = |label: u8| {
        set.labels
            .iter()
            .position(|&l| l == label)
            .and_then(|i| set.names.get(i))
            .filter(|n| !n.is_empty())
            .cloned()
            .unwrap_or_else(|| format!("label {label}"))
    };
    let not_found = |seg: Option<Segmentation>| PrototypeResult {
        seg: seg.unwrap_or_else(|| Segmentation {
            width: frame.width,
            height: frame.height,
            mask: vec![0; frame.width * frame.height],
            iou_prediction: None,
        }),
        prompt_box: None,
        structure: StructureState {
            name: match set.names.as_slice() {
                [one] if !one.is_empty() => one.clone(),
                _ => "structure".into(),
            },
            found: false,
            confidence: None,
            head,
        },
    };
    let Some(found) = best else {
        return Ok(not_found(None));
    };
    let seg = backend.segment(&found.prompt)?;
    if seg.area() == 0 {
        let mut r = not_found(Some(seg));
        r.structure.name = name_of(found.label);
        return Ok(r);
    }
    Ok(PrototypeResult {
        seg,
        prompt_box: found.prompt.boxes,
        structure: StructureState {
            name: name_of(found.label),
            found: true,
            confidence: Some(found.mean_probability),
            head,
        },
    })
}

/// Teaches a 1-shot set from the box-prompted mask on `frame`. Returns the mask
/// and the set, or no set when the mask is empty.
pub fn teach_from_box(
    backend: &mut dyn PromptableSegmenter,
    frame: RgbFrame<'_>,
    bbox: BoxPrompt,
    name: &str,
    head: HeadConfig,
) -> Result<(Segmentation, Option<PrototypeSet>), FewShotError> {
    let (mx, my) = ((frame.width - 1) as f32, (frame.height - 1) as f32);
    let b = BoxPrompt {
        x0: bbox.x0.clamp(0.0, mx),
        y0: bbox.y0.clamp(0.0, my),
        x1: bbox.x1.clamp(0.0, mx),
        y1: bbox.y1.clamp(0.0, my),
    };
    backend.set_frame(frame)?;
    let seg = backend.segment(&Prompt::from_box(b))?;
    if seg.area() == 0 || seg.mask.len() != frame.width * frame.height {
        return Ok((seg, None));
    }
    let id = backend
        .embedding_id()
        .ok_or_else(|| FewShotError::NoEmbedding(backend.name().to_string()))?;
    let labels: Vec<u8> = seg.mask.iter().map(|&v| u8::from(v != 0)).collect();
    let set = {
        let e = backend
            .embedding()
            .ok_or_else(|| FewShotError::NoEmbedding(backend.name().to_string()))?;
        teach(
            &[SupportShot {
                embedding: e,
                mask: LabelMask {
                    width: frame.width,
                    height: frame.height,
                    labels: &labels,
                },
            }],
            &[1],
            &[name.to_string()],
            id,
            Modality::of_rgb(frame.data),
            head,
        )?
    };
    Ok((seg, Some(set)))
}

/// The provenance a set taught from the stream records.
pub fn stream_provenance(spec: &TeachSpec, source: &str) -> BTreeMap<String, serde_json::Value> {
    BTreeMap::from([
        (
            "tool".to_string(),
            serde_json::json!(format!("edgeseg {}", env!("CARGO_PKG_VERSION"))),
        ),
        (
            "taught_from".to_string(),
            serde_json::json!({
                "input": source,
                "frame": spec.frame,
                "box": [spec.bbox.x0, spec.bbox.y0, spec.bbox.x1, spec.bbox.y1],
            }),
        ),
    ])
}

/// The pipeline's shared prototype-mode state.
#[derive(Debug)]
pub(crate) struct FewShotState {
    pub(crate) set: Option<Arc<PrototypeSet>>,
    pub(crate) teach: Option<TeachSpec>,
    pub(crate) outcome: TeachOutcome,
    /// The teach frame, handed over by ingest so that the latest-frame mailbox
    /// cannot drop it.
    pub(crate) slot: Option<Arc<Frame>>,
    /// The worker has taken the teach frame and is learning from it.
    pub(crate) teaching: bool,
    pub(crate) prompt: AutoPromptConfig,
    pub(crate) source: String,
}

impl FewShotState {
    pub(crate) fn new(spec: FewShotSpec, source: String) -> Self {
        Self {
            set: spec.support,
            teach: spec.teach,
            outcome: TeachOutcome::NotSeen,
            slot: None,
            teaching: false,
            prompt: spec.prompt,
            source,
        }
    }

    /// Whether frame `id` is to be annotated (so that a missing annotation is
    /// "AI late", not nothing): with `--support` every frame; when teaching,
    /// frames from the teach frame on, unless teaching failed.
    pub(crate) fn active(&self, id: u64) -> bool {
        match &self.teach {
            None => self.set.is_some(),
            Some(t) => {
                id >= t.frame
                    && matches!(
                        self.outcome,
                        TeachOutcome::NotSeen | TeachOutcome::Taught { .. }
                    )
            }
        }
    }

    /// The set to segment frame `id` with, if any.
    pub(crate) fn set_for(&self, id: u64) -> Option<Arc<PrototypeSet>> {
        match &self.teach {
            Some(t) if id <= t.frame => None,
            _ => self.set.clone(),
        }
    }
}
