//! Few-shot prototype segmentation: teach the device a new structure from 1–5
//! annotated frames, without retraining.
//!
//! The head works on the image embedding the encoder already computes for every
//! frame (SAM-style, `channels × grid × grid`; see [`Embedding`]), in plain Rust:
//!
//! 1. **Teaching** ([`teach`]): each support mask is reduced to the embedding grid
//!    (the fraction of every valid cell covered by each class; padding cells get
//!    weight 0). Masked average pooling over all shots gives one *global*
//!    prototype per class and one for the background (PANet). Pooling over square
//!    windows that a class covers almost entirely gives *local* prototypes
//!    (ALPNet's adaptive local prototypes, for inhomogeneous backgrounds and
//!    structures), reduced by k-means to a few per class. Prototypes are unit
//!    vectors.
//! 2. **Prediction** ([`PrototypeSet::predict`]): every valid grid cell of a query
//!    gets the cosine similarity to every prototype, scaled (×20 by default); the
//!    scores of one class are pooled as `Σ softmax(s)·s`, and a softmax over the
//!    classes gives a [`ProbabilityMap`], upsampled bilinearly to frame size by
//!    [`ProbabilityMap::label_mask`].
//! 3. **Auto-prompting** ([`auto_prompts`]): the largest confident component of
//!    each class gives a box (and its peak a point) in frame pixels, so that the
//!    SAM mask decoder can produce the final mask without a human click
//!    ([`segment_frame`] drives any [`PromptableSegmenter`] that exposes its
//!    embedding). When nothing is confident the result is an explicit
//!    [`ClassPrompt::NotFound`], never a mask.
//! 4. **Storage** ([`file`]): `prototypes.bin`, small, versioned, hashed and
//!    optionally Ed25519-signed like model bundles, recording which model and
//!    embedding geometry the prototypes belong to ([`EmbeddingId`]).
//!
//! Bad input is refused with a [`FewShotError`]: empty support masks, supports
//! whose mask does not match the frame, embeddings of another model or size,
//! non-finite features, zero-norm prototypes, a query of another modality.
//!
//! The numeric primitives are in [`primitives`]; their CUDA counterparts are
//! specified by `edgeseg_kernels::reference::fewshot`.

mod autoprompt;
pub mod file;
mod head;
pub mod primitives;

use serde::{Deserialize, Serialize};

use crate::backend::{BackendError, Embedding, PromptableSegmenter, RgbFrame};

pub use autoprompt::{auto_prompts, AutoPromptConfig, ClassPrompt, FoundStructure};
pub use file::{FormatError, PrototypeFileInfo};
pub use head::{
    teach, HeadConfig, LabelMask, ProbabilityMap, Prototype, PrototypeKind, PrototypeSet,
    SupportShot, MAX_CLASSES, MAX_SHOTS,
};
pub use primitives::PrimitiveError;

/// Why few-shot teaching or prediction failed.
#[derive(Debug, thiserror::Error)]
pub enum FewShotError {
    /// A head setting is out of range, or a set is internally inconsistent.
    #[error("invalid prototype head configuration: {0}")]
    InvalidConfig(String),
    /// An embedding's sizes are inconsistent.
    #[error("invalid embedding: {0}")]
    InvalidEmbedding(String),
    /// Too few or too many support shots.
    #[error("{got} support shots given; 1 to {max} are supported")]
    ShotCount {
        /// Shots given.
        got: usize,
        /// The maximum.
        max: usize,
    },
    /// Too few or too many classes.
    #[error("{got} structures to learn; 1 to {max} are supported")]
    ClassCount {
        /// Classes given.
        got: usize,
        /// The maximum.
        max: usize,
    },
    /// Label 0 was given as a structure.
    #[error("label 0 is the background and cannot be learned as a structure")]
    BackgroundLabel,
    /// A label was given twice.
    #[error("label {0} is given twice")]
    DuplicateLabel(u8),
    /// A support mask does not have its frame's size.
    #[error("support shot {shot}: mask is {mask} but the frame is {frame}")]
    MaskSizeMismatch {
        /// Shot index (0-based).
        shot: usize,
        /// The mask's size.
        mask: String,
        /// The frame's size.
        frame: String,
    },
    /// No support mask holds any pixel of a label.
    #[error(
        "the support masks hold no pixel of label {label}: nothing to learn (empty support mask)"
    )]
    EmptySupport {
        /// The label.
        label: u8,
    },
    /// The support masks cover every frame pixel: no background to learn.
    #[error("the support masks leave no background pixel: the background cannot be learned")]
    EmptyBackground,
    /// A prototype came out with zero (or non-unit) norm.
    #[error("the prototype of label {class} has zero norm (features are all zero there)")]
    ZeroNormPrototype {
        /// The label (0 = background).
        class: u8,
    },
    /// A computation produced NaN or infinity.
    #[error("non-finite values in {0}")]
    NonFinite(String),
    /// A primitive refused its input (bad sizes, non-finite features ...).
    #[error(transparent)]
    Primitive(#[from] PrimitiveError),
    /// The embedding does not come from the model the prototypes were taught with.
    #[error("embedding mismatch: the prototypes were computed with {expected}, this is {got}")]
    EmbeddingMismatch {
        /// What the prototype set records.
        expected: String,
        /// What was given.
        got: String,
    },
    /// The query is another kind of image than the supports.
    #[error(
        "modality mismatch: the prototypes were taught on {support} images, this frame is {query}"
    )]
    ModalityMismatch {
        /// Support modality.
        support: Modality,
        /// Query modality.
        query: Modality,
    },
    /// The backend does not expose its image embedding.
    #[error("backend {0} does not expose its image embedding; few-shot prototypes need it")]
    NoEmbedding(String),
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A prototype file is malformed.
    #[error(transparent)]
    Format(#[from] FormatError),
}

/// The model and embedding geometry a prototype set was computed with. A set is
/// only applied to embeddings of the same model: prototypes are points in one
/// model's feature space and mean nothing in another's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingId {
    /// Model family, as in a bundle manifest (`litemedsam`, `student` ...).
    pub family: String,
    /// Model name.
    pub name: String,
    /// Model version.
    pub version: String,
    /// SHA-256 (hex) of the weights, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_sha256: Option<String>,
    /// Feature channels.
    pub channels: u32,
    /// Embedding grid rows.
    pub grid_height: u32,
    /// Embedding grid columns.
    pub grid_width: u32,
}

impl std::fmt::Display for EmbeddingId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} {} ({}x{}x{})",
            self.family, self.name, self.version, self.channels, self.grid_height, self.grid_width
        )?;
        if let Some(s) = &self.weights_sha256 {
            write!(f, " weights sha256 {}", &s[..s.len().min(12)])?;
        }
        Ok(())
    }
}

impl EmbeddingId {
    /// Checks that an embedding has this id's channels and grid.
    pub fn check_embedding(&self, e: &Embedding<'_>) -> Result<(), FewShotError> {
        if e.channels as u64 != u64::from(self.channels)
            || e.height as u64 != u64::from(self.grid_height)
            || e.width as u64 != u64::from(self.grid_width)
        {
            return Err(FewShotError::EmbeddingMismatch {
                expected: self.to_string(),
                got: format!("an embedding of {}x{}x{}", e.channels, e.height, e.width),
            });
        }
        Ok(())
    }

    /// Checks that `other` (the model about to run) is the model these prototypes
    /// were computed with: same family, name, version and geometry, and the same
    /// weights when both sides know their hash.
    pub fn check_model(&self, other: &EmbeddingId) -> Result<(), FewShotError> {
        let weights_differ = matches!(
            (&self.weights_sha256, &other.weights_sha256),
            (Some(a), Some(b)) if !a.eq_ignore_ascii_case(b)
        );
        if self.family != other.family
            || self.name != other.name
            || self.version != other.version
            || self.channels != other.channels
            || self.grid_height != other.grid_height
            || self.grid_width != other.grid_width
            || weights_differ
        {
            return Err(FewShotError::EmbeddingMismatch {
                expected: self.to_string(),
                got: other.to_string(),
            });
        }
        Ok(())
    }

    /// Checks a model bundle against this id: the manifest's model family, name and
    /// version must match, and so must the embedding geometry when the manifest
    /// records it (`architecture.details.embedding_channels`, and
    /// `embedding_grid` as `[rows, cols]`).
    pub fn check_bundle(&self, manifest: &crate::bundle::Manifest) -> Result<(), FewShotError> {
        let m = &manifest.model;
        let d = &manifest.architecture.details;
        let channels = d
            .get("embedding_channels")
            .and_then(|v| v.as_u64())
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(self.channels);
        let grid = d.get("embedding_grid").and_then(|v| v.as_array());
        let dim = |i: usize, default: u32| {
            grid.and_then(|g| g.get(i))
                .and_then(|v| v.as_u64())
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(default)
        };
        let other = EmbeddingId {
            family: m.family.clone(),
            name: m.name.clone(),
            version: m.version.clone(),
            weights_sha256: None,
            channels,
            grid_height: dim(0, self.grid_height),
            grid_width: dim(1, self.grid_width),
        };
        self.check_model(&other)
    }
}

/// What kind of image the supports were: grey (ultrasound, MRI slices) or colour
/// (endoscopy). A set taught on one is refused on the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Modality {
    /// R = G = B everywhere.
    Grey,
    /// Any other RGB image.
    Colour,
}

impl std::fmt::Display for Modality {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Modality::Grey => "grey",
            Modality::Colour => "colour",
        })
    }
}

impl Modality {
    /// The modality of an interleaved RGB8 buffer: grey when every pixel has
    /// R = G = B.
    pub fn of_rgb(rgb: &[u8]) -> Self {
        if rgb.chunks_exact(3).all(|p| p[0] == p[1] && p[1] == p[2]) {
            Modality::Grey
        } else {
            Modality::Colour
        }
    }
}

impl PrototypeSet {
    /// Refuses a query frame of another modality than the supports.
    pub fn check_modality(&self, query: Modality) -> Result<(), FewShotError> {
        if query != self.modality {
            return Err(FewShotError::ModalityMismatch {
                support: self.modality,
                query,
            });
        }
        Ok(())
    }
}

/// How the final mask of a found structure is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Refinement {
    /// The prototype map itself, upsampled and thresholded (argmax over classes).
    PrototypeOnly,
    /// The auto-prompt (box, optionally the peak point) through the mask decoder.
    Decoder,
}

/// The result for one structure on one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct StructureResult {
    /// The structure's label.
    pub label: u8,
    /// The auto-prompt and its confidence, or `None` when no structure was found.
    pub found: Option<FoundStructure>,
    /// 0/1 mask at frame size; `None` when the structure was not found.
    pub mask: Option<Vec<u8>>,
}

/// Segments every structure of `set` on one frame with `backend`: encode once,
/// prototype map from the backend's embedding, auto-prompts, then per found
/// structure either the prototype mask or one decoder pass.
///
/// The frame's modality must be the supports' one, and the backend must expose
/// its embedding ([`PromptableSegmenter::embedding`]).
pub fn segment_frame(
    backend: &mut dyn PromptableSegmenter,
    set: &PrototypeSet,
    frame: RgbFrame<'_>,
    refinement: Refinement,
    prompt_cfg: &AutoPromptConfig,
) -> Result<Vec<StructureResult>, FewShotError> {
    set.check_modality(Modality::of_rgb(frame.data))?;
    backend.set_frame(frame)?;
    let map = {
        let name = backend.name().to_string();
        let e = backend.embedding().ok_or(FewShotError::NoEmbedding(name))?;
        set.predict(&e)?
    };
    let prompts = auto_prompts(&map, prompt_cfg)?;
    let labels = match refinement {
        Refinement::PrototypeOnly => Some(map.label_mask()),
        Refinement::Decoder => None,
    };
    let mut out = Vec::with_capacity(prompts.len());
    for p in prompts {
        match p {
            ClassPrompt::NotFound { label } => out.push(StructureResult {
                label,
                found: None,
                mask: None,
            }),
            ClassPrompt::Found(f) => {
                let mask = match &labels {
                    Some(l) => l.iter().map(|&v| u8::from(v == f.label)).collect(),
                    None => backend.segment(&f.prompt)?.mask,
                };
                out.push(StructureResult {
                    label: f.label,
                    found: Some(f),
                    mask: Some(mask),
                });
            }
        }
    }
    Ok(out)
}
