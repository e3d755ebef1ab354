//! # edgeseg-tools
//!
//! The offline side of edgeseg, as a library behind the `edgeseg-tools` binary:
//! datasets and their manifests, segmentation metrics, the evaluation harness
//! and its baseline segmenters; later distillation, quantization, export,
//! bundling, signing and flashing.
#![forbid(unsafe_code)]
