//! On-disk cache of compiled kernel modules (CUBIN), keyed by the source's
//! SHA-256, the GPU architecture, the driver version and the NVRTC version, so a
//! changed kernel, GPU, driver or compiler never reuses a stale binary.
//!
//! Entries are written to a temporary file and renamed into place, so a crash or
//! a concurrent writer never leaves a truncated entry under a valid name. A
//! corrupt entry is still harmless: the module then fails to load and the caller
//! recompiles and overwrites it. Plain Rust, usable without a GPU (and tested).

use std::io;
use std::path::{Path, PathBuf};

use crate::sources::{source_hash, KernelSource};

/// Environment variable that overrides the cache directory; set it to an empty
/// string to disable the cache.
pub const CACHE_ENV: &str = "EDGESEG_KERNEL_CACHE";

/// A cache directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleCache {
    dir: PathBuf,
}

/// Everything a compiled module depends on besides the source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKeyParts {
    /// The architecture compiled for, e.g. `(8, 7)`.
    pub arch: (u32, u32),
    /// PTX for the virtual architecture (JIT-compiled by the driver, used when
    /// NVRTC is older than the GPU) rather than a CUBIN for the real one.
    pub ptx: bool,
    /// `cuDriverGetVersion`, e.g. 12060.
    pub driver_version: i32,
    /// `nvrtcVersion`, e.g. `(12, 6)`.
    pub nvrtc_version: (i32, i32),
}

impl ModuleCache {
    /// A cache in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The default cache: `$EDGESEG_KERNEL_CACHE` if set (none if empty), else
    /// `$XDG_CACHE_HOME/edgeseg/kernels`, else `$HOME/.cache/edgeseg/kernels`.
    pub fn from_env() -> Option<Self> {
        if let Some(d) = std::env::var_os(CACHE_ENV) {
            return (!d.is_empty()).then(|| Self::new(d));
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
        Some(Self::new(base.join("edgeseg").join("kernels")))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file name of a module: source stem, 16 hex digits of the source hash
    /// (prelude included), architecture, driver and NVRTC versions.
    pub fn key(src: &KernelSource, parts: CacheKeyParts) -> String {
        let stem = src.name.trim_end_matches(".cu");
        let hash = source_hash(src);
        let (kind, ext) = if parts.ptx {
            ("compute", "ptx")
        } else {
            ("sm", "cubin")
        };
        format!(
            "{stem}-{}-{kind}_{}{}-drv{}-nvrtc{}.{}.{ext}",
            &hash[..16],
            parts.arch.0,
            parts.arch.1,
            parts.driver_version,
            parts.nvrtc_version.0,
            parts.nvrtc_version.1,
        )
    }

    /// The cached bytes under `key`, if any (an unreadable entry counts as absent).
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.dir.join(key))
            .ok()
            .filter(|b| !b.is_empty())
    }

    /// Stores `data` under `key` atomically (temporary file + rename).
    pub fn put(&self, key: &str, data: &[u8]) -> io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let tmp = self.dir.join(format!(".{key}.{}.tmp", std::process::id()));
        std::fs::write(&tmp, data)?;
        std::fs::rename(&tmp, self.dir.join(key)).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::SOURCES;

    fn parts() -> CacheKeyParts {
        CacheKeyParts {
            arch: (8, 7),
            ptx: false,
            driver_version: 12060,
            nvrtc_version: (12, 6),
        }
    }

    #[test]
    fn key_changes_with_every_part() {
        let s = &SOURCES[0];
        let k = ModuleCache::key(s, parts());
        assert!(k.starts_with("preprocess-") && k.ends_with("-sm_87-drv12060-nvrtc12.6.cubin"));
        let mut p = parts();
        p.arch = (9, 0);
        assert_ne!(ModuleCache::key(s, p), k);
        let mut p = parts();
        p.ptx = true;
        assert!(ModuleCache::key(s, p).ends_with("-compute_87-drv12060-nvrtc12.6.ptx"));
        let mut p = parts();
        p.driver_version = 12080;
        assert_ne!(ModuleCache::key(s, p), k);
        let mut p = parts();
        p.nvrtc_version = (12, 9);
        assert_ne!(ModuleCache::key(s, p), k);
        assert_ne!(ModuleCache::key(&SOURCES[1], parts()), k);
    }

    #[test]
    fn put_then_get_roundtrips_and_missing_is_none() {
        let dir = std::env::temp_dir().join(format!("edgeseg-cache-test-{}", std::process::id()));
        let c = ModuleCache::new(&dir);
        assert_eq!(c.get("nope.cubin"), None);
        c.put("a.cubin", b"\x7fELF...").unwrap();
        assert_eq!(c.get("a.cubin").as_deref(), Some(&b"\x7fELF..."[..]));
        c.put("a.cubin", b"v2").unwrap();
        assert_eq!(c.get("a.cubin").as_deref(), Some(&b"v2"[..]));
        // no temporary files left behind
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
