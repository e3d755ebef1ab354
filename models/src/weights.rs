//! Reading checkpoints: PyTorch `.pth` (zip + pickle, through candle's reader)
//! and safetensors (memory-mapped with memmap2), and conversion between them.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use crate::ModelError;

/// All tensors of a checkpoint, by their PyTorch state-dict names.
pub type TensorMap = HashMap<String, Tensor>;

/// Reads every tensor of a checkpoint; the format is chosen by extension
/// (`.safetensors`, else PyTorch). A `{"model": state_dict}` or
/// `{"state_dict": …}` wrapper is unwrapped. Non-float entries such as
/// BatchNorm's `num_batches_tracked` are kept as they are.
pub fn read_checkpoint(path: &Path) -> Result<TensorMap, ModelError> {
    if !path.is_file() {
        return Err(ModelError::Io {
            path: path.display().to_string(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    let is_st = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    if is_st {
        read_safetensors(path)
    } else {
        read_pth(path)
    }
}

fn checkpoint_err(path: &Path, e: impl std::fmt::Display) -> ModelError {
    ModelError::Checkpoint {
        path: path.display().to_string(),
        msg: e.to_string(),
    }
}

/// Reads a PyTorch checkpoint (`torch.save` zip format).
pub fn read_pth(path: &Path) -> Result<TensorMap, ModelError> {
    let mut last = None;
    for key in [None, Some("model"), Some("state_dict")] {
        match candle_core::pickle::read_all_with_key(path, key) {
            Ok(v) if !v.is_empty() => return Ok(v.into_iter().collect()),
            Ok(_) => {}
            Err(e) => last = Some(e),
        }
    }
    Err(checkpoint_err(
        path,
        match last {
            Some(e) => format!("not a readable PyTorch checkpoint: {e}"),
            None => "no tensors found".to_string(),
        },
    ))
}

/// Reads a safetensors file through a read-only memory map; the tensors are
/// copied out of the map before it is dropped.
pub fn read_safetensors(path: &Path) -> Result<TensorMap, ModelError> {
    let file = std::fs::File::open(path).map_err(|source| ModelError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let map = mmap_readonly(&file).map_err(|source| ModelError::Io {
        path: path.display().to_string(),
        source,
    })?;
    candle_core::safetensors::load_buffer(&map, &Device::Cpu).map_err(|e| checkpoint_err(path, e))
}

/// A read-only memory map of a whole file (the type [`map_file_readonly`] returns).
pub use memmap2::Mmap;

/// Maps a whole file read-only, for large write-once data files such as the
/// distillation teacher cache. The caller must not let the file be truncated or
/// rewritten while the map lives (see the `SAFETY` note of the crate's one
/// `unsafe` block).
pub fn map_file_readonly(path: &Path) -> std::io::Result<Mmap> {
    let file = std::fs::File::open(path)?;
    mmap_readonly(&file)
}

/// The only `unsafe` of the crate: mapping a file read-only.
#[allow(unsafe_code)]
fn mmap_readonly(file: &std::fs::File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: the map is read-only. memmap2 requires that the file is not
    // truncated or modified by another process while mapped. Checkpoints are
    // copied out of the map during one load; teacher caches are written once by
    // their builder (which finishes before any reader maps them) and never
    // rewritten in place. Rewriting a mapped file concurrently is outside what
    // we support (as for any mmap-based loader).
    unsafe { memmap2::Mmap::map(file) }
}

/// Converts a checkpoint (any format [`read_checkpoint`] reads) to
/// safetensors, keeping tensor names and values (f32 tensors only; integer
/// bookkeeping entries such as `num_batches_tracked` are dropped).
pub fn convert_to_safetensors(src: &Path, dst: &Path) -> Result<usize, ModelError> {
    let map = read_checkpoint(src)?;
    let map: TensorMap = map
        .into_iter()
        .filter(|(_, t)| t.dtype() == candle_core::DType::F32)
        .collect();
    candle_core::safetensors::save(&map, dst).map_err(|e| checkpoint_err(dst, e))?;
    Ok(map.len())
}
