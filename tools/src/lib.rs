//! # edgeseg-tools
//!
//! The offline side of edgeseg, as a library behind the `edgeseg-tools` binary:
//! datasets and their manifests ([`dataset`]), 2D/3D masks ([`grid`]), segmentation
//! metrics ([`metrics`]), the evaluation harness ([`eval`]) and the segmenter interface
//! with its non-learned baselines ([`segmenter`]), distillation ([`distill`]), weight
//! quantization with a calibration guard ([`quantize`]), export and bundling ([`bundling`]).
#![forbid(unsafe_code)]

pub mod actcalib;
pub mod bundle_segmenter;
pub mod bundling;
pub mod dataset;
pub mod distill;
pub mod eval;
pub mod fewshot;
pub mod grid;
pub mod int8compute;
pub mod int8sim;
pub mod keys;
pub mod litemedsam;
pub mod metrics;
pub mod overlay;
pub mod quantize;
pub mod segmenter;
pub mod teacher;
