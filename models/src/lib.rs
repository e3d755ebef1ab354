//! # edgeseg-models
//!
//! The model architectures of edgeseg and everything needed to get them onto a
//! device: the LiteMedSAM teacher (TinyViT image encoder, SAM prompt encoder and
//! mask decoder), the distilled FastSAM3D-style students in 2D and 3D, the
//! prototype few-shot heads, weight loading (PyTorch checkpoints, safetensors)
//! and export to ONNX graphs and model bundles. Shipped bundles and their model
//! cards live in `models/zoo/`. Training-side dependencies (candle) belong here
//! and in `edgeseg-tools`, never in the runtime.
//!
//! Implemented so far: the LiteMedSAM teacher ([`litemedsam`]), its building
//! blocks ([`nn`]) and checkpoint reading/conversion ([`weights`]).
//!
//! `unsafe` is denied except in one function, `weights::mmap_readonly`
//! (memory-mapping a safetensors file).
#![deny(unsafe_code)]

pub mod export;
pub mod litemedsam;
pub mod nn;
pub mod weights;
pub mod window_ops;

pub use litemedsam::{LiteMedSam, LiteMedSamConfig};
pub use nn::Mode;

/// Errors of model loading and inference.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A checkpoint is malformed, lacks a tensor or has one of the wrong shape.
    #[error("checkpoint {path}: {msg}")]
    Checkpoint {
        /// The checkpoint file.
        path: String,
        /// What is wrong (names the tensor where one is at fault).
        msg: String,
    },
    /// An invalid prompt.
    #[error("invalid prompt: {0}")]
    Prompt(String),
    /// Pre- or post-processing rejected its input.
    #[error(transparent)]
    Prep(#[from] edgeseg_kernels::prepost::PrepError),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
