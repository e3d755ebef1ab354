//! Building (and signing) bundles.

use std::path::Path;

use ed25519_dalek::{Signer, SigningKey};

use super::{
    hex, sha256, signing_message, Bundle, BundleError, DType, Manifest, SectionDigest, SectionKind,
    VerifyPolicy, ALIGN, FORMAT_MAJOR, FORMAT_MINOR, HEADER_LEN, MAGIC, MANIFEST_NAME,
    SECTION_ENTRY_LEN, SECTION_NAME_MAX, SIGNATURE_NAME, TENSOR_DATA_NAME, TENSOR_ENTRY_FIXED,
    TENSOR_TABLE_NAME, TRAILER_LEN, TRAILER_MAGIC,
};

struct TensorIn {
    name: String,
    dtype: DType,
    shape: Vec<u64>,
    bytes: Vec<u8>,
}

/// Builds a bundle from a manifest, named graphs and named tensors.
///
/// ```
/// use edgeseg_runtime::bundle::{Bundle, BundleWriter, DType, Manifest, VerifyPolicy};
/// let bytes = BundleWriter::new(Manifest::minimal("demo", "tiny", "0.1.0"))
///     .graph("encoder.onnx", b"graph".to_vec())
///     .tensor("w", DType::F32, &[2], vec![0u8; 8])
///     .to_bytes()
///     .unwrap();
/// let b = Bundle::from_bytes(&bytes, &VerifyPolicy::default()).unwrap();
/// assert_eq!(b.tensor("w").unwrap().shape, &[2]);
/// ```
pub struct BundleWriter {
    manifest: Manifest,
    graphs: Vec<(String, Vec<u8>)>,
    tensors: Vec<TensorIn>,
    key: Option<SigningKey>,
}

fn build_err(reason: impl Into<String>) -> BundleError {
    BundleError::Build {
        reason: reason.into(),
    }
}

fn pad_to_align(out: &mut Vec<u8>) {
    let rem = out.len() % ALIGN;
    if rem != 0 {
        out.resize(out.len() + ALIGN - rem, 0);
    }
}

impl BundleWriter {
    /// Start from `manifest` (its `sections` list is recomputed).
    pub fn new(manifest: Manifest) -> Self {
        BundleWriter {
            manifest,
            graphs: Vec::new(),
            tensors: Vec::new(),
            key: None,
        }
    }

    /// Add a graph section (e.g. `encoder.onnx`).
    pub fn graph(mut self, name: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Self {
        self.graphs.push((name.into(), bytes.into()));
        self
    }

    /// Add a tensor; `bytes` are the raw little-endian elements.
    pub fn tensor(
        mut self,
        name: impl Into<String>,
        dtype: DType,
        shape: &[u64],
        bytes: impl Into<Vec<u8>>,
    ) -> Self {
        self.tensors.push(TensorIn {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
            bytes: bytes.into(),
        });
        self
    }

    /// Sign the bundle with `key`.
    pub fn sign_with(mut self, key: SigningKey) -> Self {
        self.key = Some(key);
        self
    }

    /// Serialize the bundle, then verify the result with [`Bundle::from_bytes`]
    /// (pinning the signing key if there is one) before returning it.
    pub fn to_bytes(&self) -> Result<Vec<u8>, BundleError> {
        // Tensor data and table.
        let mut data = Vec::new();
        let mut table = Vec::new();
        let count = u32::try_from(self.tensors.len()).map_err(|_| build_err("too many tensors"))?;
        table.extend_from_slice(&count.to_le_bytes());
        table.extend_from_slice(&0u32.to_le_bytes());
        for t in &self.tensors {
            pad_to_align(&mut data);
            let name_len = u16::try_from(t.name.len())
                .map_err(|_| build_err(format!("tensor name {:?} is too long", t.name)))?;
            let rank = u8::try_from(t.shape.len())
                .map_err(|_| build_err(format!("tensor {:?} has too many dims", t.name)))?;
            let start = table.len();
            table.extend_from_slice(&name_len.to_le_bytes());
            table.push(t.dtype.code());
            table.push(rank);
            table.extend_from_slice(&0u32.to_le_bytes());
            table.extend_from_slice(&(data.len() as u64).to_le_bytes());
            table.extend_from_slice(&(t.bytes.len() as u64).to_le_bytes());
            debug_assert_eq!(table.len() - start, TENSOR_ENTRY_FIXED);
            for d in &t.shape {
                table.extend_from_slice(&d.to_le_bytes());
            }
            table.extend_from_slice(t.name.as_bytes());
            table.resize(table.len().div_ceil(8) * 8, 0);
            data.extend_from_slice(&t.bytes);
        }
        // Sections in file order (manifest first, signature last).
        let mut body: Vec<(SectionKind, &str, &[u8])> = Vec::new();
        for (name, bytes) in &self.graphs {
            body.push((SectionKind::Graph, name, bytes));
        }
        body.push((SectionKind::TensorTable, TENSOR_TABLE_NAME, &table));
        body.push((SectionKind::TensorData, TENSOR_DATA_NAME, &data));
        let mut manifest = self.manifest.clone();
        manifest.sections = body
            .iter()
            .map(|(kind, name, bytes)| SectionDigest {
                kind: *kind,
                name: name.to_string(),
                length: bytes.len() as u64,
                sha256: hex(&sha256(bytes)),
            })
            .collect();
        // compact JSON: the manifest of a quantized bundle names hundreds of
        // tensors, and indentation would be ~20 % of it (`edgeseg-tools inspect`
        // prints its contents)
        let manifest_bytes = serde_json::to_vec(&manifest)
            .map_err(|e| build_err(format!("manifest does not serialize: {e}")))?;
        let signature = self.key.as_ref().map(|key| {
            let sig = key.sign(&signing_message(&manifest_bytes));
            let mut s = key.verifying_key().to_bytes().to_vec();
            s.extend_from_slice(&sig.to_bytes());
            s
        });
        let mut all: Vec<(SectionKind, &str, &[u8])> =
            vec![(SectionKind::Manifest, MANIFEST_NAME, &manifest_bytes)];
        all.extend(body);
        if let Some(s) = &signature {
            all.push((SectionKind::Signature, SIGNATURE_NAME, s));
        }
        for (_, name, _) in &all {
            if name.is_empty() || name.len() > SECTION_NAME_MAX {
                return Err(build_err(format!(
                    "section name {name:?} must be 1 to {SECTION_NAME_MAX} bytes"
                )));
            }
        }
        // Layout.
        let count = all.len();
        let mut out = vec![0u8; HEADER_LEN + count * SECTION_ENTRY_LEN];
        pad_to_align(&mut out);
        let mut entries = Vec::with_capacity(count);
        for (kind, name, bytes) in &all {
            pad_to_align(&mut out);
            entries.push((*kind, *name, out.len() as u64, bytes.len() as u64));
            out.extend_from_slice(bytes);
        }
        pad_to_align(&mut out);
        let file_len = (out.len() + TRAILER_LEN) as u64;
        out[0..8].copy_from_slice(&MAGIC);
        out[8..10].copy_from_slice(&FORMAT_MAJOR.to_le_bytes());
        out[10..12].copy_from_slice(&FORMAT_MINOR.to_le_bytes());
        out[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        out[16..20].copy_from_slice(&(count as u32).to_le_bytes());
        out[24..32].copy_from_slice(&(HEADER_LEN as u64).to_le_bytes());
        out[32..40].copy_from_slice(&file_len.to_le_bytes());
        for (i, (kind, name, offset, length)) in entries.iter().enumerate() {
            let e = HEADER_LEN + i * SECTION_ENTRY_LEN;
            out[e..e + 4].copy_from_slice(&kind.code().to_le_bytes());
            out[e + 8..e + 16].copy_from_slice(&offset.to_le_bytes());
            out[e + 16..e + 24].copy_from_slice(&length.to_le_bytes());
            out[e + 24..e + 24 + name.len()].copy_from_slice(name.as_bytes());
        }
        let digest = sha256(&out);
        out.extend_from_slice(&TRAILER_MAGIC);
        out.extend_from_slice(&[0u8; 24]);
        out.extend_from_slice(&digest);
        // Self-check with the reader.
        let policy = VerifyPolicy {
            pinned_key: self.key.as_ref().map(|k| k.verifying_key()),
            ..VerifyPolicy::default()
        };
        Bundle::from_bytes(&out, &policy)
            .map_err(|e| build_err(format!("the written bundle does not verify: {e}")))?;
        Ok(out)
    }

    /// Write the bundle to `path` (via a temporary file and a rename).
    pub fn write_to(&self, path: impl AsRef<Path>) -> Result<(), BundleError> {
        let path = path.as_ref();
        let bytes = self.to_bytes()?;
        let tmp = path.with_extension("tmp");
        let io = |source| BundleError::Io {
            path: path.to_path_buf(),
            source,
        };
        std::fs::write(&tmp, &bytes).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}
