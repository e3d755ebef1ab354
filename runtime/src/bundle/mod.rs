//! The model bundle: one verified file per model, what gets flashed onto devices.
//!
//! The byte layout, limits, verification order and threat model are specified in
//! `docs/bundle-format.md`; this module is the reference reader and writer.
//!
//! * [`Bundle::open`] memory-maps a file and validates all of it before returning:
//!   header, section table, the whole-file SHA-256, the manifest, every section's
//!   SHA-256 recorded in the manifest, the Ed25519 signature (per
//!   [`VerifyPolicy`]) and the tensor table. Nothing is allocated from a size read
//!   out of the file before that size has been checked against the input length
//!   and the [`Limits`].
//! * Accessors then hand out zero-copy slices of the map: [`Bundle::graph`] and
//!   [`Bundle::tensor`].
//! * [`BundleWriter`] builds (and optionally signs) a bundle, and re-reads its own
//!   output with the same parser before handing it out.

mod error;
mod manifest;
mod writer;

use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Range;
use std::path::Path;

use ed25519_dalek::{Signature, VerifyingKey};
use memmap2::Mmap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use error::BundleError;
pub use manifest::{
    Architecture, InputSpec, Layout, Manifest, ModelInfo, Normalization, OutputSpec, PromptKind,
    Provenance, Quantization, SectionDigest,
};
pub use writer::BundleWriter;

/// The 8 magic bytes at offset 0.
pub const MAGIC: [u8; 8] = *b"EDGESEG\0";
/// The 8 magic bytes that open the trailer.
pub const TRAILER_MAGIC: [u8; 8] = *b"ESEGEND\0";
/// Format major version written and read by this code.
pub const FORMAT_MAJOR: u16 = 1;
/// Newest format minor version this reader understands (and the one it writes).
pub const FORMAT_MINOR: u16 = 0;
/// Length of the fixed header.
pub const HEADER_LEN: usize = 64;
/// Length of one section table entry.
pub const SECTION_ENTRY_LEN: usize = 64;
/// Length of the trailer (magic, reserved, whole-file SHA-256).
pub const TRAILER_LEN: usize = 64;
/// Alignment of every section, of the file length and of every tensor inside the tensor-data section.
pub const ALIGN: usize = 64;
/// Maximum length in bytes of a section name (fixed field of the section entry).
pub const SECTION_NAME_MAX: usize = 40;
/// Length of the signature section: 32-byte Ed25519 public key + 64-byte signature.
pub const SIGNATURE_SECTION_LEN: usize = 96;
/// Domain-separation prefix of the signed message.
pub const SIGNATURE_CONTEXT: &[u8] = b"edgeseg-bundle-signature-v1\0";
/// Hash comparisons are skipped only in fuzzing builds (`--cfg fuzzing`, set by
/// cargo-fuzz and never by a product build), so that the fuzzer reaches the
/// section, manifest and tensor-table parsers behind the hashes. Signatures are
/// verified in every build.
const CHECK_HASHES: bool = !cfg!(fuzzing);
/// Fixed part of a tensor table entry (before dims and name).
const TENSOR_ENTRY_FIXED: usize = 24;

/// Well-known section names.
pub const MANIFEST_NAME: &str = "manifest.json";
pub const TENSOR_TABLE_NAME: &str = "tensors.table";
pub const TENSOR_DATA_NAME: &str = "tensors.data";
pub const SIGNATURE_NAME: &str = "signature";

/// What a section holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SectionKind {
    /// The JSON manifest (exactly one).
    Manifest,
    /// An opaque graph blob, e.g. `encoder.onnx` (any number).
    Graph,
    /// The binary tensor table (exactly one).
    TensorTable,
    /// The raw tensor data the table points into (exactly one).
    TensorData,
    /// Public key + Ed25519 signature (at most one).
    Signature,
}

impl SectionKind {
    /// The on-disk code.
    pub fn code(self) -> u32 {
        match self {
            SectionKind::Manifest => 1,
            SectionKind::Graph => 2,
            SectionKind::TensorTable => 3,
            SectionKind::TensorData => 4,
            SectionKind::Signature => 5,
        }
    }

    /// Decode an on-disk code (closed set).
    pub fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            1 => SectionKind::Manifest,
            2 => SectionKind::Graph,
            3 => SectionKind::TensorTable,
            4 => SectionKind::TensorData,
            5 => SectionKind::Signature,
            _ => return None,
        })
    }
}

/// Element type of a tensor (closed set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    F16,
    Bf16,
    I8,
    U8,
    I32,
    I64,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> u64 {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::Bf16 => 2,
            DType::I8 | DType::U8 => 1,
            DType::I64 => 8,
        }
    }

    /// The on-disk code.
    pub fn code(self) -> u8 {
        match self {
            DType::F32 => 1,
            DType::F16 => 2,
            DType::Bf16 => 3,
            DType::I8 => 4,
            DType::U8 => 5,
            DType::I32 => 6,
            DType::I64 => 7,
        }
    }

    /// Decode an on-disk code.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => DType::F32,
            2 => DType::F16,
            3 => DType::Bf16,
            4 => DType::I8,
            5 => DType::U8,
            6 => DType::I32,
            7 => DType::I64,
            _ => return None,
        })
    }
}

/// Explicit parser limits. Every count and size read from a bundle is checked
/// against these (and against the input length) before it is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_sections: u32,
    pub max_manifest_bytes: u64,
    pub max_tensors: u64,
    pub max_rank: u8,
    pub max_tensor_bytes: u64,
    pub max_tensor_name_bytes: u16,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sections: 64,
            max_manifest_bytes: 1 << 20,
            max_tensors: 1 << 16,
            max_rank: 8,
            max_tensor_bytes: 1 << 32,
            max_tensor_name_bytes: 256,
        }
    }
}

/// How a bundle is verified. Hashes are always verified. A present signature
/// is always verified (against the key embedded in the bundle). With a pinned
/// key, a valid signature from exactly that key is required.
#[derive(Debug, Clone, Default)]
pub struct VerifyPolicy {
    pub pinned_key: Option<VerifyingKey>,
    pub limits: Limits,
}

impl VerifyPolicy {
    /// Hashes only; a signature, if present, must still verify.
    pub fn integrity_only() -> Self {
        Self::default()
    }

    /// Require a valid signature by `key`.
    pub fn require_signature(key: VerifyingKey) -> Self {
        VerifyPolicy {
            pinned_key: Some(key),
            limits: Limits::default(),
        }
    }
}

/// A zero-copy view of one tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorView<'a> {
    pub name: &'a str,
    pub dtype: DType,
    pub shape: &'a [u64],
    /// The raw little-endian bytes, 64-byte aligned in the file.
    pub bytes: &'a [u8],
}

#[derive(Debug, Clone)]
struct TensorEntry {
    name: String,
    dtype: DType,
    shape: Vec<u64>,
    range: Range<usize>,
}

#[derive(Debug)]
struct Parsed {
    manifest: Manifest,
    graphs: Vec<(String, Range<usize>)>,
    tensors: Vec<TensorEntry>,
    tensor_index: BTreeMap<String, usize>,
    signer: Option<VerifyingKey>,
    file_sha256: [u8; 32],
}

/// A verified, memory-mapped bundle.
#[derive(Debug)]
pub struct Bundle {
    map: Mmap,
    parsed: Parsed,
}

impl Bundle {
    /// Memory-map `path` and verify it completely under `policy`.
    pub fn open(path: impl AsRef<Path>, policy: &VerifyPolicy) -> Result<Self, BundleError> {
        let path = path.as_ref();
        let io = |source| BundleError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let min = (HEADER_LEN + TRAILER_LEN) as u64;
        if len < min {
            return Err(BundleError::TooShort { len, min });
        }
        let map = map_readonly(&file).map_err(io)?;
        let parsed = parse(&map, policy)?;
        Ok(Bundle { map, parsed })
    }

    /// Verify `bytes` completely under `policy`, then copy them into a
    /// page-aligned private buffer (so tensor data keeps its 64-byte alignment).
    pub fn from_bytes(bytes: &[u8], policy: &VerifyPolicy) -> Result<Self, BundleError> {
        let parsed = parse(bytes, policy)?;
        let io = |source| BundleError::Io {
            path: "<memory>".into(),
            source,
        };
        let mut anon = memmap2::MmapMut::map_anon(bytes.len()).map_err(io)?;
        anon.copy_from_slice(bytes);
        let map = anon.make_read_only().map_err(io)?;
        Ok(Bundle { map, parsed })
    }

    /// The verified manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.parsed.manifest
    }

    /// The bytes of the graph section called `name` (zero-copy).
    pub fn graph(&self, name: &str) -> Option<&[u8]> {
        self.parsed
            .graphs
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, r)| self.map.get(r.clone()))
    }

    /// Names of the graph sections, in file order.
    pub fn graph_names(&self) -> impl Iterator<Item = &str> {
        self.parsed.graphs.iter().map(|(n, _)| n.as_str())
    }

    /// The tensor called `name` (zero-copy).
    pub fn tensor(&self, name: &str) -> Option<TensorView<'_>> {
        let i = *self.parsed.tensor_index.get(name)?;
        self.view(i)
    }

    /// All tensors, in table order.
    pub fn tensors(&self) -> impl Iterator<Item = TensorView<'_>> {
        (0..self.parsed.tensors.len()).filter_map(|i| self.view(i))
    }

    fn view(&self, i: usize) -> Option<TensorView<'_>> {
        let t = self.parsed.tensors.get(i)?;
        Some(TensorView {
            name: &t.name,
            dtype: t.dtype,
            shape: &t.shape,
            bytes: self.map.get(t.range.clone())?,
        })
    }

    /// The key that signed the bundle, if it is signed (always verified).
    pub fn signer(&self) -> Option<&VerifyingKey> {
        self.parsed.signer.as_ref()
    }

    /// The whole-file SHA-256 from the (verified) trailer.
    pub fn file_sha256(&self) -> [u8; 32] {
        self.parsed.file_sha256
    }

    /// The whole file.
    pub fn as_bytes(&self) -> &[u8] {
        &self.map
    }
}

/// The only `unsafe` of the crate.
#[allow(unsafe_code)]
fn map_readonly(file: &File) -> std::io::Result<Mmap> {
    // SAFETY: `Mmap::map` is unsafe because the mapped file could be modified
    // or truncated by another process while mapped, which would change bytes
    // behind `&[u8]` (or raise SIGBUS). Bundles are read-only install artifacts
    // (opened here read-only, written by the flasher into a fresh slot and never
    // rewritten in place); concurrent modification of an installed bundle by a
    // process with write access is outside the threat model in
    // docs/bundle-format.md. All verification happens on this one mapping.
    unsafe { Mmap::map(file) }
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// The message an Ed25519 bundle signature signs:
/// `SIGNATURE_CONTEXT || FORMAT_MAJOR (u16 LE) || SHA-256(manifest bytes)`.
pub fn signing_message(manifest_bytes: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(SIGNATURE_CONTEXT.len() + 2 + 32);
    msg.extend_from_slice(SIGNATURE_CONTEXT);
    msg.extend_from_slice(&FORMAT_MAJOR.to_le_bytes());
    msg.extend_from_slice(&sha256(manifest_bytes));
    msg
}

// ---------------------------------------------------------------- reading

fn rd_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}
fn rd_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}
fn rd_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

fn field(field: &'static str, offset: usize, reason: impl Into<String>) -> BundleError {
    BundleError::Field {
        field,
        offset: offset as u64,
        reason: reason.into(),
    }
}

fn check_zero(bytes: &[u8], base: usize, context: &str) -> Result<(), BundleError> {
    match bytes.iter().position(|&b| b != 0) {
        None => Ok(()),
        Some(p) => Err(BundleError::NonZeroPadding {
            offset: (base + p) as u64,
            context: context.to_string(),
        }),
    }
}

fn to_usize(v: u64, what: &str) -> Result<usize, BundleError> {
    usize::try_from(v).map_err(|_| BundleError::Limit {
        what: what.to_string(),
        value: v,
        limit: usize::MAX as u64,
    })
}

struct SectionEntry<'a> {
    kind: SectionKind,
    name: &'a str,
    range: Range<usize>,
}

/// Validate a whole bundle. See docs/bundle-format.md, "Verification order".
fn parse(bytes: &[u8], policy: &VerifyPolicy) -> Result<Parsed, BundleError> {
    let limits = &policy.limits;
    let len = bytes.len();
    let min = HEADER_LEN + TRAILER_LEN;
    if len < min {
        return Err(BundleError::TooShort {
            len: len as u64,
            min: min as u64,
        });
    }
    // 1. Header.
    let mut magic = [0u8; 8];
    magic.copy_from_slice(&bytes[..8]);
    if magic != MAGIC {
        return Err(BundleError::BadMagic { found: magic });
    }
    let major = rd_u16(bytes, 8).unwrap_or(0);
    let minor = rd_u16(bytes, 10).unwrap_or(0);
    if major != FORMAT_MAJOR || minor > FORMAT_MINOR {
        return Err(BundleError::UnsupportedVersion {
            major,
            minor,
            supported_major: FORMAT_MAJOR,
            supported_minor: FORMAT_MINOR,
        });
    }
    let header_len = rd_u32(bytes, 12).unwrap_or(0);
    if header_len as usize != HEADER_LEN {
        return Err(field(
            "header length",
            12,
            format!("is {header_len}, must be {HEADER_LEN}"),
        ));
    }
    let section_count = rd_u32(bytes, 16).unwrap_or(0);
    let flags = rd_u32(bytes, 20).unwrap_or(0);
    if flags != 0 {
        return Err(field(
            "header flags",
            20,
            format!("{flags:#x}: no flags are defined in format 1.0"),
        ));
    }
    let table_offset = rd_u64(bytes, 24).unwrap_or(0);
    let file_len = rd_u64(bytes, 32).unwrap_or(0);
    check_zero(&bytes[40..HEADER_LEN], 40, "reserved header bytes")?;
    if file_len != len as u64 {
        return Err(field(
            "file length",
            32,
            format!(
                "header says {file_len} bytes but the input is {len} bytes (truncated or extended)"
            ),
        ));
    }
    if !len.is_multiple_of(ALIGN) {
        return Err(field(
            "file length",
            32,
            format!("{len} is not a multiple of {ALIGN}"),
        ));
    }
    // 2. Trailer and whole-file hash.
    let content_end = len - TRAILER_LEN;
    let trailer = &bytes[content_end..];
    if trailer[..8] != TRAILER_MAGIC {
        return Err(field(
            "trailer magic",
            content_end,
            format!("is {:02x?}, expected \"ESEGEND\\0\"", &trailer[..8]),
        ));
    }
    check_zero(&trailer[8..32], content_end + 8, "reserved trailer bytes")?;
    let mut file_sha256 = [0u8; 32];
    file_sha256.copy_from_slice(&trailer[32..64]);
    let actual = sha256(&bytes[..content_end]);
    if actual != file_sha256 && CHECK_HASHES {
        return Err(BundleError::FileHashMismatch {
            expected: hex(&file_sha256),
            actual: hex(&actual),
        });
    }
    // 3. Section table.
    if section_count == 0 || section_count > limits.max_sections {
        return Err(BundleError::Limit {
            what: "section count (header offset 16)".into(),
            value: section_count.into(),
            limit: limits.max_sections.into(),
        });
    }
    if table_offset != HEADER_LEN as u64 {
        return Err(field(
            "section table offset",
            24,
            format!("is {table_offset}, must be {HEADER_LEN} (directly after the header)"),
        ));
    }
    let table_len = (section_count as usize)
        .checked_mul(SECTION_ENTRY_LEN)
        .ok_or_else(|| field("section count", 16, "table size overflows"))?;
    let table_end = HEADER_LEN + table_len;
    if table_end > content_end {
        return Err(BundleError::OutOfBounds {
            what: "section table".into(),
            offset: HEADER_LEN as u64,
            len: table_len as u64,
            container: "the file before the trailer",
            bound: content_end as u64,
        });
    }
    let mut sections: Vec<SectionEntry<'_>> = Vec::with_capacity(section_count as usize);
    let mut prev_end = table_end;
    let mut prev_name = "section table";
    for i in 0..section_count {
        let at = HEADER_LEN + i as usize * SECTION_ENTRY_LEN;
        let e = &bytes[at..at + SECTION_ENTRY_LEN];
        let sect_err = |reason: String| BundleError::Section {
            index: i,
            offset: at as u64,
            reason,
        };
        let code = rd_u32(e, 0).unwrap_or(0);
        let kind = SectionKind::from_code(code)
            .ok_or_else(|| sect_err(format!("unknown section kind {code}")))?;
        if rd_u32(e, 4) != Some(0) {
            return Err(BundleError::NonZeroPadding {
                offset: at as u64 + 4,
                context: format!("reserved field of section entry {i}"),
            });
        }
        let offset = rd_u64(e, 8).unwrap_or(0);
        let length = rd_u64(e, 16).unwrap_or(0);
        let name = parse_fixed_name(&e[24..], at + 24)?;
        let what = format!("section {i} ({name:?})");
        let end = offset
            .checked_add(length)
            .filter(|&end| end <= content_end as u64)
            .ok_or_else(|| BundleError::OutOfBounds {
                what: what.clone(),
                offset,
                len: length,
                container: "the file before the trailer",
                bound: content_end as u64,
            })?;
        if !offset.is_multiple_of(ALIGN as u64) {
            return Err(BundleError::Misaligned {
                what,
                offset,
                align: ALIGN as u64,
            });
        }
        // In bounds of content_end <= len, so these fit in usize.
        let (offset, end) = (offset as usize, end as usize);
        if offset < prev_end {
            return Err(BundleError::Overlap {
                first: prev_name.to_string(),
                second: format!("section {i} ({name:?})"),
                first_end: prev_end as u64,
                second_start: offset as u64,
            });
        }
        check_zero(
            &bytes[prev_end..offset],
            prev_end,
            &format!("padding before section {i} ({name:?})"),
        )?;
        if sections.iter().any(|s| s.name == name) {
            return Err(BundleError::DuplicateName {
                what: "section",
                name: name.to_string(),
            });
        }
        sections.push(SectionEntry {
            kind,
            name,
            range: offset..end,
        });
        prev_end = end;
        prev_name = name;
    }
    check_zero(
        &bytes[prev_end..content_end],
        prev_end,
        "padding after the last section",
    )?;
    // 4. Required sections.
    let one = |kind: SectionKind,
               required: bool,
               expected_name: &str|
     -> Result<Option<usize>, BundleError> {
        let mut found = None;
        for (i, s) in sections.iter().enumerate() {
            if s.kind == kind {
                if found.is_some() {
                    return Err(BundleError::ManifestMismatch {
                        reason: format!("more than one {kind:?} section"),
                    });
                }
                if s.name != expected_name {
                    return Err(BundleError::Section {
                        index: i as u32,
                        offset: (HEADER_LEN + i * SECTION_ENTRY_LEN) as u64,
                        reason: format!(
                            "{kind:?} section must be named {expected_name:?}, not {:?}",
                            s.name
                        ),
                    });
                }
                found = Some(i);
            }
        }
        if required && found.is_none() {
            return Err(BundleError::ManifestMismatch {
                reason: format!("no {kind:?} section ({expected_name:?})"),
            });
        }
        Ok(found)
    };
    let manifest_i = one(SectionKind::Manifest, true, MANIFEST_NAME)?.unwrap_or(0);
    let table_i = one(SectionKind::TensorTable, true, TENSOR_TABLE_NAME)?.unwrap_or(0);
    let data_i = one(SectionKind::TensorData, true, TENSOR_DATA_NAME)?.unwrap_or(0);
    let sig_i = one(SectionKind::Signature, false, SIGNATURE_NAME)?;
    // 5. Manifest.
    let mrange = sections[manifest_i].range.clone();
    if mrange.len() as u64 > limits.max_manifest_bytes {
        return Err(BundleError::Limit {
            what: "manifest length".into(),
            value: mrange.len() as u64,
            limit: limits.max_manifest_bytes,
        });
    }
    let manifest_bytes = &bytes[mrange.clone()];
    let manifest: Manifest =
        serde_json::from_slice(manifest_bytes).map_err(|e| BundleError::Manifest {
            offset: mrange.start as u64,
            reason: e.to_string(),
        })?;
    // 6. Section digests recorded in the manifest.
    let covered: Vec<&SectionEntry<'_>> = sections
        .iter()
        .filter(|s| !matches!(s.kind, SectionKind::Manifest | SectionKind::Signature))
        .collect();
    if covered.len() != manifest.sections.len() {
        return Err(BundleError::ManifestMismatch {
            reason: format!(
                "the manifest lists {} section digests, the section table has {} sections other than manifest and signature",
                manifest.sections.len(),
                covered.len()
            ),
        });
    }
    for (s, d) in covered.iter().zip(&manifest.sections) {
        if s.kind != d.kind || s.name != d.name || s.range.len() as u64 != d.length {
            return Err(BundleError::ManifestMismatch {
                reason: format!(
                    "section table has {:?} {:?} of {} bytes where the manifest lists {:?} {:?} of {} bytes",
                    s.kind,
                    s.name,
                    s.range.len(),
                    d.kind,
                    d.name,
                    d.length
                ),
            });
        }
        let actual = hex(&sha256(&bytes[s.range.clone()]));
        if actual != d.sha256 && CHECK_HASHES {
            return Err(BundleError::SectionHashMismatch {
                name: s.name.to_string(),
                expected: d.sha256.clone(),
                actual,
            });
        }
    }
    // 7. Signature.
    let signer = match sig_i {
        Some(i) => {
            let sig = &bytes[sections[i].range.clone()];
            if sig.len() != SIGNATURE_SECTION_LEN {
                return Err(BundleError::Section {
                    index: i as u32,
                    offset: (HEADER_LEN + i * SECTION_ENTRY_LEN) as u64,
                    reason: format!(
                        "signature section is {} bytes, must be {SIGNATURE_SECTION_LEN}",
                        sig.len()
                    ),
                });
            }
            let mut key = [0u8; 32];
            key.copy_from_slice(&sig[..32]);
            let mut sig_bytes = [0u8; 64];
            sig_bytes.copy_from_slice(&sig[32..]);
            if let Some(pinned) = &policy.pinned_key {
                if pinned.as_bytes() != &key {
                    return Err(BundleError::SignerMismatch {
                        found: hex(&key),
                        pinned: hex(pinned.as_bytes()),
                    });
                }
            }
            let vk = VerifyingKey::from_bytes(&key).map_err(|e| BundleError::BadSignature {
                reason: format!(
                    "embedded public key {} is not a valid Ed25519 key: {e}",
                    hex(&key)
                ),
            })?;
            vk.verify_strict(
                &signing_message(manifest_bytes),
                &Signature::from_bytes(&sig_bytes),
            )
            .map_err(|e| BundleError::BadSignature {
                reason: format!("key {}: {e}", hex(&key)),
            })?;
            Some(vk)
        }
        None if policy.pinned_key.is_some() => return Err(BundleError::SignatureRequired),
        None => None,
    };
    // 8. Tensor table.
    let data_range = sections[data_i].range.clone();
    let tensors = parse_tensor_table_inner(
        &bytes[sections[table_i].range.clone()],
        data_range.len() as u64,
        limits,
    )?
    .into_iter()
    .map(|mut t| {
        t.range = (t.range.start + data_range.start)..(t.range.end + data_range.start);
        t
    })
    .collect::<Vec<_>>();
    let mut tensor_index = BTreeMap::new();
    for (i, t) in tensors.iter().enumerate() {
        tensor_index.insert(t.name.clone(), i);
    }
    // 9. Cross-checks between manifest and tensors.
    for (name, q) in &manifest.quantization {
        let missing = |n: &str| BundleError::ManifestMismatch {
            reason: format!(
                "quantization of {name:?} refers to tensor {n:?}, which is not in the tensor table"
            ),
        };
        if !tensor_index.contains_key(name) {
            return Err(missing(name));
        }
        if let Quantization::PerChannel {
            scales,
            zero_points,
            ..
        } = q
        {
            if !tensor_index.contains_key(scales) {
                return Err(missing(scales));
            }
            if let Some(z) = zero_points {
                if !tensor_index.contains_key(z) {
                    return Err(missing(z));
                }
            }
        }
    }
    let graphs = sections
        .iter()
        .filter(|s| s.kind == SectionKind::Graph)
        .map(|s| (s.name.to_string(), s.range.clone()))
        .collect();
    Ok(Parsed {
        manifest,
        graphs,
        tensors,
        tensor_index,
        signer,
        file_sha256,
    })
}

/// A NUL-padded fixed-width name: non-empty UTF-8 without NUL, then only NULs.
fn parse_fixed_name(raw: &[u8], at: usize) -> Result<&str, BundleError> {
    let n = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    check_zero(&raw[n..], at + n, "section name padding")?;
    check_name(&raw[..n], "section", at)
}

fn check_name<'a>(raw: &'a [u8], what: &'static str, at: usize) -> Result<&'a str, BundleError> {
    let err = |reason: String| BundleError::InvalidName {
        what,
        offset: at as u64,
        reason,
    };
    if raw.is_empty() {
        return Err(err("empty name".into()));
    }
    let s = std::str::from_utf8(raw).map_err(|e| err(format!("not UTF-8: {e}")))?;
    if s.chars().any(|c| c.is_control()) {
        return Err(err(format!("{s:?} contains a control character")));
    }
    Ok(s)
}

/// Parse the binary tensor table on its own (the tensor ranges are relative to
/// the tensor-data section of length `data_len`). Exposed for the fuzz target,
/// which cannot get past the hashes of a whole bundle.
#[doc(hidden)]
pub fn fuzz_tensor_table(table: &[u8], data_len: u64) -> Result<usize, BundleError> {
    parse_tensor_table_inner(table, data_len, &Limits::default()).map(|t| t.len())
}

/// Parse a manifest on its own (fuzz target helper).
#[doc(hidden)]
pub fn fuzz_manifest(bytes: &[u8]) -> bool {
    serde_json::from_slice::<Manifest>(bytes).is_ok()
}

fn parse_tensor_table_inner(
    table: &[u8],
    data_len: u64,
    limits: &Limits,
) -> Result<Vec<TensorEntry>, BundleError> {
    let terr =
        |index: u64, name: Option<&str>, offset: usize, reason: String| BundleError::Tensor {
            index,
            name: name.map(str::to_string),
            offset: offset as u64,
            reason,
        };
    let count = rd_u32(table, 0).ok_or_else(|| {
        terr(
            0,
            None,
            0,
            format!(
                "table is {} bytes, too short for its 8-byte header",
                table.len()
            ),
        )
    })?;
    if rd_u32(table, 4) != Some(0) {
        return Err(terr(0, None, 4, "reserved header field is not zero".into()));
    }
    let count = u64::from(count);
    if count > limits.max_tensors {
        return Err(BundleError::Limit {
            what: "tensor count".into(),
            value: count,
            limit: limits.max_tensors,
        });
    }
    // Every entry takes at least TENSOR_ENTRY_FIXED + 1 (name) bytes, rounded to 8 = 32.
    let min_bytes = count.checked_mul(32).and_then(|v| v.checked_add(8));
    if min_bytes.is_none_or(|m| m > table.len() as u64) {
        return Err(terr(
            0,
            None,
            0,
            format!(
                "{count} tensors cannot fit in a table of {} bytes",
                table.len()
            ),
        ));
    }
    let mut out: Vec<TensorEntry> = Vec::with_capacity(count as usize);
    let mut at = 8usize;
    let mut prev_end = 0u64;
    let mut prev_name = String::new();
    let mut seen: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
    for index in 0..count {
        let short = || {
            terr(
                index,
                None,
                at,
                "entry runs past the end of the table".into(),
            )
        };
        let name_len = rd_u16(table, at).ok_or_else(short)?;
        let dtype_code = *table.get(at + 2).ok_or_else(short)?;
        let rank = *table.get(at + 3).ok_or_else(short)?;
        let reserved = rd_u32(table, at + 4).ok_or_else(short)?;
        let offset = rd_u64(table, at + 8).ok_or_else(short)?;
        let length = rd_u64(table, at + 16).ok_or_else(short)?;
        if name_len > limits.max_tensor_name_bytes {
            return Err(BundleError::Limit {
                what: format!("name length of tensor {index}"),
                value: name_len.into(),
                limit: limits.max_tensor_name_bytes.into(),
            });
        }
        if rank > limits.max_rank {
            return Err(BundleError::Limit {
                what: format!("rank of tensor {index}"),
                value: rank.into(),
                limit: limits.max_rank.into(),
            });
        }
        let dims_at = at + TENSOR_ENTRY_FIXED;
        let name_at = dims_at + rank as usize * 8;
        let name_end = name_at + name_len as usize;
        let next = name_end.div_ceil(8) * 8;
        if next > table.len() {
            return Err(short());
        }
        let name = check_name(&table[name_at..name_end], "tensor", name_at)?;
        let terr = |offset: usize, reason: String| terr(index, Some(name), offset, reason);
        if reserved != 0 {
            return Err(terr(at + 4, "reserved field is not zero".into()));
        }
        check_zero(
            &table[name_end..next],
            name_end,
            &format!("padding of tensor entry {index} ({name:?}) in the tensor table"),
        )?;
        let dtype = DType::from_code(dtype_code)
            .ok_or_else(|| terr(at + 2, format!("unknown dtype code {dtype_code}")))?;
        let mut shape = Vec::with_capacity(rank as usize);
        let mut elems: u64 = 1;
        for d in 0..rank as usize {
            let dim = rd_u64(table, dims_at + d * 8).unwrap_or(0);
            elems = elems
                .checked_mul(dim)
                .ok_or_else(|| terr(dims_at + d * 8, "shape product overflows u64".into()))?;
            shape.push(dim);
        }
        let bytes = elems
            .checked_mul(dtype.size())
            .ok_or_else(|| terr(at, "byte size overflows u64".into()))?;
        if bytes != length {
            return Err(terr(
                at + 16,
                format!("{dtype:?} {shape:?} needs {bytes} bytes, but the entry says {length}"),
            ));
        }
        if length > limits.max_tensor_bytes {
            return Err(BundleError::Limit {
                what: format!("byte length of tensor {name:?}"),
                value: length,
                limit: limits.max_tensor_bytes,
            });
        }
        if !offset.is_multiple_of(ALIGN as u64) {
            return Err(BundleError::Misaligned {
                what: format!("tensor {name:?} in the tensor-data section"),
                offset,
                align: ALIGN as u64,
            });
        }
        let end = offset
            .checked_add(length)
            .filter(|&e| e <= data_len)
            .ok_or_else(|| BundleError::OutOfBounds {
                what: format!("tensor {name:?}"),
                offset,
                len: length,
                container: "the tensor-data section",
                bound: data_len,
            })?;
        if offset < prev_end {
            return Err(BundleError::Overlap {
                first: format!("tensor {prev_name:?}"),
                second: format!("tensor {name:?}"),
                first_end: prev_end,
                second_start: offset,
            });
        }
        if !seen.insert(name) {
            return Err(BundleError::DuplicateName {
                what: "tensor",
                name: name.to_string(),
            });
        }
        out.push(TensorEntry {
            name: name.to_string(),
            dtype,
            shape,
            range: to_usize(offset, "tensor offset")?..to_usize(end, "tensor end")?,
        });
        prev_end = end;
        prev_name = name.to_string();
        at = next;
    }
    if at != table.len() {
        return Err(terr(
            count,
            None,
            at,
            format!("{} trailing bytes after the last entry", table.len() - at),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for code in 0..=255u8 {
            if let Some(d) = DType::from_code(code) {
                assert_eq!(d.code(), code);
            }
        }
        for code in 0..=16u32 {
            if let Some(k) = SectionKind::from_code(code) {
                assert_eq!(k.code(), code);
            }
        }
        assert_eq!(DType::Bf16.size(), 2);
        assert_eq!(DType::I64.size(), 8);
    }

    #[test]
    fn hex_and_names() {
        assert_eq!(hex(&[0x00, 0xab, 0x7f]), "00ab7f");
        assert!(parse_fixed_name(b"abc\0\0", 0).is_ok());
        assert!(parse_fixed_name(b"ab\0c\0", 0).is_err());
        assert!(parse_fixed_name(b"\0\0\0", 0).is_err());
        assert!(parse_fixed_name(b"a\nb\0", 0).is_err());
        assert!(check_name(&[0xc3], "tensor", 0).is_err());
    }

    #[test]
    fn short_and_garbage_inputs() {
        let p = VerifyPolicy::default();
        assert!(matches!(parse(&[], &p), Err(BundleError::TooShort { .. })));
        assert!(matches!(
            parse(&[0u8; 128], &p),
            Err(BundleError::BadMagic { .. })
        ));
        let mut b = [0u8; 128];
        b[..8].copy_from_slice(&MAGIC);
        assert!(matches!(
            parse(&b, &p),
            Err(BundleError::UnsupportedVersion { major: 0, .. })
        ));
    }
}
