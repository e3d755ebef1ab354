//! Promptable segmentation backends: the interface the streaming pipeline and
//! the `edgeseg` commands drive, whatever executes the model (tract on the CPU,
//! the CUDA kernels on a GPU, or a mock in tests).
//!
//! The contract: [`PromptableSegmenter::set_frame`] encodes one frame once;
//! [`PromptableSegmenter::segment`] then decodes any number of prompts against
//! that frame and returns masks at the frame's original size. A backend never
//! panics on its input and never returns a mask derived from non-finite logits:
//! it reports [`BackendError::NonFinite`] instead.

use crate::prompt::Prompt;

pub mod cpu;
pub mod device;
#[cfg(feature = "_gpu")]
pub mod gpu;
pub mod kplan;
pub mod tract_ops;

pub use cpu::TractSegmenter;
pub use device::{Device, GpuUnavailable};

/// One RGB8 frame, interleaved `height × width × 3`, row-major, no row padding.
#[derive(Debug, Clone, Copy)]
pub struct RgbFrame<'a> {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// `height * width * 3` bytes.
    pub data: &'a [u8],
}

impl<'a> RgbFrame<'a> {
    /// Wraps `data`, checking that its length is `height * width * 3` and that
    /// neither side is zero.
    pub fn new(width: usize, height: usize, data: &'a [u8]) -> Result<Self, BackendError> {
        let expected = width
            .checked_mul(height)
            .and_then(|n| n.checked_mul(3))
            .ok_or_else(|| BackendError::InvalidFrame(format!("{width}x{height} overflows")))?;
        if width == 0 || height == 0 {
            return Err(BackendError::InvalidFrame(format!(
                "frame size {width}x{height} has a zero side"
            )));
        }
        if data.len() != expected {
            return Err(BackendError::InvalidFrame(format!(
                "{width}x{height} RGB8 frame needs {expected} bytes, got {}",
                data.len()
            )));
        }
        Ok(Self {
            width,
            height,
            data,
        })
    }
}

/// The result of one prompt on the current frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Segmentation {
    /// Mask columns (the frame's width).
    pub width: usize,
    /// Mask rows (the frame's height).
    pub height: usize,
    /// `height * width` values, 1 inside the structure and 0 outside.
    pub mask: Vec<u8>,
    /// The model's own estimate of the mask's IoU (SAM's IoU head), if it has one.
    pub iou_prediction: Option<f32>,
}

impl Segmentation {
    /// Number of foreground pixels.
    pub fn area(&self) -> usize {
        self.mask.iter().filter(|&&v| v != 0).count()
    }
}

/// Why a backend could not produce a mask.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The frame is empty, too large or inconsistent with its declared size.
    #[error("invalid frame: {0}")]
    InvalidFrame(String),
    /// The prompt is empty or outside the frame.
    #[error("invalid prompt: {0}")]
    InvalidPrompt(String),
    /// `segment` was called before any successful `set_frame`.
    #[error("no frame has been set")]
    NoFrame,
    /// The model produced NaN or infinite values; no mask is derived from them.
    #[error("model output `{output}` holds non-finite values")]
    NonFinite {
        /// The output tensor at fault.
        output: String,
    },
    /// The model produced a tensor of an unexpected shape.
    #[error("model output `{output}` has shape {got:?}, expected {expected}")]
    BadShape {
        /// The output tensor at fault.
        output: String,
        /// Its shape.
        got: Vec<usize>,
        /// What was expected, in words.
        expected: String,
    },
    /// The backend cannot run here (no GPU, missing library, bad bundle ...).
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// Execution failed inside the inference engine.
    #[error("inference failed: {0}")]
    Inference(String),
}

/// A model that encodes a frame once and decodes any number of prompts on it.
pub trait PromptableSegmenter: Send {
    /// Short name for logs, e.g. `tract-cpu` or `cuda`.
    fn name(&self) -> &str;
    /// Encodes `frame`; later prompts refer to it until the next call.
    fn set_frame(&mut self, frame: RgbFrame<'_>) -> Result<(), BackendError>;
    /// [`Self::set_frame`] of the image whose rows `rows` produces (a raw
    /// frame converted row by row). Backends that pre-process on the host
    /// override it to resize while converting
    /// (`edgeseg_kernels::prepost::preprocess_rows`), without writing the
    /// whole RGB image; the default converts the whole image first.
    fn set_frame_rows(
        &mut self,
        rows: &mut dyn edgeseg_kernels::prepost::RgbRows,
    ) -> Result<(), BackendError> {
        let (w, h) = (rows.width(), rows.height());
        let img = edgeseg_kernels::prepost::materialize(rows)
            .map_err(|e| BackendError::InvalidFrame(e.to_string()))?;
        self.set_frame(RgbFrame::new(w, h, &img)?)
    }
    /// Segments `prompt` on the current frame; the mask has the frame's size.
    fn segment(&mut self, prompt: &Prompt) -> Result<Segmentation, BackendError>;
    /// The current frame's image embedding, for heads that work on features
    /// (few-shot prototypes). `None` before the first frame or when the backend
    /// cannot expose it.
    fn embedding(&self) -> Option<Embedding<'_>> {
        None
    }
    /// Which model's embedding space [`Self::embedding`] lives in (what a
    /// prototype set taught on it records); `None` when unknown.
    fn embedding_id(&self) -> Option<crate::fewshot::EmbeddingId> {
        None
    }
}

/// A view of an image embedding: `channels × height × width` f32, row-major.
///
/// The model input is the frame resized (longest side to the model size) and
/// padded at the bottom/right; `valid_height × valid_width` is the part of the
/// embedding grid that covers the frame (the rest covers padding).
#[derive(Debug, Clone, Copy)]
pub struct Embedding<'a> {
    /// Feature channels.
    pub channels: usize,
    /// Grid rows.
    pub height: usize,
    /// Grid columns.
    pub width: usize,
    /// Grid rows that cover the frame (the rest is padding).
    pub valid_height: usize,
    /// Grid columns that cover the frame.
    pub valid_width: usize,
    /// Frame rows the embedding was computed from.
    pub frame_height: usize,
    /// Frame columns the embedding was computed from.
    pub frame_width: usize,
    /// `channels * height * width` values.
    pub data: &'a [f32],
}

/// How to run a bundle.
#[derive(Debug, Clone)]
pub struct BackendOptions {
    /// Worker threads for the CPU backend (1 = single-threaded).
    pub threads: usize,
    /// What to require of the bundle's signature.
    pub verify: crate::bundle::VerifyPolicy,
    /// Which device runs the model (`auto`: the GPU if usable, else the CPU).
    pub device: Device,
    /// GPU ordinal for the CUDA backend.
    pub gpu_ordinal: usize,
}

impl Default for BackendOptions {
    fn default() -> Self {
        Self {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            verify: crate::bundle::VerifyPolicy::default(),
            device: Device::Auto,
            gpu_ordinal: 0,
        }
    }
}

/// A backend opened by [`select_backend`], and why the GPU was not used when
/// it was asked for (`auto`) but the CPU runs the model.
pub struct Opened {
    /// The backend.
    pub backend: Box<dyn PromptableSegmenter>,
    /// `Some` when `auto` fell back to the CPU.
    pub fallback: Option<GpuUnavailable>,
}

/// Tries the CUDA backend for the bundle at `path` (checking the CUDA
/// libraries and the device before the bundle).
#[cfg(feature = "_gpu")]
fn try_gpu(
    path: &std::path::Path,
    options: &BackendOptions,
) -> Result<Box<dyn PromptableSegmenter>, GpuUnavailable> {
    Ok(Box::new(gpu::open(path, options)?))
}

/// Without the `cuda` feature there is no GPU backend.
#[cfg(not(feature = "_gpu"))]
fn try_gpu(
    _path: &std::path::Path,
    _options: &BackendOptions,
) -> Result<Box<dyn PromptableSegmenter>, GpuUnavailable> {
    Err(GpuUnavailable::NotBuilt)
}

/// Opens the bundle at `path` on the backend `options.device` selects:
/// `cpu` = tract; `gpu` = the CUDA backend or an error naming why there is
/// none; `auto` = the CUDA backend if it opens, else tract, reporting the
/// reason in [`Opened::fallback`]. Logs nothing (see [`open_bundle`]).
pub fn select_backend(
    path: &std::path::Path,
    options: &BackendOptions,
) -> Result<Opened, BackendError> {
    let tract = || -> Result<Box<dyn PromptableSegmenter>, BackendError> {
        Ok(Box::new(TractSegmenter::open(path, options)?))
    };
    match options.device {
        Device::Cpu => Ok(Opened {
            backend: tract()?,
            fallback: None,
        }),
        Device::Gpu => match try_gpu(path, options) {
            Ok(backend) => Ok(Opened {
                backend,
                fallback: None,
            }),
            Err(e) => Err(BackendError::Unavailable(format!(
                "GPU backend requested (device gpu) but not usable: {e}"
            ))),
        },
        Device::Auto => match try_gpu(path, options) {
            Ok(backend) => Ok(Opened {
                backend,
                fallback: None,
            }),
            Err(reason) => Ok(Opened {
                backend: tract()?,
                fallback: Some(reason),
            }),
        },
    }
}

/// Opens the bundle at `path` on the backend `options.device` selects (see
/// [`select_backend`]). When `auto` falls back to the CPU it logs one line to
/// stderr naming the reason ([`device::fallback_line`]), once per process and
/// reason ([`device::log_fallback_once`]: reopening after a worker restart does
/// not repeat it); that line is printed before the CPU backend is opened, so it
/// also appears when the bundle then fails to open.
pub fn open_bundle(
    path: &std::path::Path,
    options: &BackendOptions,
) -> Result<Box<dyn PromptableSegmenter>, BackendError> {
    if options.device == Device::Auto {
        if let Err(reason) = gpu_probe(options) {
            device::log_fallback_once(&reason);
            let cpu = BackendOptions {
                device: Device::Cpu,
                ..options.clone()
            };
            return Ok(select_backend(path, &cpu)?.backend);
        }
    }
    let opened = select_backend(path, options)?;
    if let Some(reason) = &opened.fallback {
        device::log_fallback_once(reason);
    }
    Ok(opened.backend)
}

/// Whether a GPU is usable here at all (libraries and device; no bundle, no
/// kernel compilation). Never panics.
pub fn gpu_probe(options: &BackendOptions) -> Result<(), GpuUnavailable> {
    #[cfg(feature = "_gpu")]
    {
        gpu::probe(options.gpu_ordinal)
    }
    #[cfg(not(feature = "_gpu"))]
    {
        let _ = options;
        Err(GpuUnavailable::NotBuilt)
    }
}
