//! NVRTC: compiles a kernel source to PTX or CUBIN for one architecture. This
//! is FFI (with the driver calls in `gpu::context` and the launches in
//! `gpu::ops`, the only `unsafe` code of the crate); everything it returns is
//! owned Rust data.
//!
//! NVRTC is loaded at run time (cudarc's dynamic loading): the library is found
//! through the dynamic linker's search path (`LD_LIBRARY_PATH`), by the names
//! cudarc lists (`libnvrtc.so`, `libnvrtc.so.12`, ...).
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, CString};

use cudarc::nvrtc::{result, sys};

use super::GpuError;
use crate::sources::{full_source, KernelSource};

/// A CUDA compute capability, e.g. 8.7 (Jetson Orin) or 9.0 (H100).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Arch {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
}

impl Arch {
    /// Jetson Orin (JetPack 6).
    pub const SM87: Arch = Arch { major: 8, minor: 7 };
    /// Hopper (H100 / H200).
    pub const SM90: Arch = Arch { major: 9, minor: 0 };

    /// `sm_87`: the real architecture (CUBIN, ptxas' `--gpu-name`).
    pub fn sm(self) -> String {
        format!("sm_{}{}", self.major, self.minor)
    }

    /// `compute_87`: the virtual architecture (PTX).
    pub fn compute(self) -> String {
        format!("compute_{}{}", self.major, self.minor)
    }

    /// Parses `sm_87`, `compute_87` or `87`.
    pub fn parse(s: &str) -> Option<Arch> {
        let d = s
            .strip_prefix("sm_")
            .or_else(|| s.strip_prefix("compute_"))
            .unwrap_or(s);
        if d.len() < 2 || !d.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let (ma, mi) = d.split_at(d.len() - 1);
        Some(Arch {
            major: ma.parse().ok()?,
            minor: mi.parse().ok()?,
        })
    }
}

/// What NVRTC should produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// PTX text for the virtual architecture (what ptxas assembles).
    Ptx,
    /// A CUBIN for the real architecture (what the driver loads without a JIT).
    Cubin,
}

/// A compiled module.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// PTX text (UTF-8, no trailing NUL) or CUBIN bytes.
    pub image: Vec<u8>,
    /// NVRTC's log (warnings; empty when clean).
    pub log: String,
}

/// The names cudarc tries when it loads NVRTC.
pub fn nvrtc_lib_candidates() -> Vec<String> {
    super::context::dedup(cudarc::get_lib_name_candidates("nvrtc"))
}

/// Whether the NVRTC shared library can be loaded.
pub fn nvrtc_present() -> bool {
    // SAFETY: dlopen of the candidate names only; a library that loads runs its
    // initializers, which is what any use of NVRTC does anyway. No symbol is called.
    unsafe { sys::is_culib_present() }
}

/// Fails with [`GpuError::NvrtcMissing`] (naming the library names tried) when
/// NVRTC cannot be loaded; cudarc would panic on the first call instead.
pub fn require_nvrtc() -> Result<(), GpuError> {
    if nvrtc_present() {
        Ok(())
    } else {
        Err(GpuError::NvrtcMissing {
            searched: nvrtc_lib_candidates(),
        })
    }
}

/// The loaded NVRTC's version, e.g. `(12, 9)`.
pub fn nvrtc_version() -> Result<(i32, i32), GpuError> {
    require_nvrtc()?;
    let (mut major, mut minor): (c_int, c_int) = (0, 0);
    // SAFETY: NVRTC is present (checked above); both pointers are to live locals.
    unsafe { sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| GpuError::Nvrtc {
            what: "nvrtcVersion",
            message: e.to_string(),
        })?;
    Ok((major, minor))
}

/// The real architectures the loaded NVRTC can target.
pub fn supported_archs() -> Result<Vec<Arch>, GpuError> {
    require_nvrtc()?;
    let nerr = |what| {
        move |e: result::NvrtcError| GpuError::Nvrtc {
            what,
            message: e.to_string(),
        }
    };
    let mut n: c_int = 0;
    // SAFETY: NVRTC is present; `n` is a live local.
    unsafe { sys::nvrtcGetNumSupportedArchs(&mut n) }
        .result()
        .map_err(nerr("nvrtcGetNumSupportedArchs"))?;
    let mut v: Vec<c_int> = vec![0; n.max(0) as usize];
    // SAFETY: `v` holds exactly the `n` ints NVRTC writes.
    unsafe { sys::nvrtcGetSupportedArchs(v.as_mut_ptr()) }
        .result()
        .map_err(nerr("nvrtcGetSupportedArchs"))?;
    Ok(v.into_iter()
        .map(|a| Arch {
            major: (a / 10) as u32,
            minor: (a % 10) as u32,
        })
        .collect())
}

/// What to compile for a GPU of architecture `device`, given the architectures
/// this NVRTC supports: a CUBIN for the device itself when possible, otherwise
/// PTX for the newest supported architecture below it (PTX is forward-compatible:
/// the driver JIT-compiles it for the newer GPU). `None` when NVRTC only knows
/// architectures newer than the device.
pub fn choose_target(device: Arch, supported: &[Arch]) -> Option<(Arch, Output)> {
    if supported.contains(&device) {
        return Some((device, Output::Cubin));
    }
    supported
        .iter()
        .copied()
        .filter(|a| *a <= device)
        .max()
        .map(|a| (a, Output::Ptx))
}

/// An NVRTC program, destroyed on drop. Owns the C strings NVRTC may refer to.
struct Program {
    prog: sys::nvrtcProgram,
    _src: CString,
    _name: CString,
}

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: `prog` came from `create_program` and is destroyed exactly once,
        // here; the strings it may point into are dropped after it.
        let _ = unsafe { result::destroy_program(self.prog) };
    }
}

impl Program {
    fn log(&self) -> String {
        // SAFETY: `prog` is a live program (destroyed only in Drop).
        match unsafe { result::get_program_log(self.prog) } {
            Ok(raw) => c_chars_to_string(&raw),
            Err(e) => format!("(no log: {e})"),
        }
    }
}

fn c_chars_to_string(raw: &[c_char]) -> String {
    let bytes: Vec<u8> = raw
        .iter()
        .map(|&c| c as u8)
        .take_while(|&b| b != 0)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The NVRTC options used for every kernel: C++17, the architecture, and full
/// precision math (no `--use_fast_math`: the f32 tier is 1e-5 and pre/post-
/// processing is bit-exact; kernels opt into fast intrinsics explicitly).
pub fn options(arch: Arch, output: Output) -> Vec<String> {
    let a = match output {
        Output::Ptx => arch.compute(),
        Output::Cubin => arch.sm(),
    };
    vec![format!("--gpu-architecture={a}"), "--std=c++17".to_string()]
}

/// Compiles one kernel source (with the prelude) for `arch`.
pub fn compile(src: &KernelSource, arch: Arch, output: Output) -> Result<Compiled, GpuError> {
    require_nvrtc()?;
    let code = CString::new(full_source(src)).map_err(|_| GpuError::Nvrtc {
        what: "source text",
        message: format!("{} contains a NUL byte", src.name),
    })?;
    let name = CString::new(src.name).map_err(|_| GpuError::Nvrtc {
        what: "program name",
        message: format!("{:?} contains a NUL byte", src.name),
    })?;
    let prog = result::create_program(&code, Some(&name)).map_err(|e| GpuError::Nvrtc {
        what: "nvrtcCreateProgram",
        message: e.to_string(),
    })?;
    let prog = Program {
        prog,
        _src: code,
        _name: name,
    };
    let opts = options(arch, output);
    // SAFETY: `prog.prog` is live; the options are copied into C strings by cudarc
    // for the duration of the call.
    if let Err(e) = unsafe { result::compile_program(prog.prog, &opts) } {
        return Err(GpuError::Compile {
            source_name: src.name,
            arch: arch.sm(),
            message: e.to_string(),
            log: prog.log(),
        });
    }
    let log = prog.log();
    let image = match output {
        Output::Ptx => {
            // SAFETY: `prog.prog` is live and compiled successfully.
            let raw = unsafe { result::get_ptx(prog.prog) }.map_err(|e| GpuError::Nvrtc {
                what: "nvrtcGetPTX",
                message: e.to_string(),
            })?;
            c_chars_to_string(&raw).into_bytes()
        }
        Output::Cubin => {
            let mut size: usize = 0;
            // SAFETY: `prog.prog` is live and compiled for a real architecture;
            // `size` is a live local.
            unsafe { sys::nvrtcGetCUBINSize(prog.prog, &mut size) }
                .result()
                .map_err(|e| GpuError::Nvrtc {
                    what: "nvrtcGetCUBINSize",
                    message: e.to_string(),
                })?;
            let mut buf = vec![0u8; size];
            // SAFETY: `buf` holds exactly the `size` bytes NVRTC writes.
            unsafe { sys::nvrtcGetCUBIN(prog.prog, buf.as_mut_ptr().cast()) }
                .result()
                .map_err(|e| GpuError::Nvrtc {
                    what: "nvrtcGetCUBIN",
                    message: e.to_string(),
                })?;
            buf
        }
    };
    Ok(Compiled { image, log })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_names_parse_and_print() {
        assert_eq!(Arch::parse("sm_87"), Some(Arch::SM87));
        assert_eq!(Arch::parse("compute_90"), Some(Arch::SM90));
        assert_eq!(
            Arch::parse("100"),
            Some(Arch {
                major: 10,
                minor: 0
            })
        );
        assert_eq!(Arch::parse("sm_"), None);
        assert_eq!(Arch::parse("sm_8x"), None);
        assert_eq!(Arch::SM87.sm(), "sm_87");
        assert_eq!(Arch::SM90.compute(), "compute_90");
    }

    #[test]
    fn target_is_cubin_when_supported_else_newest_older_ptx() {
        let a = |s| Arch::parse(s).unwrap();
        let sup = [a("75"), a("80"), a("86"), a("87"), a("89"), a("90")];
        assert_eq!(
            choose_target(Arch::SM87, &sup),
            Some((Arch::SM87, Output::Cubin))
        );
        assert_eq!(
            choose_target(a("120"), &sup),
            Some((Arch::SM90, Output::Ptx))
        );
        assert_eq!(
            choose_target(a("88"), &sup),
            Some((Arch::SM87, Output::Ptx))
        );
        assert_eq!(choose_target(a("70"), &sup), None);
    }
}
