//! Distillation of small students from the LiteMedSAM teacher (`edgeseg-tools
//! distill`): a teacher cache built once ([`cache`]), then two training stages on
//! candle ([`train`]), with loss curves ([`plot`]).

pub mod cache;
pub mod embedding_norm;
pub mod plot;
pub mod provenance;
pub mod train;

use std::path::PathBuf;

/// Errors of distillation.
#[derive(Debug, thiserror::Error)]
pub enum DistillError {
    /// Invalid settings.
    #[error("{0}")]
    Config(String),
    /// A dataset could not be read.
    #[error("data: {0}")]
    Data(String),
    /// The teacher failed.
    #[error("teacher: {0}")]
    Teacher(String),
    /// A malformed or mismatched cache.
    #[error("teacher cache: {0}")]
    Cache(String),
    /// Training failed.
    #[error("training: {0}")]
    Train(String),
    /// A file could not be read or written.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// An exclusive advisory lock on a cache or run folder (`.lock` inside it), so that two
/// `distill` processes never write the same files. The OS releases it when the process
/// ends, however it ends, so a crash leaves no stale lock.
#[derive(Debug)]
pub struct DirLock {
    _file: std::fs::File,
}

impl DirLock {
    /// Locks `dir` (which must exist); fails at once if another process holds it.
    pub fn acquire(dir: &std::path::Path) -> Result<Self, DistillError> {
        let path = dir.join(".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| DistillError::File {
                path: path.clone(),
                message: e.to_string(),
            })?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(DistillError::Config(format!(
                "{} is in use by another distill process; wait for it or stop it",
                dir.display()
            ))),
            Err(std::fs::TryLockError::Error(e)) => Err(DistillError::File {
                path,
                message: e.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locked_folder_is_refused_until_released() {
        let dir = std::env::temp_dir().join(format!("edgeseg-dirlock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = DirLock::acquire(&dir).unwrap();
        let err = DirLock::acquire(&dir).unwrap_err().to_string();
        assert!(err.contains("in use by another distill process"), "{err}");
        drop(first);
        DirLock::acquire(&dir).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
