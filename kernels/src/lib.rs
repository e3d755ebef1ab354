//! # edgeseg-kernels
//!
//! Hand-written CUDA kernels for the GPU backend and, for each one, a plain-Rust
//! CPU reference that is its specification. CUDA C sources live in `kernels/cu/`
//! ([`sources`], embedded with `include_str!`) and are compiled at run time with
//! NVRTC (through cudarc, feature `cuda`) for the GPU present (sm_87 Jetson Orin
//! first); nothing here calls nvcc at build time.
//!
//! * [`prepost`]: LiteMedSAM's pre- and post-processing, bit-exact with the
//!   original Python (the CPU path of the runtime and the models).
//! * [`reference`](mod@reference): the specifications of the kernels (fused pre/post-processing
//!   from camera frames, building blocks of SAM-style encoders and decoders,
//!   few-shot heads) and the parity-test tolerance tiers.
//! * `gpu` (feature `cuda` or `cuda-13000`): NVRTC compilation with an on-disk
//!   module cache, the CUDA context, and typed launchers. The only `unsafe` code
//!   of the crate lives there, in the FFI layer.
//! * [`launch_shapes`]: the grid and block shape of every launch, shared by the
//!   GPU launchers and the CPU emulation tests (`tests/cpu_emulated.rs`).
//! * [`module_cache`]: the on-disk cache of compiled modules.
//! * [`pixfmt`]: capture pixel formats to RGB (the stream path's conversions).
//! * [`npy`]: a minimal `.npy` reader for golden-file tests.
#![deny(unsafe_code)]

#[cfg(any(feature = "cuda-12060", feature = "cuda-13000"))]
pub mod gpu;
pub mod launch_shapes;
pub mod module_cache;
pub mod npy;
pub mod pixfmt;
pub mod prepost;
pub mod reference;
pub mod sources;
