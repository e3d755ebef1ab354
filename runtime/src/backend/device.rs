//! Device selection: which backend [`super::open_bundle`] tries, and why the
//! GPU backend could not be used when it falls back to the CPU.
//!
//! `auto` tries the CUDA backend ([`super::gpu`], feature `cuda`) and falls back
//! to tract with exactly one log line naming the reason; `cpu` never touches
//! CUDA; `gpu` makes a missing or unusable GPU an error (never a panic: the
//! CUDA libraries are probed before cudarc is called, see `edgeseg_kernels::gpu`).

use std::fmt;

/// Which device runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Device {
    /// The GPU when one is usable, else the CPU (one log line says why).
    #[default]
    Auto,
    /// The CPU (tract) only.
    Cpu,
    /// The GPU only: no usable GPU is an error.
    Gpu,
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Device::Auto => "auto",
            Device::Cpu => "cpu",
            Device::Gpu => "gpu",
        })
    }
}

impl std::str::FromStr for Device {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Device::Auto),
            "cpu" => Ok(Device::Cpu),
            "gpu" | "cuda" => Ok(Device::Gpu),
            _ => Err(format!("device `{s}`: expected auto, cpu or gpu")),
        }
    }
}

/// Why the GPU backend is not used for a bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GpuUnavailable {
    /// This binary was built without the `cuda` feature.
    #[error("this build has no CUDA support (built without the `cuda` feature)")]
    NotBuilt,
    /// The NVIDIA driver library or NVRTC could not be loaded.
    #[error("no CUDA library: {0}")]
    NoCudaLibrary(String),
    /// The driver loaded but there is no (such) device.
    #[error("no CUDA device: {0}")]
    NoDevice(String),
    /// A kernel source did not compile for this GPU.
    #[error("kernel compile error: {0}")]
    KernelCompile(String),
    /// The bundle could not be opened or verified.
    #[error("bundle: {0}")]
    Bundle(String),
    /// The bundle is not a model the kernel plan implements.
    #[error("unsupported model: {0}")]
    UnsupportedModel(String),
    /// Any other driver or launch failure while opening.
    #[error("CUDA error: {0}")]
    Failed(String),
}

/// The line logged when `auto` falls back to the CPU backend.
pub fn fallback_line(reason: &GpuUnavailable) -> String {
    format!("edgeseg: GPU backend not used ({reason}); running on the CPU (tract)")
}

/// Fallback lines already printed by this process.
static LOGGED_FALLBACKS: std::sync::Mutex<std::collections::BTreeSet<String>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Prints [`fallback_line`] to stderr unless this process has printed the same line before
/// (a stream supervisor that restarts its AI worker reopens the bundle, and the same fallback
/// is not news). Returns whether it printed.
pub fn log_fallback_once(reason: &GpuUnavailable) -> bool {
    let line = fallback_line(reason);
    let mut seen = LOGGED_FALLBACKS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !seen.insert(line.clone()) {
        return false;
    }
    drop(seen);
    eprintln!("{line}");
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fallback_line_is_logged_once_per_reason() {
        let a = GpuUnavailable::Failed("test-only reason a".into());
        let b = GpuUnavailable::Failed("test-only reason b".into());
        assert!(log_fallback_once(&a));
        assert!(!log_fallback_once(&a));
        assert!(log_fallback_once(&b));
        assert!(!log_fallback_once(&a));
    }

    #[test]
    fn device_parses_and_displays() {
        for d in [Device::Auto, Device::Cpu, Device::Gpu] {
            assert_eq!(d.to_string().parse::<Device>(), Ok(d));
        }
        assert_eq!("cuda".parse::<Device>(), Ok(Device::Gpu));
        assert!("tpu".parse::<Device>().is_err());
        assert_eq!(Device::default(), Device::Auto);
    }

    #[test]
    fn fallback_line_names_the_reason() {
        let l = fallback_line(&GpuUnavailable::NoDevice("device count 0".into()));
        assert!(l.contains("no CUDA device: device count 0"), "{l}");
        assert!(!l.contains('\n'));
    }
}
