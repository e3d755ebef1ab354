//! The CUDA context: presence checks, device selection, module compilation and
//! caching. With [`super::nvrtc`], the FFI layer of the crate.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use cudarc::driver::{sys, CudaContext, CudaFunction, CudaModule, CudaStream};
use cudarc::nvrtc::Ptx;

use super::nvrtc::{self, Arch, Output};
use super::GpuError;
use crate::module_cache::{CacheKeyParts, ModuleCache};
use crate::sources::{source, KernelSource};

/// The names cudarc tries when it loads the driver library.
pub fn driver_lib_candidates() -> Vec<String> {
    let mut v = cudarc::get_lib_name_candidates("cuda");
    v.extend(cudarc::get_lib_name_candidates("nvcuda"));
    dedup(v)
}

pub(crate) fn dedup(v: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(v.len());
    for s in v {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// Whether the driver library (libcuda) can be loaded.
pub fn driver_present() -> bool {
    // SAFETY: dlopen of the candidate names only, no symbol is called; loading
    // libcuda runs its initializers, as any use of the driver does.
    unsafe { sys::is_culib_present() }
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

/// Runs `f`, turning a loader panic into [`GpuError::LoaderPanic`].
fn guarded<T>(what: &'static str, f: impl FnOnce() -> Result<T, GpuError>) -> Result<T, GpuError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
        Err(GpuError::LoaderPanic {
            what,
            message: panic_message(p),
        })
    })
}

/// What the GPU and its software stack are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Device name, e.g. "Orin".
    pub name: String,
    /// Compute capability.
    pub arch: Arch,
    /// `cuDriverGetVersion` (e.g. 12060 for CUDA 12.6).
    pub driver_version: i32,
    /// NVRTC version.
    pub nvrtc_version: (i32, i32),
    /// Multiprocessors.
    pub sm_count: i32,
    /// What the kernels are compiled to: a CUBIN for `arch`, or PTX for an older
    /// architecture when NVRTC predates the GPU (see `nvrtc::choose_target`).
    pub target: (Arch, Output),
    /// Whether the GPU shares memory with the CPU (Jetson).
    pub integrated: bool,
}

/// A CUDA context on one GPU, with a stream and the compiled modules.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    info: DeviceInfo,
    cache: Option<ModuleCache>,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("info", &self.info)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl Gpu {
    /// Opens GPU `ordinal` with the default module cache
    /// ([`ModuleCache::from_env`]). Fails, naming what is missing, when there is
    /// no driver, no NVRTC, no device, or an NVRTC too old for the GPU.
    pub fn new(ordinal: usize) -> Result<Self, GpuError> {
        Self::with_cache(ordinal, ModuleCache::from_env())
    }

    /// Like [`Gpu::new`] with an explicit cache (`None`: always compile).
    pub fn with_cache(ordinal: usize, cache: Option<ModuleCache>) -> Result<Self, GpuError> {
        if !driver_present() {
            return Err(GpuError::DriverMissing {
                searched: driver_lib_candidates(),
            });
        }
        nvrtc::require_nvrtc()?;
        guarded("CUDA context creation", || {
            cudarc::driver::result::init().map_err(GpuError::driver("cuInit"))?;
            let count =
                CudaContext::device_count().map_err(GpuError::driver("cuDeviceGetCount"))?;
            if count <= 0 || ordinal >= count as usize {
                return Err(GpuError::NoDevice { count, ordinal });
            }
            let ctx = CudaContext::new(ordinal).map_err(GpuError::driver("cuCtxCreate"))?;
            let (major, minor) = ctx
                .compute_capability()
                .map_err(GpuError::driver("cuDeviceGetAttribute(compute capability)"))?;
            let mut driver_version: std::ffi::c_int = 0;
            // SAFETY: the driver is loaded and initialized (cuInit above); the
            // pointer is to a live local.
            unsafe { sys::cuDriverGetVersion(&mut driver_version) }
                .result()
                .map_err(GpuError::driver("cuDriverGetVersion"))?;
            let attr = |a| {
                ctx.attribute(a)
                    .map_err(GpuError::driver("cuDeviceGetAttribute"))
            };
            let arch = Arch {
                major: major as u32,
                minor: minor as u32,
            };
            let nvrtc_version = nvrtc::nvrtc_version()?;
            let supported = nvrtc::supported_archs()?;
            let target = nvrtc::choose_target(arch, &supported).ok_or_else(|| {
                GpuError::ArchUnsupported {
                    arch: arch.sm(),
                    nvrtc: format!("{}.{}", nvrtc_version.0, nvrtc_version.1),
                    supported: supported.iter().map(|a| a.sm()).collect(),
                }
            })?;
            let info = DeviceInfo {
                name: ctx.name().map_err(GpuError::driver("cuDeviceGetName"))?,
                arch,
                driver_version,
                nvrtc_version,
                sm_count: attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?,
                integrated: attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_INTEGRATED)? != 0,
                target,
            };
            let stream = ctx.default_stream();
            Ok(Gpu {
                ctx,
                stream,
                info,
                cache,
                modules: Mutex::new(HashMap::new()),
            })
        })
    }

    /// The device and software versions.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// The context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The stream every launcher enqueues on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The cache key parts of this GPU.
    pub fn cache_key_parts(&self) -> CacheKeyParts {
        let (arch, output) = self.info.target;
        CacheKeyParts {
            arch: (arch.major, arch.minor),
            ptx: output == Output::Ptx,
            driver_version: self.info.driver_version,
            nvrtc_version: self.info.nvrtc_version,
        }
    }

    fn load(&self, image: Vec<u8>) -> Result<Arc<CudaModule>, GpuError> {
        let module = match self.info.target.1 {
            Output::Cubin => Ptx::from_binary(image),
            // PTX text (NVRTC output has no NUL inside; a corrupt cache entry then
            // fails to load and is recompiled)
            Output::Ptx => Ptx::from_src(String::from_utf8_lossy(&image).replace('\0', "")),
        };
        guarded("module load", || {
            self.ctx
                .load_module(module)
                .map_err(GpuError::driver("cuModuleLoadData"))
        })
    }

    /// The loaded module of `src`: from memory, else from the disk cache, else
    /// compiled with NVRTC for this GPU (CUBIN, or PTX when NVRTC predates the
    /// GPU) and stored in the cache. A cached entry that fails to load is
    /// recompiled and overwritten.
    pub fn module(&self, src: &'static KernelSource) -> Result<Arc<CudaModule>, GpuError> {
        let mut mods = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = mods.get(src.name) {
            return Ok(m.clone());
        }
        let key = ModuleCache::key(src, self.cache_key_parts());
        let cached = self.cache.as_ref().and_then(|c| c.get(&key));
        let module = match cached.map(|img| self.load(img)) {
            Some(Ok(m)) => m,
            _ => {
                let (arch, output) = self.info.target;
                let compiled = nvrtc::compile(src, arch, output)?;
                if let Some(c) = &self.cache {
                    // A cache that cannot be written only costs a recompilation next time.
                    let _ = c.put(&key, &compiled.image);
                }
                self.load(compiled.image)?
            }
        };
        mods.insert(src.name, module.clone());
        Ok(module)
    }

    /// Compiles (or fetches) every kernel source, so that later launches do not
    /// pay for compilation (call at start-up).
    pub fn warm_up(&self) -> Result<(), GpuError> {
        for s in crate::sources::SOURCES {
            self.module(s)?;
        }
        Ok(())
    }

    /// The kernel `kernel` of source file `source_name`.
    pub fn function(&self, source_name: &str, kernel: &str) -> Result<CudaFunction, GpuError> {
        let unknown = || GpuError::UnknownKernel {
            source_name: source_name.to_string(),
            kernel: kernel.to_string(),
        };
        let src = source(source_name).ok_or_else(unknown)?;
        if !src.kernels.contains(&kernel) {
            return Err(unknown());
        }
        self.module(src)?
            .load_function(kernel)
            .map_err(GpuError::driver("cuModuleGetFunction"))
    }

    /// Waits for the stream.
    pub fn synchronize(&self) -> Result<(), GpuError> {
        self.stream
            .synchronize()
            .map_err(GpuError::driver("cuStreamSynchronize"))
    }
}
