//! `edgeseg-tools quantize`: weight-only int8 / f16 / mixed bundles with a measured
//! accuracy guard.
//!
//! * **Form.** The quantized bundle keeps the float graphs; only its tensor table changes.
//!   Weights of `Conv`, `ConvTranspose`, `MatMul` and `Gemm` become symmetric `i8` with
//!   one scale per output channel (tensor `<name>.scale`: `f16`, rounded up, when every scale
//!   of the tensor is a normal `f16`, else `f32`); other large tensors of
//!   rank ≥ 2 (attention-bias tables, positional encodings) `i8` with one scale per row;
//!   the rest (biases, norm parameters) `f16` ([`Candidate::int8_axis`]). The
//!   manifest's `quantization` map records the scheme per tensor, and the runtime
//!   dequantizes exactly at load ([`edgeseg_runtime::quant`]), so tract runs a float
//!   graph and no QDQ operator is involved (tract 0.23.9 reads only the first scale of
//!   some per-channel QDQ forms).
//! * **Calibration and guard.** The float and the quantized bundle both run on the
//!   runtime's tract backend over a folder of frames, with three fixed box prompts per
//!   frame ([`calibration_boxes`]). The single-mask output is compared: mask IoU
//!   (float vs quantized, at frame size), low-resolution logit errors and the
//!   embedding's relative error ([`ErrorStats`]). A bundle that misses the [`Guard`]
//!   (mean IoU, optionally logit error) is refused unless forced; the figures go into
//!   the manifest.
//! * **Activation ranges.** In the int8 modes the activations that int8 weights multiply
//!   are calibrated too ([`crate::actcalib`]: min-max, percentile or MSE clipping, chosen
//!   per tensor by held-out error) and recorded in the manifest for int8-compute
//!   backends; tract's float plan does not use them.
//! * **mixed.** Starting from int8, each int8 weight is quantized alone (everything else
//!   `f16`) and ranked by the logit error it causes; the most sensitive are kept in `f16`
//!   until the guard holds ([`Report::kept`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use edgeseg_kernels::prepost;
use edgeseg_runtime::backend::{
    BackendError, BackendOptions, PromptableSegmenter, RgbFrame, TractSegmenter,
};
use edgeseg_runtime::bundle::{
    Bundle, BundleError, BundleWriter, DType, Quantization, VerifyPolicy,
};
use edgeseg_runtime::onnx_weights::LOCATION;
use edgeseg_runtime::prompt::{BoxPrompt, Prompt};
use edgeseg_runtime::quant::{self, QuantError};
use indicatif::{ProgressBar, ProgressStyle};
use prost::Message;
use serde::Serialize;
use tract_onnx::pb;

/// Suffix of the scale tensor written beside an int8 tensor.
pub const SCALE_SUFFIX: &str = ".scale";
/// Calibration images are decoded only up to this many pixels.
pub const MAX_CALIB_PIXELS: u64 = 8192 * 8192;
/// Calibration images must be at least this many pixels on each side.
pub const MIN_CALIB_SIDE: u32 = 8;
/// Default guard: mean mask IoU (quantized vs float) over the calibration prompts.
pub const DEFAULT_MIN_MEAN_IOU: f64 = 0.98;

/// What to quantize to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// int8 weights (per output channel), f16 for the other float tensors.
    Int8,
    /// f16 for every float tensor.
    F16,
    /// int8, with the most sensitive weights kept in f16 until the guard holds.
    Mixed,
}

/// How one tensor is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Unchanged.
    F32,
    /// `f16` (`cast`).
    F16,
    /// Symmetric `i8` per output channel (`per_channel`).
    Int8,
}

/// Why quantization failed or was refused.
#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    /// The input bundle does not open or verify.
    #[error("bundle {path}: {source}")]
    Bundle {
        /// The bundle.
        path: PathBuf,
        /// Why.
        source: BundleError,
    },
    /// The input bundle is not a float bundle this tool can quantize.
    #[error("bundle {path} cannot be quantized: {reason}")]
    Unsupported {
        /// The bundle.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A tensor cannot be quantized (NaN weights, out of range ...).
    #[error(transparent)]
    Quant(#[from] QuantError),
    /// The calibration folder cannot be listed.
    #[error("calibration folder {path}: {source}")]
    CalibrationDir {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The calibration folder holds no image.
    #[error("calibration folder {path} holds no .png/.jpg/.jpeg image ({skipped} other entries)")]
    EmptyCalibration {
        /// The folder.
        path: PathBuf,
        /// Entries that are not images.
        skipped: usize,
    },
    /// The activation ranges cannot be calibrated (a graph does not run with its
    /// activations as outputs, or an activation is not finite).
    #[error("activation calibration: {reason}")]
    Activations {
        /// Why.
        reason: String,
    },
    /// A calibration image cannot be decoded.
    #[error("calibration image {path} is unreadable: {reason}")]
    UnreadableImage {
        /// The image.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A calibration image decodes but cannot serve as a frame.
    #[error("calibration image {path} is unusable: {reason}")]
    UnusableImage {
        /// The image.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A model could not be opened or run.
    #[error("{what}: {source}")]
    Backend {
        /// Which model and where.
        what: String,
        /// Why.
        source: BackendError,
    },
    /// The quantized bundle could not be built or written.
    #[error("writing the quantized bundle: {0}")]
    Write(BundleError),
    /// The measured error is above the guard (and not forced).
    #[error("refused: on the calibration set {measured}, the guard is {guard}; use --force to write it anyway{hint}")]
    BelowThreshold {
        /// The measured figures, in words.
        measured: String,
        /// The guard, in words.
        guard: String,
        /// A suggestion.
        hint: String,
    },
}

/// The accuracy guard: what a quantized bundle must reach on the calibration set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Guard {
    /// Minimum mean mask IoU (quantized vs float).
    pub min_mean_iou: f64,
    /// Maximum logit relative RMS error, if any.
    pub max_logit_rel_rms: Option<f64>,
}

impl Default for Guard {
    fn default() -> Self {
        Self {
            min_mean_iou: DEFAULT_MIN_MEAN_IOU,
            max_logit_rel_rms: None,
        }
    }
}

impl Guard {
    /// Whether `e` satisfies the guard.
    pub fn holds(&self, e: &ErrorStats) -> bool {
        e.mean_iou >= self.min_mean_iou
            && self.max_logit_rel_rms.is_none_or(|m| e.logit_rel_rms <= m)
    }

    fn describe(&self) -> String {
        match self.max_logit_rel_rms {
            Some(m) => format!(
                "mean IoU ≥ {} and logit relative RMS error ≤ {m}",
                self.min_mean_iou
            ),
            None => format!("mean IoU ≥ {}", self.min_mean_iou),
        }
    }

    fn check(&self) -> Result<(), String> {
        if !(self.min_mean_iou.is_finite() && (0.0..=1.0).contains(&self.min_mean_iou)) {
            return Err(format!(
                "the IoU threshold {} is not in [0, 1]",
                self.min_mean_iou
            ));
        }
        if let Some(m) = self.max_logit_rel_rms {
            if !(m.is_finite() && m >= 0.0) {
                return Err(format!(
                    "the logit error threshold {m} is not a non-negative number"
                ));
            }
        }
        Ok(())
    }
}

/// A float tensor of the bundle that the quantizer may change.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    /// Name in the tensor table (`<graph>/<initializer>`).
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// The output-channel axis when the tensor is only used as the weight of `Conv`,
    /// `ConvTranspose`, `MatMul` or `Gemm` (then it may become int8).
    pub weight_axis: Option<usize>,
    /// The axis of its int8 scales: `weight_axis` for weights; for other tensors of
    /// rank ≥ 2 with at least [`INT8_MIN_ELEMENTS`] elements (attention-bias tables,
    /// positional encodings) the second-to-last axis (one scale per row); `None` keeps
    /// it in f16 (biases, norms).
    pub int8_axis: Option<usize>,
    /// Operator types that read it.
    pub consumers: Vec<String>,
}

/// Tensors that are not weights go to int8 from this many elements on.
pub const INT8_MIN_ELEMENTS: usize = 1024;

fn attr_int(node: &pb::NodeProto, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

/// The output-channel axis of an initializer of rank `rank` used as input `index` of
/// `node`, or `None` when it is not a weight this tool quantizes to int8.
fn weight_axis(node: &pb::NodeProto, index: usize, rank: usize) -> Option<usize> {
    if rank < 2 {
        return None;
    }
    match (node.op_type.as_str(), index) {
        ("Conv", 1) => Some(0),
        ("ConvTranspose", 1) => Some(1),
        ("MatMul", 1) => Some(rank - 1),
        ("MatMul", 0) => Some(rank - 2),
        ("Gemm", 1) if rank == 2 => Some(if attr_int(node, "transB") == Some(1) {
            0
        } else {
            1
        }),
        _ => None,
    }
}

/// Lists the float tensors of `bundle`'s graphs that live in its tensor table, with
/// the operators that read them.
pub fn candidates(bundle: &Bundle, path: &Path) -> Result<Vec<Candidate>, QuantizeError> {
    let unsupported = |reason: String| QuantizeError::Unsupported {
        path: path.to_path_buf(),
        reason,
    };
    let mut out = Vec::new();
    for graph in bundle.graph_names() {
        let bytes = bundle.graph(graph).unwrap_or_default();
        let model = pb::ModelProto::decode(bytes)
            .map_err(|e| unsupported(format!("graph `{graph}` is not ONNX: {e}")))?;
        let Some(g) = model.graph.as_ref() else {
            continue;
        };
        // initializer name → (tensor-table name, shape)
        let mut external: BTreeMap<&str, (String, Vec<usize>)> = BTreeMap::new();
        for init in &g.initializer {
            if init.data_location != Some(pb::tensor_proto::DataLocation::External as i32) {
                continue;
            }
            let field = |k: &str| {
                init.external_data
                    .iter()
                    .find(|e| e.key == k)
                    .map(|e| e.value.clone())
            };
            if field("location").as_deref() != Some(LOCATION) {
                continue;
            }
            let Some(tensor) = field("tensor") else {
                continue;
            };
            let shape: Vec<usize> = init
                .dims
                .iter()
                .map(|&d| usize::try_from(d))
                .collect::<Result<_, _>>()
                .map_err(|_| {
                    unsupported(format!("initializer `{}` has a negative dim", init.name))
                })?;
            external.insert(init.name.as_str(), (tensor, shape));
        }
        let mut uses: BTreeMap<&str, Vec<(String, Option<usize>)>> = BTreeMap::new();
        for node in &g.node {
            for (i, input) in node.input.iter().enumerate() {
                if let Some((_, shape)) = external.get(input.as_str()) {
                    uses.entry(input.as_str())
                        .or_default()
                        .push((node.op_type.clone(), weight_axis(node, i, shape.len())));
                }
            }
        }
        for (init, (tensor, shape)) in external {
            let u = uses.remove(init).unwrap_or_default();
            let first = u.first().and_then(|(_, a)| *a);
            let axis = first.filter(|a| u.iter().all(|(_, b)| *b == Some(*a)));
            let rank = shape.len();
            let elements = shape.iter().product::<usize>();
            let int8_axis = axis.or((rank >= 2 && elements >= INT8_MIN_ELEMENTS).then(|| rank - 2));
            out.push(Candidate {
                name: tensor,
                shape,
                weight_axis: axis,
                int8_axis,
                consumers: u.into_iter().map(|(op, _)| op).collect(),
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Stored per-channel scales: `f16` where every scale of the tensor is exactly a
/// normal `f16` (half the bytes), else `f32`; `(type, little-endian bytes)`.
type ScaleBytes = (DType, Vec<u8>);

/// One tensor prepared in every precision it may take.
struct Prepared {
    name: String,
    shape: Vec<u64>,
    f32_bytes: Vec<u8>,
    f16_bytes: Option<Vec<u8>>,
    /// `(axis, values, scales)`.
    int8: Option<(usize, Vec<u8>, ScaleBytes)>,
}

/// The float bundle, its candidates prepared, ready to build any plan.
pub struct Quantizer {
    path: PathBuf,
    bundle: Bundle,
    candidates: Vec<Candidate>,
    prepared: BTreeMap<String, Prepared>,
    /// Tensors that stay f32 because f16 cannot hold them.
    f16_out_of_range: Vec<String>,
}

impl std::fmt::Debug for Quantizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quantizer")
            .field("path", &self.path)
            .field("candidates", &self.candidates.len())
            .finish_non_exhaustive()
    }
}

/// A precision for every candidate tensor (absent: f32).
pub type Plan = BTreeMap<String, Precision>;

impl Quantizer {
    /// Opens the float bundle at `path` and prepares its tensors.
    pub fn open(path: &Path, policy: &VerifyPolicy) -> Result<Self, QuantizeError> {
        let bundle = Bundle::open(path, policy).map_err(|source| QuantizeError::Bundle {
            path: path.to_path_buf(),
            source,
        })?;
        let unsupported = |reason: String| QuantizeError::Unsupported {
            path: path.to_path_buf(),
            reason,
        };
        if !bundle.manifest().quantization.is_empty() {
            return Err(unsupported(format!(
                "it is already quantized ({} tensors); quantize the float bundle instead",
                bundle.manifest().quantization.len()
            )));
        }
        let candidates = candidates(&bundle, path)?;
        if candidates.is_empty() {
            return Err(unsupported(
                "its graphs keep no weight in the tensor table".into(),
            ));
        }
        let mut prepared = BTreeMap::new();
        let mut f16_out_of_range = Vec::new();
        for c in &candidates {
            let view = bundle
                .tensor(&c.name)
                .ok_or_else(|| unsupported(format!("tensor `{}` is missing", c.name)))?;
            if view.dtype != DType::F32 {
                return Err(unsupported(format!(
                    "tensor `{}` is {:?}, not f32",
                    c.name, view.dtype
                )));
            }
            let values = quant::dequantize(&view, None, |_| None)?;
            let f16_bytes = match quant::f32_to_f16(&c.name, &values) {
                Ok(h) => Some(h.iter().flat_map(|x| x.to_le_bytes()).collect()),
                Err(_) => {
                    f16_out_of_range.push(c.name.clone());
                    None
                }
            };
            let int8 = match c.int8_axis {
                Some(axis) => {
                    let q = quant::quantize_i8_per_channel(&c.name, &values, &c.shape, axis)?;
                    let scales = if q.scales_fit_f16 {
                        (DType::F16, quant::f16_le_bytes(&q.scales))
                    } else {
                        (DType::F32, quant::f32_le_bytes(&q.scales))
                    };
                    Some((axis, q.values.iter().map(|&v| v as u8).collect(), scales))
                }
                None => None,
            };
            let scale_name = format!("{}{SCALE_SUFFIX}", c.name);
            if int8.is_some() && bundle.tensor(&scale_name).is_some() {
                return Err(unsupported(format!(
                    "tensor `{scale_name}` already exists; the scale of `{}` cannot be stored",
                    c.name
                )));
            }
            prepared.insert(
                c.name.clone(),
                Prepared {
                    name: c.name.clone(),
                    shape: view.shape.to_vec(),
                    f32_bytes: view.bytes.to_vec(),
                    f16_bytes,
                    int8,
                },
            );
        }
        Ok(Self {
            path: path.to_path_buf(),
            bundle,
            candidates,
            prepared,
            f16_out_of_range,
        })
    }

    /// The float bundle.
    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// The tensors that may change.
    pub fn candidates(&self) -> &[Candidate] {
        &self.candidates
    }

    /// Tensors that stay f32 because a value lies outside the f16 range.
    pub fn f16_out_of_range(&self) -> &[String] {
        &self.f16_out_of_range
    }

    /// The plan of `mode` before any sensitivity analysis: int8 for weights, f16 for the
    /// rest (`int8`, `mixed`) or f16 everywhere (`f16`); f32 where f16 overflows.
    pub fn base_plan(&self, mode: Mode) -> Plan {
        self.candidates
            .iter()
            .map(|c| {
                let p = &self.prepared[&c.name];
                let precision = match mode {
                    Mode::Int8 | Mode::Mixed if p.int8.is_some() => Precision::Int8,
                    _ if p.f16_bytes.is_some() => Precision::F16,
                    _ => Precision::F32,
                };
                (c.name.clone(), precision)
            })
            .collect()
    }

    /// A writer for the quantized bundle of `plan` with `extra_manifest` applied to the
    /// manifest (the float bundle's manifest with the quantization map filled).
    pub fn writer(
        &self,
        plan: &Plan,
        extra_manifest: impl FnOnce(&mut edgeseg_runtime::bundle::Manifest),
    ) -> Result<BundleWriter, QuantizeError> {
        let mut manifest = self.bundle.manifest().clone();
        let mut tensors: Vec<(String, DType, Vec<u64>, Vec<u8>)> = Vec::new();
        for t in self.bundle.tensors() {
            let (Some(p), Some(&precision)) = (self.prepared.get(t.name), plan.get(t.name)) else {
                tensors.push((t.name.into(), t.dtype, t.shape.to_vec(), t.bytes.to_vec()));
                continue;
            };
            match (precision, &p.f16_bytes, &p.int8) {
                (Precision::Int8, _, Some((axis, values, (scale_type, scales)))) => {
                    let scale_name = format!("{}{SCALE_SUFFIX}", p.name);
                    let channels = p.shape.get(*axis).copied().unwrap_or(0);
                    tensors.push((p.name.clone(), DType::I8, p.shape.clone(), values.clone()));
                    tensors.push((
                        scale_name.clone(),
                        *scale_type,
                        vec![channels],
                        scales.clone(),
                    ));
                    manifest.quantization.insert(
                        p.name.clone(),
                        Quantization::PerChannel {
                            axis: *axis as u32,
                            scales: scale_name,
                            zero_points: None,
                        },
                    );
                }
                (Precision::F16, Some(h), _) => {
                    tensors.push((p.name.clone(), DType::F16, p.shape.clone(), h.clone()));
                    manifest
                        .quantization
                        .insert(p.name.clone(), Quantization::Cast);
                }
                (Precision::F32, _, _) => {
                    tensors.push((
                        p.name.clone(),
                        DType::F32,
                        p.shape.clone(),
                        p.f32_bytes.clone(),
                    ));
                }
                (other, _, _) => {
                    return Err(QuantizeError::Unsupported {
                        path: self.path.clone(),
                        reason: format!("tensor `{}` cannot be stored as {other:?}", p.name),
                    })
                }
            }
        }
        extra_manifest(&mut manifest);
        let mut w = BundleWriter::new(manifest);
        for g in self.bundle.graph_names() {
            w = w.graph(g, self.bundle.graph(g).unwrap_or_default().to_vec());
        }
        for (name, dtype, shape, bytes) in tensors {
            w = w.tensor(name, dtype, &shape, bytes);
        }
        Ok(w)
    }

    /// The quantized bundle of `plan`, in memory (verified by the writer).
    pub fn build(&self, plan: &Plan) -> Result<Bundle, QuantizeError> {
        let bytes = self
            .writer(plan, |_| {})?
            .to_bytes()
            .map_err(QuantizeError::Write)?;
        Bundle::from_bytes(&bytes, &VerifyPolicy::integrity_only()).map_err(QuantizeError::Write)
    }
}

/// One calibration frame.
#[derive(Debug, Clone)]
pub struct CalibImage {
    /// Where it came from.
    pub path: PathBuf,
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// RGB8, interleaved.
    pub rgb: Vec<u8>,
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

/// Reads the `.png`/`.jpg`/`.jpeg` files of `dir` (not recursive, sorted by name; at
/// most `limit`, spread evenly over the sorted list) as RGB8 frames. Grey and 16-bit
/// images are converted to RGB8 as the runtime's sources do. Errors name the file.
pub fn load_calibration(
    dir: &Path,
    limit: Option<usize>,
) -> Result<Vec<CalibImage>, QuantizeError> {
    let dir_err = |source| QuantizeError::CalibrationDir {
        path: dir.to_path_buf(),
        source,
    };
    let mut paths = Vec::new();
    let mut skipped = 0usize;
    for entry in std::fs::read_dir(dir).map_err(dir_err)? {
        let p = entry.map_err(dir_err)?.path();
        if p.is_file() && is_image(&p) {
            paths.push(p);
        } else {
            skipped += 1;
        }
    }
    if paths.is_empty() {
        return Err(QuantizeError::EmptyCalibration {
            path: dir.to_path_buf(),
            skipped,
        });
    }
    paths.sort();
    if let Some(n) = limit.filter(|&n| n > 0 && n < paths.len()) {
        let len = paths.len();
        paths = (0..n).map(|i| paths[i * len / n].clone()).collect();
    }
    paths.iter().map(|p| load_one(p)).collect()
}

fn load_one(path: &Path) -> Result<CalibImage, QuantizeError> {
    let unreadable = |reason: String| QuantizeError::UnreadableImage {
        path: path.to_path_buf(),
        reason,
    };
    let unusable = |reason: String| QuantizeError::UnusableImage {
        path: path.to_path_buf(),
        reason,
    };
    let reader = image::ImageReader::open(path)
        .map_err(|e| unreadable(e.to_string()))?
        .with_guessed_format()
        .map_err(|e| unreadable(e.to_string()))?;
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| unreadable(e.to_string()))?;
    if w < MIN_CALIB_SIDE || h < MIN_CALIB_SIDE {
        return Err(unusable(format!(
            "{w}x{h} is smaller than {MIN_CALIB_SIDE} pixels on a side"
        )));
    }
    if u64::from(w) * u64::from(h) > MAX_CALIB_PIXELS {
        return Err(unusable(format!(
            "{w}x{h} exceeds {MAX_CALIB_PIXELS} pixels"
        )));
    }
    let img = image::ImageReader::open(path)
        .map_err(|e| unreadable(e.to_string()))?
        .with_guessed_format()
        .map_err(|e| unreadable(e.to_string()))?
        .decode()
        .map_err(|e| unreadable(e.to_string()))?
        .to_rgb8();
    let rgb = img.into_raw();
    if rgb.iter().all(|&v| v == rgb[0]) {
        return Err(unusable(
            "every pixel has the same value (a constant frame carries no calibration signal)"
                .into(),
        ));
    }
    Ok(CalibImage {
        path: path.to_path_buf(),
        width: w as usize,
        height: h as usize,
        rgb,
    })
}

/// The three box prompts used on every calibration frame: the central half, a box in
/// the upper-left part, and one in the lower-right part (inclusive pixel corners).
pub fn calibration_boxes(width: usize, height: usize) -> [BoxPrompt; 3] {
    let (w, h) = (width as f32, height as f32);
    let b = |x0: f32, y0: f32, x1: f32, y1: f32| BoxPrompt {
        x0: (x0 * w).floor(),
        y0: (y0 * h).floor(),
        x1: (x1 * w).floor().min(w - 1.0),
        y1: (y1 * h).floor().min(h - 1.0),
    };
    [
        b(0.25, 0.25, 0.75, 0.75),
        b(0.1, 0.1, 0.5, 0.55),
        b(0.45, 0.4, 0.9, 0.9),
    ]
}

/// A model's outputs on the calibration set.
#[derive(Debug, Clone)]
pub struct Outputs {
    /// Per frame: the embedding.
    embeddings: Vec<Vec<f32>>,
    /// Per frame and prompt: the single-mask low-res logits.
    logits: Vec<Vec<f32>>,
    /// Per frame and prompt: the mask at frame size.
    masks: Vec<Vec<u8>>,
}

fn bar(len: usize, what: &str, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len as u64);
    b.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({elapsed} < {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    b.set_message(what.to_string());
    b
}

/// Runs `bundle` (called `what` in errors) over `images`.
pub fn run_outputs(
    bundle: &Bundle,
    what: &str,
    images: &[CalibImage],
    options: &BackendOptions,
    show_progress: bool,
) -> Result<Outputs, QuantizeError> {
    let backend_err = |what: String| move |source| QuantizeError::Backend { what, source };
    let mut model = TractSegmenter::from_bundle(bundle, options)
        .map_err(backend_err(format!("opening the {what} bundle")))?;
    let mut out = Outputs {
        embeddings: Vec::new(),
        logits: Vec::new(),
        masks: Vec::new(),
    };
    let pb = bar(images.len(), what, show_progress);
    for im in images {
        let on = |step: &str| format!("{what} bundle, {step} {}", im.path.display());
        let frame =
            RgbFrame::new(im.width, im.height, &im.rgb).map_err(backend_err(on("frame")))?;
        model
            .set_frame(frame)
            .map_err(backend_err(on("encoding")))?;
        let emb = model
            .embedding()
            .map(|e| e.data.to_vec())
            .unwrap_or_default();
        out.embeddings.push(emb);
        let prep = prepost::preprocess_rgb(&im.rgb, im.height, im.width).map_err(|e| {
            QuantizeError::UnusableImage {
                path: im.path.clone(),
                reason: e.to_string(),
            }
        })?;
        for b in calibration_boxes(im.width, im.height) {
            let (coords, labels) = model
                .sam_points(&Prompt::from_box(b))
                .map_err(backend_err(on("prompting")))?;
            let (logits, iou) = model
                .decode_points(&coords, &labels)
                .map_err(backend_err(on("decoding")))?;
            let plane = logits.len() / iou.len().max(1);
            let single = logits[..plane].to_vec();
            let mask =
                prepost::postprocess_mask(&single, &prep).map_err(|e| QuantizeError::Backend {
                    what: on("postprocessing"),
                    source: BackendError::Inference(e.to_string()),
                })?;
            out.logits.push(single);
            out.masks.push(mask);
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(out)
}

/// How far a quantized model's outputs are from the float model's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ErrorStats {
    /// Frames.
    pub images: usize,
    /// Prompts (frames × boxes).
    pub prompts: usize,
    /// Mean mask IoU, quantized vs float (1 when both masks are empty).
    pub mean_iou: f64,
    /// Worst mask IoU.
    pub min_iou: f64,
    /// Fraction of low-res logits whose sign (mask decision) differs.
    pub logit_sign_flips: f64,
    /// Mean absolute logit error.
    pub logit_mae: f64,
    /// Largest absolute logit error.
    pub logit_max_abs: f64,
    /// RMS logit error / RMS float logit.
    pub logit_rel_rms: f64,
    /// RMS embedding error / RMS float embedding.
    pub embedding_rel_rms: f64,
}

fn iou(a: &[u8], b: &[u8]) -> f64 {
    let (mut inter, mut union) = (0u64, 0u64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x != 0, y != 0);
        inter += u64::from(x && y);
        union += u64::from(x || y);
    }
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

/// Compares `quantized` with the `float` reference.
pub fn compare(float: &Outputs, quantized: &Outputs) -> ErrorStats {
    let ious: Vec<f64> = float
        .masks
        .iter()
        .zip(&quantized.masks)
        .map(|(a, b)| iou(a, b))
        .collect();
    let (mut se, mut sr, mut ae, mut max, mut n, mut flips) = (0f64, 0f64, 0f64, 0f64, 0u64, 0u64);
    for (a, b) in float.logits.iter().zip(&quantized.logits) {
        for (&x, &y) in a.iter().zip(b) {
            let d = f64::from(x) - f64::from(y);
            se += d * d;
            sr += f64::from(x) * f64::from(x);
            ae += d.abs();
            max = max.max(d.abs());
            flips += u64::from((x > 0.0) != (y > 0.0));
            n += 1;
        }
    }
    let (mut ee, mut er) = (0f64, 0f64);
    for (a, b) in float.embeddings.iter().zip(&quantized.embeddings) {
        for (&x, &y) in a.iter().zip(b) {
            let d = f64::from(x) - f64::from(y);
            ee += d * d;
            er += f64::from(x) * f64::from(x);
        }
    }
    let rel = |e: f64, r: f64| if r > 0.0 { (e / r).sqrt() } else { e.sqrt() };
    let nf = n.max(1) as f64;
    ErrorStats {
        images: float.embeddings.len(),
        prompts: ious.len(),
        mean_iou: ious.iter().sum::<f64>() / ious.len().max(1) as f64,
        min_iou: ious.iter().copied().fold(1.0, f64::min),
        logit_sign_flips: flips as f64 / nf,
        logit_mae: ae / nf,
        logit_max_abs: max,
        logit_rel_rms: rel(se, sr),
        embedding_rel_rms: rel(ee, er),
    }
}

/// A tensor kept in higher precision by `mixed`, with the error it caused alone.
#[derive(Debug, Clone, Serialize)]
pub struct Kept {
    /// Tensor name.
    pub tensor: String,
    /// Its precision in the output.
    pub precision: Precision,
    /// Logit relative RMS error with only this tensor int8.
    pub sensitivity_logit_rel_rms: f64,
    /// Mean IoU with only this tensor int8.
    pub sensitivity_mean_iou: f64,
}

/// What `quantize` did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The mode.
    pub mode: Mode,
    /// Tensors per precision.
    pub counts: BTreeMap<String, usize>,
    /// Measured error of the written bundle.
    pub error: ErrorStats,
    /// The guard.
    pub guard: Guard,
    /// Whether the guard was overridden.
    pub forced: bool,
    /// `mixed`: tensors kept above int8, most sensitive first.
    pub kept: Vec<Kept>,
    /// `mixed`: tensors the bisection kept above int8 that went back to int8 with the
    /// guard still holding (the size-aware step), in the order tried.
    pub given_back: Vec<String>,
    /// Tensors that stay f32 because f16 cannot hold them.
    pub f16_out_of_range: Vec<String>,
    /// Bytes of the float bundle.
    pub float_bytes: u64,
    /// Bytes of the quantized bundle.
    pub quantized_bytes: u64,
    /// Calibration frames used.
    pub calibration: Vec<String>,
    /// int8 modes: the calibrated activation ranges (recorded in the manifest for
    /// int8-compute backends; tract's float plan does not use them).
    pub activations: Vec<crate::actcalib::ActivationRange>,
}

/// Options of [`quantize`].
#[derive(Debug, Clone)]
pub struct QuantizeOptions {
    /// Float input bundle.
    pub bundle: PathBuf,
    /// Calibration image folder.
    pub calib: PathBuf,
    /// Use at most this many calibration images.
    pub calib_limit: Option<usize>,
    /// `mixed`: use only this many of them for the per-tensor sensitivity runs.
    pub sensitivity_images: Option<usize>,
    /// `mixed`: after the bisection, try at most this many kept tensors back in int8
    /// (most bytes saved per unit of sensitivity first), keeping each that leaves the
    /// guard holding.
    pub give_back: usize,
    /// The mode.
    pub mode: Mode,
    /// Output bundle.
    pub out: PathBuf,
    /// The accuracy guard.
    pub guard: Guard,
    /// Write even below the guard.
    pub force: bool,
    /// Verification policy for the input.
    pub verify: VerifyPolicy,
    /// Threads for the tract runs.
    pub threads: usize,
    /// Sign the output with this key.
    pub signing_key: Option<ed25519_dalek::SigningKey>,
    /// The command line, recorded in the manifest.
    pub command: String,
    /// Show progress bars.
    pub progress: bool,
}

fn counts(plan: &Plan) -> BTreeMap<String, usize> {
    let mut c = BTreeMap::new();
    for p in plan.values() {
        let k = match p {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Int8 => "int8",
        };
        *c.entry(k.to_string()).or_insert(0) += 1;
    }
    c
}

/// Quantizes, measures, guards and writes (see the module doc). Returns the report of
/// the written bundle; below the guard it returns [`QuantizeError::BelowThreshold`]
/// unless `force`.
pub fn quantize(opts: &QuantizeOptions) -> Result<Report, QuantizeError> {
    opts.guard
        .check()
        .map_err(|reason| QuantizeError::Unsupported {
            path: opts.bundle.clone(),
            reason,
        })?;
    let same_file = match (opts.bundle.canonicalize(), opts.out.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same_file {
        return Err(QuantizeError::Unsupported {
            path: opts.bundle.clone(),
            reason: "--out is the input bundle; write the quantized bundle to a new file".into(),
        });
    }
    let images = load_calibration(&opts.calib, opts.calib_limit)?;
    let q = Quantizer::open(&opts.bundle, &opts.verify)?;
    let options = BackendOptions {
        threads: opts.threads,
        verify: VerifyPolicy::integrity_only(),
        ..BackendOptions::default()
    };
    let reference = run_outputs(q.bundle(), "float", &images, &options, opts.progress)?;
    let measure = |plan: &Plan, what: &str, imgs: &[CalibImage], refs: &Outputs| {
        let b = q.build(plan)?;
        let out = run_outputs(&b, what, imgs, &options, opts.progress)?;
        Ok::<_, QuantizeError>(compare(refs, &out))
    };
    let mut plan = q.base_plan(opts.mode);
    let mut error = measure(&plan, "quantized", &images, &reference)?;
    let mut kept = Vec::new();
    let mut given_back = Vec::new();
    if opts.mode == Mode::Mixed && !opts.guard.holds(&error) {
        // sensitivity of each int8 weight alone (the rest f16), on a subset
        let sub: Vec<CalibImage> = match opts.sensitivity_images {
            Some(n) if n > 0 && n < images.len() => (0..n)
                .map(|i| images[i * images.len() / n].clone())
                .collect(),
            _ => images.clone(),
        };
        let sub_ref = run_outputs(q.bundle(), "float (subset)", &sub, &options, false)?;
        let f16_plan = q.base_plan(Mode::F16);
        let int8: Vec<String> = plan
            .iter()
            .filter(|(_, p)| **p == Precision::Int8)
            .map(|(n, _)| n.clone())
            .collect();
        let pb = bar(int8.len(), "sensitivity", opts.progress);
        let mut ranked = Vec::new();
        for name in &int8 {
            let mut p = f16_plan.clone();
            p.insert(name.clone(), Precision::Int8);
            let e = measure(&p, &format!("sensitivity of {name}"), &sub, &sub_ref)?;
            ranked.push((name.clone(), e));
            pb.inc(1);
        }
        pb.finish_and_clear();
        ranked.sort_by(|a, b| b.1.logit_rel_rms.total_cmp(&a.1.logit_rel_rms));
        // keep the k most sensitive in f16: k = 1, 2, 4, ... until the guard holds,
        // then the smallest k in the last interval (bisection)
        let plan_keeping = |k: usize| {
            let mut p = plan.clone();
            for (n, _) in ranked.iter().take(k) {
                p.insert(n.clone(), q.base_plan(Mode::F16)[n]);
            }
            p
        };
        let mut lo = 0usize; // fails
        let mut hi = None;
        let mut k = 1usize;
        let mut best: Option<(usize, ErrorStats)> = None;
        while k <= ranked.len() {
            let e = measure(
                &plan_keeping(k),
                &format!("keeping {k} in f16"),
                &images,
                &reference,
            )?;
            if opts.guard.holds(&e) {
                hi = Some(k);
                best = Some((k, e));
                break;
            }
            lo = k;
            if k == ranked.len() {
                break;
            }
            k = (k * 2).min(ranked.len());
        }
        if let Some(mut h) = hi {
            while h - lo > 1 {
                let mid = lo + (h - lo) / 2;
                let e = measure(
                    &plan_keeping(mid),
                    &format!("keeping {mid} in f16"),
                    &images,
                    &reference,
                )?;
                if opts.guard.holds(&e) {
                    h = mid;
                    best = Some((mid, e));
                } else {
                    lo = mid;
                }
            }
        }
        let (k, e) = match best {
            Some(b) => b,
            None => (
                ranked.len(),
                measure(&plan_keeping(ranked.len()), "all f16", &images, &reference)?,
            ),
        };
        plan = plan_keeping(k);
        error = e;
        // size-aware step: the kept tensors that save the most bytes per unit of
        // sensitivity go back to int8, one at a time, while the guard still holds
        if opts.guard.holds(&error) && opts.give_back > 0 {
            let elements: BTreeMap<&str, usize> = q
                .candidates()
                .iter()
                .map(|c| (c.name.as_str(), c.shape.iter().product()))
                .collect();
            let mut order: Vec<(String, f64)> = ranked
                .iter()
                .take(k)
                .map(|(n, e)| {
                    // f16 → int8 saves one byte per element (the scales are small)
                    let saved = elements.get(n.as_str()).copied().unwrap_or(0) as f64;
                    (n.clone(), saved / e.logit_rel_rms.max(1e-12))
                })
                .collect();
            order.sort_by(|a, b| b.1.total_cmp(&a.1));
            for (name, _) in order.into_iter().take(opts.give_back) {
                let mut p = plan.clone();
                p.insert(name.clone(), Precision::Int8);
                let e = measure(&p, &format!("{name} back in int8"), &images, &reference)?;
                if opts.guard.holds(&e) {
                    plan = p;
                    error = e;
                    given_back.push(name);
                }
            }
        }
        kept = ranked
            .iter()
            .take(k)
            .filter(|(n, _)| !given_back.contains(n))
            .map(|(n, e)| Kept {
                tensor: n.clone(),
                precision: plan[n],
                sensitivity_logit_rel_rms: e.logit_rel_rms,
                sensitivity_mean_iou: e.mean_iou,
            })
            .collect();
    }
    let holds = opts.guard.holds(&error);
    if !holds && !opts.force {
        return Err(QuantizeError::BelowThreshold {
            measured: format!(
                "mean mask IoU {:.4} (worst {:.4}) and logit relative RMS error {:.4}",
                error.mean_iou, error.min_iou, error.logit_rel_rms
            ),
            guard: opts.guard.describe(),
            hint: match opts.mode {
                Mode::Int8 => "; --mode mixed keeps the most sensitive weights in f16".into(),
                Mode::Mixed => " (even with every weight in f16)".into(),
                Mode::F16 => String::new(),
            },
        });
    }
    let activations = if opts.mode == Mode::F16 {
        Vec::new()
    } else {
        let pb = bar(images.len(), "activation ranges", opts.progress);
        crate::actcalib::calibrate(q.bundle(), &images, &options, &pb)?
    };
    let float_bytes = q.bundle().as_bytes().len() as u64;
    let mut report = Report {
        mode: opts.mode,
        counts: counts(&plan),
        error,
        guard: opts.guard,
        forced: !holds,
        kept,
        given_back,
        f16_out_of_range: q.f16_out_of_range().to_vec(),
        float_bytes,
        quantized_bytes: 0,
        calibration: images
            .iter()
            .map(|i| i.path.display().to_string())
            .collect(),
        activations,
    };
    let float_sha = edgeseg_runtime::bundle::hex(&q.bundle().file_sha256());
    let record = serde_json::json!({
        "mode": report.mode,
        "form": "weight-only: int8 per output channel (symmetric, f16 or f32 scales) / f16, dequantized to f32 at load",
        "float_bundle_sha256": float_sha,
        "counts": report.counts,
        "calibration": {
            "folder": opts.calib.display().to_string(),
            "images": images.len(),
            "boxes_per_image": 3,
            "guard": opts.guard,
            "forced": report.forced,
            "error": report.error,
        },
        "kept_higher_precision": report.kept,
        "given_back_to_int8": report.given_back,
        "f16_out_of_range": report.f16_out_of_range,
        // compact: the per-method errors and sample counts go to the report only
        "activation_ranges": {
            "scheme": "symmetric int8 per tensor (zero point 0), method chosen per tensor by held-out error; for int8-compute backends, not used by tract's float plan",
            "methods": crate::actcalib::method_counts(&report.activations),
            "tensors": report
                .activations
                .iter()
                .map(|a| {
                    (
                        format!("{}/{}", a.graph, a.tensor),
                        serde_json::json!({ "scale": a.scale, "method": a.method }),
                    )
                })
                .collect::<serde_json::Map<String, serde_json::Value>>(),
        },
    });
    let mut w = q.writer(&plan, |m| {
        m.provenance.commands.push(opts.command.clone());
        let e = &report.error;
        for (k, v) in [
            ("quant_calib_mean_iou", e.mean_iou),
            ("quant_calib_min_iou", e.min_iou),
            ("quant_calib_logit_rel_rms", e.logit_rel_rms),
            ("quant_calib_logit_max_abs", e.logit_max_abs),
            ("quant_calib_embedding_rel_rms", e.embedding_rel_rms),
        ] {
            m.provenance.metrics.insert(k.into(), v);
        }
        m.extra.insert("quantization".into(), record);
    })?;
    if let Some(k) = &opts.signing_key {
        w = w.sign_with(k.clone());
    }
    if let Some(parent) = opts.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| {
            QuantizeError::Write(BundleError::Io {
                path: parent.to_path_buf(),
                source,
            })
        })?;
    }
    w.write_to(&opts.out).map_err(QuantizeError::Write)?;
    report.quantized_bytes = std::fs::metadata(&opts.out)
        .map(|m| m.len())
        .map_err(|source| {
            QuantizeError::Write(BundleError::Io {
                path: opts.out.clone(),
                source,
            })
        })?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(op: &str, inputs: &[&str], attrs: &[(&str, i64)]) -> pb::NodeProto {
        pb::NodeProto {
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            attribute: attrs
                .iter()
                .map(|(n, i)| pb::AttributeProto {
                    name: n.to_string(),
                    i: *i,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn output_channel_axes() {
        assert_eq!(weight_axis(&node("Conv", &["x", "w"], &[]), 1, 4), Some(0));
        assert_eq!(
            weight_axis(&node("ConvTranspose", &["x", "w"], &[]), 1, 4),
            Some(1)
        );
        assert_eq!(
            weight_axis(&node("MatMul", &["x", "w"], &[]), 1, 2),
            Some(1)
        );
        assert_eq!(
            weight_axis(&node("MatMul", &["w", "x"], &[]), 0, 3),
            Some(1)
        );
        assert_eq!(
            weight_axis(&node("Gemm", &["x", "w"], &[("transB", 1)]), 1, 2),
            Some(0)
        );
        assert_eq!(weight_axis(&node("Gemm", &["x", "w"], &[]), 1, 2), Some(1));
        assert_eq!(weight_axis(&node("Add", &["x", "w"], &[]), 1, 4), None);
        assert_eq!(
            weight_axis(&node("Conv", &["x", "w", "b"], &[]), 2, 1),
            None
        );
    }

    #[test]
    fn iou_and_stats() {
        assert_eq!(iou(&[0, 0], &[0, 0]), 1.0);
        assert_eq!(iou(&[1, 1, 0, 0], &[1, 0, 1, 0]), 1.0 / 3.0);
        let a = Outputs {
            embeddings: vec![vec![1.0, -1.0]],
            logits: vec![vec![2.0, -2.0, 1.0, -1.0]],
            masks: vec![vec![1, 1, 0]],
        };
        let same = compare(&a, &a);
        assert_eq!(same.mean_iou, 1.0);
        assert_eq!(same.logit_rel_rms, 0.0);
        let mut b = a.clone();
        b.logits[0][2] = -1.0; // one sign flip, error 2
        b.masks[0] = vec![1, 0, 0];
        b.embeddings[0][0] = 2.0;
        let e = compare(&a, &b);
        assert_eq!(e.mean_iou, 0.5);
        assert_eq!(e.min_iou, 0.5);
        assert_eq!(e.logit_sign_flips, 0.25);
        assert_eq!(e.logit_max_abs, 2.0);
        assert_eq!(e.logit_mae, 0.5);
        assert!((e.logit_rel_rms - (4.0f64 / 10.0).sqrt()).abs() < 1e-12);
        assert!((e.embedding_rel_rms - (1.0f64 / 2.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn calibration_folder_errors() {
        let tmp = std::env::temp_dir().join(format!("edgeseg-quant-calib-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).unwrap();
        // missing and empty folders
        let e = load_calibration(&tmp.join("missing"), None).unwrap_err();
        assert!(matches!(e, QuantizeError::CalibrationDir { .. }), "{e}");
        std::fs::write(tmp.join("notes.txt"), "not an image").unwrap();
        let e = load_calibration(&tmp, None).unwrap_err();
        assert!(
            matches!(e, QuantizeError::EmptyCalibration { skipped: 1, .. }),
            "{e}"
        );
        // an unreadable "png", then a constant and a too-small image
        std::fs::write(tmp.join("a.png"), b"garbage").unwrap();
        let e = load_calibration(&tmp, None).unwrap_err();
        assert!(
            matches!(&e, QuantizeError::UnreadableImage { path, .. } if path.ends_with("a.png")),
            "{e}"
        );
        std::fs::remove_file(tmp.join("a.png")).unwrap();
        image::GrayImage::from_pixel(32, 32, image::Luma([7]))
            .save(tmp.join("b.png"))
            .unwrap();
        let e = load_calibration(&tmp, None).unwrap_err();
        assert!(matches!(e, QuantizeError::UnusableImage { .. }), "{e}");
        image::GrayImage::from_fn(4, 40, |x, _| image::Luma([x as u8]))
            .save(tmp.join("b.png"))
            .unwrap();
        let e = load_calibration(&tmp, None).unwrap_err();
        assert!(matches!(e, QuantizeError::UnusableImage { .. }), "{e}");
        // good grey and colour images, the limit spreads over the sorted list
        for i in 0..4u8 {
            image::GrayImage::from_fn(40, 30, |x, y| image::Luma([(x + y) as u8 * i]))
                .save(tmp.join(format!("c{i}.png")))
                .unwrap();
        }
        std::fs::remove_file(tmp.join("b.png")).unwrap();
        std::fs::remove_file(tmp.join("c0.png")).unwrap();
        let all = load_calibration(&tmp, None).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(
            (all[0].width, all[0].height, all[0].rgb.len()),
            (40, 30, 40 * 30 * 3)
        );
        let two = load_calibration(&tmp, Some(2)).unwrap();
        assert!(two[0].path.ends_with("c1.png") && two[1].path.ends_with("c2.png"));
        let _ = std::fs::remove_dir_all(&tmp);
    }

    #[test]
    fn calibration_boxes_lie_inside_the_frame() {
        for (w, h) in [(8, 8), (640, 480), (31, 1000)] {
            for b in calibration_boxes(w, h) {
                assert!(b.x0 >= 0.0 && b.y0 >= 0.0 && b.x0 < b.x1 && b.y0 < b.y1);
                assert!(b.x1 <= (w - 1) as f32 && b.y1 <= (h - 1) as f32);
            }
        }
    }
}
