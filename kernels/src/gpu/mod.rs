//! The GPU side (features `cuda` = CUDA 12.6 / JetPack 6, or `cuda-13000`):
//! run-time compilation with NVRTC ([`nvrtc`]), the CUDA context with its module
//! cache ([`Gpu`]), and typed launchers for every kernel ([`ops`]).
//!
//! Everything is loaded dynamically: a binary built with the feature starts on a
//! machine without CUDA and gets a [`GpuError`] naming what is missing, never a
//! panic (cudarc panics when a library is absent, so presence is checked first
//! and the remaining loader panics are caught).
//!
//! The two features are mutually exclusive: cudarc binds exactly one CUDA API
//! version per build, so `--all-features` cannot build this crate.

mod context;
pub mod nvrtc;
pub mod ops;

pub use context::{driver_lib_candidates, driver_present, DeviceInfo, Gpu};
/// The cudarc version the launchers are written against (its buffer types
/// appear in their signatures).
pub use cudarc;
pub use nvrtc::{Arch, Output};

use crate::prepost::PrepError;
use crate::reference::nn::NnError;

/// Every failure of the GPU layer, naming what is missing or wrong.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// libcuda (the driver) could not be loaded.
    #[error("the NVIDIA driver library (libcuda) was not found (tried {searched:?}): no NVIDIA driver is installed, or it is not on the library path")]
    DriverMissing {
        /// Library names tried.
        searched: Vec<String>,
    },
    /// libnvrtc could not be loaded.
    #[error("NVRTC (libnvrtc) was not found (tried {searched:?}): install the CUDA toolkit's NVRTC (JetPack: cuda-nvrtc; pip: nvidia-cuda-nvrtc-cu12) and put its lib directory on LD_LIBRARY_PATH")]
    NvrtcMissing {
        /// Library names tried.
        searched: Vec<String>,
    },
    /// The driver loaded but reports no device.
    #[error("the CUDA driver reports no GPU (device count {count}, ordinal {ordinal} requested)")]
    NoDevice {
        /// Devices the driver sees.
        count: i32,
        /// Requested ordinal.
        ordinal: usize,
    },
    /// A driver call failed.
    #[error("CUDA driver call {what} failed: {message}")]
    Driver {
        /// The call.
        what: &'static str,
        /// The driver's error.
        message: String,
    },
    /// An NVRTC call failed (other than the compilation itself).
    #[error("NVRTC call {what} failed: {message}")]
    Nvrtc {
        /// The call.
        what: &'static str,
        /// NVRTC's error.
        message: String,
    },
    /// A kernel source did not compile.
    #[error("NVRTC could not compile {source_name} for {arch}: {message}\n{log}")]
    Compile {
        /// The source file.
        source_name: &'static str,
        /// The architecture.
        arch: String,
        /// NVRTC's error.
        message: String,
        /// NVRTC's log.
        log: String,
    },
    /// The loaded NVRTC cannot target this GPU.
    #[error("this NVRTC ({nvrtc}) cannot compile for {arch}; it supports {supported:?}: use a newer CUDA toolkit")]
    ArchUnsupported {
        /// The GPU's architecture.
        arch: String,
        /// NVRTC version.
        nvrtc: String,
        /// What it supports.
        supported: Vec<String>,
    },
    /// A library loader panicked (a symbol missing from an old libcuda or libnvrtc).
    #[error("loading CUDA failed during {what}: {message} (driver or NVRTC too old for this build's CUDA API level?)")]
    LoaderPanic {
        /// What was being done.
        what: &'static str,
        /// The panic message.
        message: String,
    },
    /// A launcher's arguments disagree with its kernel's C declaration (a bug in
    /// `gpu::ops`; caught before the launch).
    #[error("arguments for kernel {kernel} do not match its declaration: pushed {pushed}, declared {expected}")]
    Signature {
        /// The kernel.
        kernel: &'static str,
        /// The parameter kinds of the declaration (`None` if it could not be parsed).
        expected: String,
        /// The kinds pushed.
        pushed: String,
    },
    /// Unknown source or kernel name.
    #[error("no kernel {kernel} in {source_name}")]
    UnknownKernel {
        /// The source file.
        source_name: String,
        /// The kernel.
        kernel: String,
    },
    /// Bad shapes or buffers for an operation.
    #[error(transparent)]
    Shape(#[from] NnError),
    /// Bad frame or pre/post-processing sizes.
    #[error(transparent)]
    Prep(#[from] PrepError),
    /// A size that does not fit the kernel's 32-bit index arithmetic.
    #[error("{what} = {value} is too large for the kernel (limit {limit})")]
    TooLarge {
        /// Which size.
        what: &'static str,
        /// Its value.
        value: usize,
        /// The limit.
        limit: usize,
    },
}

impl GpuError {
    /// Maps a cudarc driver error to [`GpuError::Driver`] naming the call.
    pub fn driver(what: &'static str) -> impl Fn(cudarc::driver::DriverError) -> GpuError {
        move |e| GpuError::Driver {
            what,
            message: e.to_string(),
        }
    }
}

/// Converts a size to the kernels' `i32`, or fails with [`GpuError::TooLarge`].
pub(crate) fn to_i32(what: &'static str, v: usize) -> Result<i32, GpuError> {
    i32::try_from(v).map_err(|_| GpuError::TooLarge {
        what,
        value: v,
        limit: i32::MAX as usize,
    })
}
