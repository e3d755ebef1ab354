//! # edgeseg-kernels
//!
//! Hand-written CUDA kernels for the GPU backend and, for each one, a plain-Rust
//! CPU reference that is its specification. CUDA C sources live in `kernels/cu/`
//! and are compiled at run time with NVRTC (through cudarc) for the GPU present
//! (sm_87 Jetson Orin first); nothing here calls nvcc at build time. The CPU
//! references (pre-processing, post-processing, the building blocks of SAM-style
//! encoders and decoders, few-shot heads) are also what the CPU paths of the
//! runtime and the models use, so that every backend computes the same thing.
//!
//! So far it holds the CPU reference of LiteMedSAM's pre- and post-processing
//! ([`prepost`]), a minimal `.npy` reader for golden-file tests ([`npy`]) and
//! the capture pixel-format conversions to RGB ([`pixfmt`]).
#![forbid(unsafe_code)]

pub mod npy;
pub mod pixfmt;
pub mod prepost;
