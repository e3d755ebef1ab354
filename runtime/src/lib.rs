//! # edgeseg-runtime
//!
//! The on-device library behind the `edgeseg` binary. It is what runs beside an
//! ultrasound or endoscopy scanner: it opens a model bundle (one memory-mapped,
//! verified file), runs its encoder and decoder on tract (CPU) or on the CUDA
//! kernels of `edgeseg-kernels` (GPU), and streams frames from files, video,
//! V4L2 grabbers or a serial link through prompting, segmentation, tracking and
//! overlay drawing, with pass-through video that never waits for the AI.
//! It must stay lean enough for a device: it never depends on training crates
//! (candle and friends live in `edgeseg-models` and `edgeseg-tools`).
//!
//! Today it holds the pieces of the device pipeline that the offline tools
//! already share: the [`Prompt`] type in model-independent image coordinates,
//! and the [`bundle`] format (reader and writer). The crate denies `unsafe`; the
//! one exception is the memory map in `bundle::map_readonly`.
#![deny(unsafe_code)]

pub mod backend;
pub mod bench;
pub mod bundle;
pub mod fewshot;
pub mod onnx_weights;
pub mod profile;
pub mod prompt;
pub mod quant;
pub mod stream;

pub use backend::{BackendError, Embedding, PromptableSegmenter, RgbFrame, Segmentation};
pub use prompt::{BoxPrompt, PointLabel, PointPrompt, Prompt};
