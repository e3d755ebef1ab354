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
//! No architecture is implemented yet; this crate is their home.
#![forbid(unsafe_code)]
