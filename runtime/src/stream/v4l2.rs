//! V4L2 capture (UVC grabbers beside ultrasound and endoscopy towers), behind
//! the cargo feature `v4l2`. Without the feature, `v4l2:` inputs report that
//! this build lacks it.

use super::source::{Source, SourceError};

/// Opens `DEVICE[:WxH[:FORMAT]]`.
#[cfg(not(feature = "v4l2"))]
pub fn open(spec: &str) -> Result<Box<dyn Source>, SourceError> {
    Err(SourceError::V4l2(format!(
        "`{spec}`: this build has no V4L2 support (rebuild with `--features v4l2`)"
    )))
}

#[cfg(feature = "v4l2")]
pub use imp::open;

#[cfg(feature = "v4l2")]
mod imp {
    use super::*;
    pub fn open(spec: &str) -> Result<Box<dyn Source>, SourceError> {
        Err(SourceError::V4l2(format!("`{spec}`: not implemented yet")))
    }
}
