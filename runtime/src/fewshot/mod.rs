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
    /// Digest (hex) of the encoder of the model bundle the prototypes were
    /// computed with ([`encoder_sha256`]), when they came from a bundle. Format
    /// 1.1 and later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder_sha256: Option<String>,
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
            write!(f, " weights sha256 {}", s.get(..12).unwrap_or(s))?;
        }
        if let Some(s) = &self.encoder_sha256 {
            write!(f, " encoder sha256 {}", s.get(..12).unwrap_or(s))?;
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
    /// were computed with. Geometry must always match. When both sides know
    /// their bundle encoder digest, it decides alone (the same encoder gives the
    /// same embedding space whatever the bundle is called); otherwise family,
    /// name and version must match, and the weights hash when both sides know it.
    pub fn check_model(&self, other: &EmbeddingId) -> Result<(), FewShotError> {
        let geometry_differs = self.channels != other.channels
            || self.grid_height != other.grid_height
            || self.grid_width != other.grid_width;
        let same_identity = match (&self.encoder_sha256, &other.encoder_sha256) {
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
            _ => {
                let weights_differ = matches!(
                    (&self.weights_sha256, &other.weights_sha256),
                    (Some(a), Some(b)) if !a.eq_ignore_ascii_case(b)
                );
                self.family == other.family
                    && self.name == other.name
                    && self.version == other.version
                    && !weights_differ
            }
        };
        if geometry_differs || !same_identity {
            return Err(FewShotError::EmbeddingMismatch {
                expected: self.to_string(),
                got: other.to_string(),
            });
        }
        Ok(())
    }

    /// The identity of a bundle's manifest: model family, name and version, and
    /// the embedding geometry when the manifest records it
    /// (`architecture.details.embedding` as `[channels, rows, cols]`, as
    /// `edgeseg-tools export` writes it, or `embedding_channels` and
    /// `embedding_grid` as `[rows, cols]`); `None` for each unrecorded size.
    fn manifest_identity(manifest: &crate::bundle::Manifest) -> (ModelNames, [Option<u32>; 3]) {
        let m = &manifest.model;
        let d = &manifest.architecture.details;
        let num = |v: Option<&serde_json::Value>| {
            v.and_then(|v| v.as_u64())
                .and_then(|v| u32::try_from(v).ok())
        };
        let emb = d.get("embedding").and_then(|v| v.as_array());
        let grid = d.get("embedding_grid").and_then(|v| v.as_array());
        let dims = [
            num(d.get("embedding_channels")).or_else(|| num(emb.and_then(|e| e.first()))),
            num(grid.and_then(|g| g.first())).or_else(|| num(emb.and_then(|e| e.get(1)))),
            num(grid.and_then(|g| g.get(1))).or_else(|| num(emb.and_then(|e| e.get(2)))),
        ];
        (
            ModelNames {
                family: m.family.clone(),
                name: m.name.clone(),
                version: m.version.clone(),
            },
            dims,
        )
    }

    /// Checks a model bundle's manifest against this id: the manifest's model
    /// family, name and version must match, and so must the embedding geometry
    /// when the manifest records it (see [`Self::check_bundle_file`] for the
    /// check that also compares the encoder digest).
    pub fn check_bundle(&self, manifest: &crate::bundle::Manifest) -> Result<(), FewShotError> {
        let (n, [c, h, w]) = Self::manifest_identity(manifest);
        let other = EmbeddingId {
            family: n.family,
            name: n.name,
            version: n.version,
            weights_sha256: None,
            encoder_sha256: None,
            channels: c.unwrap_or(self.channels),
            grid_height: h.unwrap_or(self.grid_height),
            grid_width: w.unwrap_or(self.grid_width),
        };
        self.check_model(&other)
    }

    /// The identity of the embeddings a bundle's encoder produces: the manifest's
    /// model names, its encoder digest ([`encoder_sha256`]), and `dims`
    /// (`[channels, rows, cols]`, e.g. from the backend that runs it) or else the
    /// manifest's recorded geometry. `None` when the bundle has no encoder graph
    /// or the geometry is known from neither.
    pub fn of_bundle(bundle: &crate::bundle::Bundle, dims: Option<[usize; 3]>) -> Option<Self> {
        let (n, recorded) = Self::manifest_identity(bundle.manifest());
        let [c, h, w] = match dims {
            Some(d) => d.map(|v| u32::try_from(v).ok()),
            None => recorded,
        };
        Some(EmbeddingId {
            family: n.family,
            name: n.name,
            version: n.version,
            weights_sha256: None,
            encoder_sha256: Some(encoder_sha256(bundle)?),
            channels: c?,
            grid_height: h?,
            grid_width: w?,
        })
    }

    /// Checks a verified bundle against this id before any frame is run: as
    /// [`Self::check_model`] with the bundle's encoder digest, its manifest's
    /// names, and its recorded geometry (this id's own where the manifest records
    /// none; every query embedding is checked again by [`PrototypeSet::predict`]).
    pub fn check_bundle_file(&self, bundle: &crate::bundle::Bundle) -> Result<(), FewShotError> {
        let (n, [c, h, w]) = Self::manifest_identity(bundle.manifest());
        let other = EmbeddingId {
            family: n.family,
            name: n.name,
            version: n.version,
            weights_sha256: None,
            encoder_sha256: encoder_sha256(bundle),
            channels: c.unwrap_or(self.channels),
            grid_height: h.unwrap_or(self.grid_height),
            grid_width: w.unwrap_or(self.grid_width),
        };
        self.check_model(&other)
    }
}

struct ModelNames {
    family: String,
    name: String,
    version: String,
}

/// Domain-separation prefix of [`encoder_sha256`].
const ENCODER_DIGEST_CONTEXT: &[u8] = b"edgeseg-encoder-digest-v1\0";

/// The digest that identifies a bundle's image encoder (lowercase hex SHA-256):
/// the encoder graph section (`encoder.onnx`) and every tensor-table entry of
/// that graph (`encoder.onnx/…`: name, dtype, shape and bytes, in name order).
/// It does not change when the decoder, the manifest or the signature do, so a
/// prototype set stays valid for a re-signed or re-described bundle and is
/// refused for any other encoder weights. `None` without an encoder graph.
pub fn encoder_sha256(bundle: &crate::bundle::Bundle) -> Option<String> {
    use sha2::{Digest, Sha256};
    let graph_name = crate::backend::cpu::ENCODER_GRAPH;
    let graph = bundle.graph(graph_name)?;
    let mut h = Sha256::new();
    let field = |h: &mut Sha256, b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    h.update(ENCODER_DIGEST_CONTEXT);
    field(&mut h, graph);
    let prefix = format!("{graph_name}/");
    let mut tensors: Vec<_> = bundle
        .tensors()
        .filter(|t| t.name.starts_with(&prefix))
        .collect();
    tensors.sort_by(|a, b| a.name.cmp(b.name));
    for t in tensors {
        field(&mut h, t.name.as_bytes());
        h.update([t.dtype.code()]);
        h.update((t.shape.len() as u64).to_le_bytes());
        for d in t.shape {
            h.update(d.to_le_bytes());
        }
        field(&mut h, t.bytes);
    }
    Some(crate::bundle::hex(&h.finalize()))
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
