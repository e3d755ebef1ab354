//! The bundle manifest: JSON, parsed with `deny_unknown_fields` everywhere
//! except the free-form `extra` map.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::SectionKind;

/// What a bundle contains and where it came from. The writer fills
/// [`Manifest::sections`]; whatever the caller put there is replaced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub model: ModelInfo,
    pub architecture: Architecture,
    pub input: InputSpec,
    /// Prompt kinds the decoder accepts.
    pub prompts: Vec<PromptKind>,
    pub outputs: Vec<OutputSpec>,
    /// Quantization per tensor name (tensors absent here are unquantized).
    #[serde(default)]
    pub quantization: BTreeMap<String, Quantization>,
    pub provenance: Provenance,
    /// SHA-256 of every section except the manifest and the signature, in
    /// section-table order. Written by [`super::BundleWriter`]; checked on open.
    #[serde(default)]
    pub sections: Vec<SectionDigest>,
    /// Free-form extension data (not interpreted by the runtime).
    #[serde(default)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelInfo {
    /// e.g. `litemedsam`, `student`.
    pub family: String,
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Architecture {
    /// Human-readable summary, e.g. `TinyViT-5M encoder + SAM mask decoder`.
    pub summary: String,
    pub parameters: u64,
    /// Side length of the image embedding grid, channels, etc.
    #[serde(default)]
    pub details: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    Nchw,
    Nhwc,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Normalization {
    /// No normalization.
    None,
    /// Per-image min–max to [0, 1] (LiteMedSAM).
    MinMax,
    /// `(x - mean) / std` per channel.
    MeanStd { mean: Vec<f32>, std: Vec<f32> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Model input size in pixels (after resize and padding).
    pub height: u32,
    pub width: u32,
    pub channels: u32,
    pub layout: Layout,
    pub normalization: Normalization,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptKind {
    Box,
    Point,
    Mask,
    Prototype,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    pub name: String,
    pub dtype: super::DType,
    /// Shape; `None` entries are dynamic.
    pub shape: Vec<Option<u64>>,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "scheme", rename_all = "snake_case", deny_unknown_fields)]
pub enum Quantization {
    /// One scale and zero point for the whole tensor.
    PerTensor { scale: f32, zero_point: i32 },
    /// One scale (and optionally zero point) per slice along `axis`, stored
    /// as named tensors of the bundle (scales `f32` or `f16`).
    PerChannel {
        axis: u32,
        scales: String,
        #[serde(default)]
        zero_points: Option<String>,
    },
    /// Stored in a reduced float type (f16/bf16), no scale.
    Cast,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// The teacher model this was distilled from, if any.
    #[serde(default)]
    pub teacher: Option<String>,
    #[serde(default)]
    pub training_data: Vec<String>,
    /// The commands that produced the model and the bundle.
    #[serde(default)]
    pub commands: Vec<String>,
    /// Evaluation metrics, e.g. `{"dice_mean": 0.91}`.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
}

/// The recorded digest of one section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SectionDigest {
    pub kind: SectionKind,
    pub name: String,
    pub length: u64,
    /// Lowercase hex SHA-256 of the section bytes.
    pub sha256: String,
}

impl Manifest {
    /// A minimal manifest, handy for tests and as a starting point.
    pub fn minimal(family: &str, name: &str, version: &str) -> Self {
        Manifest {
            model: ModelInfo {
                family: family.into(),
                name: name.into(),
                version: version.into(),
            },
            architecture: Architecture {
                summary: String::new(),
                parameters: 0,
                details: BTreeMap::new(),
            },
            input: InputSpec {
                height: 256,
                width: 256,
                channels: 3,
                layout: Layout::Nchw,
                normalization: Normalization::MinMax,
            },
            prompts: vec![PromptKind::Box],
            outputs: Vec::new(),
            quantization: BTreeMap::new(),
            provenance: Provenance {
                teacher: None,
                training_data: Vec::new(),
                commands: Vec::new(),
                metrics: BTreeMap::new(),
            },
            sections: Vec::new(),
            extra: BTreeMap::new(),
        }
    }
}
