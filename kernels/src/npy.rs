//! A minimal reader for NumPy `.npy` files (format versions 1.0–3.0, C order,
//! little-endian `f4`, `f8`, `u1`, `i8`). It exists so that golden-file tests can
//! load the reference arrays without extra dependencies; it is not a general
//! NumPy implementation.

use std::path::Path;

/// Errors from reading a `.npy` file.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a `.npy` file this reader understands.
    #[error("{path}: {msg}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong.
        msg: String,
    },
}

/// The element type of an array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NpyDtype {
    /// `<f4`
    F32,
    /// `<f8`
    F64,
    /// `|u1`
    U8,
    /// `<i8`
    I64,
}

impl NpyDtype {
    fn size(self) -> usize {
        match self {
            NpyDtype::F32 => 4,
            NpyDtype::F64 | NpyDtype::I64 => 8,
            NpyDtype::U8 => 1,
        }
    }
}

/// An array read from a `.npy` file: raw little-endian bytes plus dtype and shape.
#[derive(Debug, Clone)]
pub struct NpyArray {
    /// Element type.
    pub dtype: NpyDtype,
    /// Shape (C order).
    pub shape: Vec<usize>,
    data: Vec<u8>,
}

impl NpyArray {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values converted to `f32` (`f64`/`i64` are rounded, `u8` widened).
    pub fn to_f32(&self) -> Vec<f32> {
        match self.dtype {
            NpyDtype::F32 => self
                .data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            NpyDtype::F64 => self.to_f64().into_iter().map(|v| v as f32).collect(),
            NpyDtype::U8 => self.data.iter().map(|&v| f32::from(v)).collect(),
            NpyDtype::I64 => self.to_f64().into_iter().map(|v| v as f32).collect(),
        }
    }

    /// The values converted to `f64`.
    pub fn to_f64(&self) -> Vec<f64> {
        match self.dtype {
            NpyDtype::F32 => self.to_f32().into_iter().map(f64::from).collect(),
            NpyDtype::F64 => self
                .data
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect(),
            NpyDtype::U8 => self.data.iter().map(|&v| f64::from(v)).collect(),
            NpyDtype::I64 => self
                .data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f64)
                .collect(),
        }
    }

    /// The raw bytes of a `u8` array, or `None` for other dtypes.
    pub fn as_u8(&self) -> Option<&[u8]> {
        (self.dtype == NpyDtype::U8).then_some(&self.data[..])
    }
}

/// Reads a `.npy` file.
pub fn read_npy(path: impl AsRef<Path>) -> Result<NpyArray, NpyError> {
    let path = path.as_ref();
    let p = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| NpyError::Io {
        path: p.clone(),
        source,
    })?;
    parse_npy(&bytes).map_err(|msg| NpyError::Format { path: p, msg })
}

/// Parses the bytes of a `.npy` file.
pub fn parse_npy(bytes: &[u8]) -> Result<NpyArray, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (bad magic)".into());
    }
    let major = bytes[6];
    let (hlen, hstart) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err("truncated header".into());
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let header = bytes.get(hstart..hstart + hlen).ok_or("truncated header")?;
    let header = std::str::from_utf8(header).map_err(|_| "header is not UTF-8")?;
    let field = |key: &str| -> Result<&str, String> {
        let k = format!("'{key}':");
        let i = header
            .find(&k)
            .ok_or_else(|| format!("header lacks {key}"))?;
        Ok(header[i + k.len()..].trim_start())
    };
    let descr = field("descr")?;
    let dtype = if descr.starts_with("'<f4'") {
        NpyDtype::F32
    } else if descr.starts_with("'<f8'") {
        NpyDtype::F64
    } else if descr.starts_with("'|u1'") || descr.starts_with("'<u1'") {
        NpyDtype::U8
    } else if descr.starts_with("'<i8'") {
        NpyDtype::I64
    } else {
        return Err(format!("unsupported dtype {descr}"));
    };
    if !field("fortran_order")?.starts_with("False") {
        return Err("Fortran-order arrays are not supported".into());
    }
    let shape_s = field("shape")?;
    let end = shape_s.find(')').ok_or("bad shape")?;
    let shape = shape_s
        .get(1..end)
        .ok_or("bad shape")?
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad shape entry {s}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let nbytes = shape
        .iter()
        .try_fold(dtype.size(), |a, &d| a.checked_mul(d))
        .ok_or("shape overflows")?;
    let data = &bytes[hstart + hlen..];
    if data.len() != nbytes {
        return Err(format!(
            "data size {} does not match shape {:?} of {:?}",
            data.len(),
            shape,
            dtype
        ));
    }
    Ok(NpyArray {
        dtype,
        shape,
        data: data.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + h.len() + 1) % 64 != 0 {
            h.push(' ');
        }
        h.push('\n');
        let mut v = b"\x93NUMPY\x01\x00".to_vec();
        v.extend_from_slice(&(h.len() as u16).to_le_bytes());
        v.extend_from_slice(h.as_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn parses_f32_and_u8() {
        let d: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let a = parse_npy(&make("<f4", "(1, 2)", &d)).unwrap();
        assert_eq!(a.shape, vec![1, 2]);
        assert_eq!(a.to_f32(), vec![1.5, -2.0]);
        let b = parse_npy(&make("|u1", "(3,)", &[1, 2, 3])).unwrap();
        assert_eq!(b.as_u8().unwrap(), &[1, 2, 3]);
        assert_eq!(b.shape, vec![3]);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(parse_npy(b"hello world").is_err());
        assert!(parse_npy(&make("<f4", "(2,)", &[0; 4])).is_err());
        assert!(parse_npy(&make("<c8", "(1,)", &[0; 8])).is_err());
        assert!(parse_npy(&make("<f4", "(4294967296, 4294967296)", &[0; 4])).is_err());
    }
}
