//! Distillation of small students from the LiteMedSAM teacher (`edgeseg-tools
//! distill`): a teacher cache built once ([`cache`]), then two training stages on
//! candle ([`train`]), with loss curves ([`plot`]).

pub mod cache;
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
