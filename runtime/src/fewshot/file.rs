//! `prototypes.bin`: a taught prototype set on disk (format version 1.1; 1.0
//! files are read too).
//!
//! Small (a few kB to a few tens of kB), versioned, hashed and optionally
//! Ed25519-signed with the same keys and conventions as model bundles. The layout,
//! verification order and limits are specified in `docs/prototype-format.md`; all
//! integers are little-endian:
//!
//! ```text
//! 0        header (64 B): magic "EDGEPROT", major u16 = 1, minor u16 = 1,
//!          header length u32 = 64, flags u32 (bit 0 = signed), channels u32,
//!          prototype count u32, metadata length u32, file length u64, 24 reserved
//! 64       metadata: JSON (UTF-8), zero-padded to a multiple of 8
//! M        prototype table: count × 8 B (class u16, kind u8, reserved u8, weight f32)
//! D        prototype data: count × channels × f32
//! S        if signed: Ed25519 public key (32 B) + signature (64 B) of
//!          "edgeseg-prototypes-signature-v1\0" || major (u16) || SHA-256(bytes 0..S)
//! len-64   trailer (64 B): "EPROEND\0", 24 reserved, SHA-256 of bytes 0..len-64
//! ```
//!
//! The parser checks every size with checked arithmetic before it reads or
//! allocates, never panics, refuses unknown versions, flags and kinds, and rebuilds
//! a [`PrototypeSet`] that passes [`PrototypeSet::validate`] (finite unit-norm
//! prototypes, one global prototype per class).

use std::collections::BTreeMap;
use std::path::Path;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::bundle::{hex, sha256, VerifyPolicy};

use super::{
    EmbeddingId, FewShotError, HeadConfig, Modality, Prototype, PrototypeKind, PrototypeSet,
};

/// The 8 magic bytes at offset 0.
pub const MAGIC: [u8; 8] = *b"EDGEPROT";
/// The 8 magic bytes that open the trailer.
pub const TRAILER_MAGIC: [u8; 8] = *b"EPROEND\0";
/// Format major version written and read here.
pub const FORMAT_MAJOR: u16 = 1;
/// Newest format minor version this reader understands (and the one it writes).
/// 1.1 added `embedding.encoder_sha256` to the metadata; 1.0 files have none.
pub const FORMAT_MINOR: u16 = 1;
/// Header length.
pub const HEADER_LEN: usize = 64;
/// Trailer length.
pub const TRAILER_LEN: usize = 64;
/// Bytes per prototype table entry.
pub const ENTRY_LEN: usize = 8;
/// Public key + signature.
pub const SIGNATURE_LEN: usize = 96;
/// Domain-separation prefix of the signed message.
pub const SIGNATURE_CONTEXT: &[u8] = b"edgeseg-prototypes-signature-v1\0";
/// Header flag: a signature precedes the trailer.
pub const FLAG_SIGNED: u32 = 1;
/// Most feature channels.
pub const MAX_CHANNELS: u32 = 4096;
/// Most prototypes in one file.
pub const MAX_PROTOTYPES: u32 = 1024;
/// Most metadata bytes.
pub const MAX_METADATA: u32 = 64 * 1024;
/// Hash comparisons are skipped only in fuzzing builds (`--cfg fuzzing`, set by
/// cargo-fuzz, never by a product build) so that mutations reach the parsers
/// behind the trailer hash; signatures are verified in every build.
const CHECK_HASHES: bool = !cfg!(fuzzing);

/// Why a prototype file was refused.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Not a prototype file.
    #[error("not an edgeseg prototype file (bad magic)")]
    BadMagic,
    /// A version this reader does not know.
    #[error("prototype file format {major}.{minor} is not supported (this reader knows {FORMAT_MAJOR}.0 to {FORMAT_MAJOR}.{FORMAT_MINOR})")]
    UnsupportedVersion {
        /// Major.
        major: u16,
        /// Minor.
        minor: u16,
    },
    /// A structural rule is broken (the message names the field and offset).
    #[error("malformed prototype file: {0}")]
    Malformed(String),
    /// The whole-file SHA-256 does not match.
    #[error("prototype file hash mismatch: trailer says {expected}, content is {actual} (corrupted or truncated)")]
    HashMismatch {
        /// From the trailer.
        expected: String,
        /// Computed.
        actual: String,
    },
    /// A signature is required (pinned key) but the file is unsigned.
    #[error("the prototype file is not signed, and a signature is required")]
    SignatureRequired,
    /// The file is signed by another key than the pinned one.
    #[error("the prototype file is signed by {found}, not by the pinned key {pinned}")]
    SignerMismatch {
        /// Embedded key.
        found: String,
        /// Pinned key.
        pinned: String,
    },
    /// The signature does not verify.
    #[error("bad prototype file signature: {0}")]
    BadSignature(String),
    /// The metadata JSON is invalid.
    #[error("prototype file metadata: {0}")]
    Metadata(String),
    /// The prototypes themselves are invalid.
    #[error("prototype file content: {0}")]
    Content(String),
}

/// One class as recorded in the metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassInfo {
    /// Mask label (1..=255).
    pub label: u8,
    /// Human-readable name.
    pub name: String,
}

/// The JSON metadata of a prototype file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// The model the prototypes belong to.
    pub embedding: EmbeddingId,
    /// Foreground classes, in class order.
    pub classes: Vec<ClassInfo>,
    /// Support image kind.
    pub modality: Modality,
    /// Support shots.
    pub shots: u32,
    /// Head settings.
    pub head: HeadConfig,
    /// Free-form provenance (tool, command, support files, ...), not interpreted.
    #[serde(default)]
    pub provenance: BTreeMap<String, serde_json::Value>,
}

/// What the reader learned besides the set.
#[derive(Debug, Clone, PartialEq)]
pub struct PrototypeFileInfo {
    /// Format version.
    pub version: (u16, u16),
    /// The key that signed the file (verified), if signed.
    pub signer: Option<VerifyingKey>,
    /// The whole-file SHA-256 (from the verified trailer).
    pub sha256: [u8; 32],
    /// Provenance from the metadata.
    pub provenance: BTreeMap<String, serde_json::Value>,
}

fn malformed<T>(m: impl Into<String>) -> Result<T, FormatError> {
    Err(FormatError::Malformed(m.into()))
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

/// Rounds up to a multiple of 8 (checked).
fn pad8(n: usize) -> Option<usize> {
    n.checked_add(7).map(|v| v / 8 * 8)
}

/// Offsets of the parts of a file with these counts.
struct Layout {
    meta_end: usize,
    table: usize,
    data: usize,
    sig: usize,
    trailer: usize,
    len: usize,
}

fn layout(meta_len: usize, count: usize, channels: usize, signed: bool) -> Option<Layout> {
    let meta_end = HEADER_LEN.checked_add(meta_len)?;
    let table = pad8(meta_end)?;
    let data = table.checked_add(count.checked_mul(ENTRY_LEN)?)?;
    let sig = data.checked_add(count.checked_mul(channels)?.checked_mul(4)?)?;
    let trailer = sig.checked_add(if signed { SIGNATURE_LEN } else { 0 })?;
    let len = trailer.checked_add(TRAILER_LEN)?;
    Some(Layout {
        meta_end,
        table,
        data,
        sig,
        trailer,
        len,
    })
}

/// The message a prototype-file signature signs.
pub fn signing_message(content: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(SIGNATURE_CONTEXT.len() + 2 + 32);
    msg.extend_from_slice(SIGNATURE_CONTEXT);
    msg.extend_from_slice(&FORMAT_MAJOR.to_le_bytes());
    msg.extend_from_slice(&sha256(content));
    msg
}

impl PrototypeSet {
    /// Serializes the set (signed when `key` is given). `provenance` is free-form
    /// JSON recorded in the metadata.
    pub fn to_bytes(
        &self,
        provenance: &BTreeMap<String, serde_json::Value>,
        key: Option<&SigningKey>,
    ) -> Result<Vec<u8>, FewShotError> {
        self.validate()?;
        let meta = Metadata {
            embedding: self.embedding.clone(),
            classes: self
                .labels
                .iter()
                .zip(&self.names)
                .map(|(&label, name)| ClassInfo {
                    label,
                    name: name.clone(),
                })
                .collect(),
            modality: self.modality,
            shots: self.shots,
            head: self.config,
            provenance: provenance.clone(),
        };
        let json = serde_json::to_vec(&meta)
            .map_err(|e| FormatError::Metadata(format!("serializing: {e}")))?;
        let channels = self.embedding.channels;
        let count = u32::try_from(self.prototypes.len()).unwrap_or(u32::MAX);
        let meta_len = u32::try_from(json.len()).unwrap_or(u32::MAX);
        if channels == 0 || channels > MAX_CHANNELS || count == 0 || count > MAX_PROTOTYPES {
            return Err(FormatError::Content(format!(
                "{count} prototypes of {channels} channels (limits {MAX_PROTOTYPES}, {MAX_CHANNELS})"
            ))
            .into());
        }
        if meta_len > MAX_METADATA {
            return Err(
                FormatError::Metadata(format!("{meta_len} bytes, limit {MAX_METADATA}")).into(),
            );
        }
        let l = layout(json.len(), count as usize, channels as usize, key.is_some())
            .ok_or_else(|| FormatError::Content("file size overflows".into()))?;
        let mut b = vec![0u8; l.len];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&FORMAT_MAJOR.to_le_bytes());
        b[10..12].copy_from_slice(&FORMAT_MINOR.to_le_bytes());
        b[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        let flags = if key.is_some() { FLAG_SIGNED } else { 0 };
        b[16..20].copy_from_slice(&flags.to_le_bytes());
        b[20..24].copy_from_slice(&channels.to_le_bytes());
        b[24..28].copy_from_slice(&count.to_le_bytes());
        b[28..32].copy_from_slice(&meta_len.to_le_bytes());
        b[32..40].copy_from_slice(&(l.len as u64).to_le_bytes());
        b[HEADER_LEN..l.meta_end].copy_from_slice(&json);
        for (i, p) in self.prototypes.iter().enumerate() {
            let o = l.table + i * ENTRY_LEN;
            let class = u16::try_from(p.class)
                .map_err(|_| FormatError::Content(format!("class {} too large", p.class)))?;
            b[o..o + 2].copy_from_slice(&class.to_le_bytes());
            b[o + 2] = match p.kind {
                PrototypeKind::Global => 1,
                PrototypeKind::Local => 2,
            };
            b[o + 4..o + 8].copy_from_slice(&p.weight.to_le_bytes());
            let d = l.data + i * channels as usize * 4;
            for (j, v) in p.vector.iter().enumerate() {
                b[d + 4 * j..d + 4 * j + 4].copy_from_slice(&v.to_le_bytes());
            }
        }
        if let Some(k) = key {
            let sig = k.sign(&signing_message(&b[..l.sig]));
            b[l.sig..l.sig + 32].copy_from_slice(k.verifying_key().as_bytes());
            b[l.sig + 32..l.trailer].copy_from_slice(&sig.to_bytes());
        }
        b[l.trailer..l.trailer + 8].copy_from_slice(&TRAILER_MAGIC);
        let digest = sha256(&b[..l.trailer]);
        b[l.trailer + 32..].copy_from_slice(&digest);
        // re-read our own output with the same parser
        Self::from_bytes(&b, &VerifyPolicy::default())?;
        Ok(b)
    }

    /// Writes the set to `path` (see [`Self::to_bytes`]).
    pub fn write_to(
        &self,
        path: &Path,
        provenance: &BTreeMap<String, serde_json::Value>,
        key: Option<&SigningKey>,
    ) -> Result<Vec<u8>, FewShotError> {
        let b = self.to_bytes(provenance, key)?;
        std::fs::write(path, &b).map_err(|source| FormatError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(b)
    }

    /// Reads and verifies a prototype file.
    pub fn open(
        path: &Path,
        policy: &VerifyPolicy,
    ) -> Result<(Self, PrototypeFileInfo), FormatError> {
        let io = |source| FormatError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        // the largest well-formed file, far below any memory concern
        let max = layout(
            MAX_METADATA as usize,
            MAX_PROTOTYPES as usize,
            MAX_CHANNELS as usize,
            true,
        )
        .map_or(u64::MAX, |l| l.len as u64);
        if meta.len() > max {
            return malformed(format!(
                "{} is {} bytes, more than the largest prototype file ({max})",
                path.display(),
                meta.len()
            ));
        }
        let bytes = std::fs::read(path).map_err(io)?;
        Self::from_bytes(&bytes, policy)
    }

    /// Verifies and parses a prototype file held in memory, under `policy` (a
    /// pinned key requires a signature by that key; a present signature is always
    /// verified). Never panics.
    pub fn from_bytes(
        b: &[u8],
        policy: &VerifyPolicy,
    ) -> Result<(Self, PrototypeFileInfo), FormatError> {
        // 1. header
        if b.len() < HEADER_LEN + TRAILER_LEN {
            return malformed(format!(
                "{} bytes, shorter than header + trailer ({})",
                b.len(),
                HEADER_LEN + TRAILER_LEN
            ));
        }
        if b[0..8] != MAGIC {
            return Err(FormatError::BadMagic);
        }
        let (major, minor) = (u16_at(b, 8), u16_at(b, 10));
        if major != FORMAT_MAJOR || minor > FORMAT_MINOR {
            return Err(FormatError::UnsupportedVersion { major, minor });
        }
        if u32_at(b, 12) as usize != HEADER_LEN {
            return malformed(format!(
                "header length {} (offset 12) must be 64",
                u32_at(b, 12)
            ));
        }
        let flags = u32_at(b, 16);
        if flags & !FLAG_SIGNED != 0 {
            return malformed(format!("unknown flags {flags:#x} (offset 16)"));
        }
        let signed = flags & FLAG_SIGNED != 0;
        let channels = u32_at(b, 20);
        let count = u32_at(b, 24);
        let meta_len = u32_at(b, 28);
        let file_len = u64_at(b, 32);
        if b[40..64].iter().any(|&v| v != 0) {
            return malformed("reserved header bytes 40..64 are not zero");
        }
        if file_len != b.len() as u64 {
            return malformed(format!(
                "header file length {file_len} (offset 32) but the input is {} bytes",
                b.len()
            ));
        }
        if channels == 0 || channels > MAX_CHANNELS {
            return malformed(format!(
                "{channels} channels (offset 20), limit {MAX_CHANNELS}"
            ));
        }
        if count == 0 || count > MAX_PROTOTYPES {
            return malformed(format!(
                "{count} prototypes (offset 24), limit {MAX_PROTOTYPES}"
            ));
        }
        if meta_len == 0 || meta_len > MAX_METADATA {
            return malformed(format!(
                "metadata length {meta_len} (offset 28), limit {MAX_METADATA}"
            ));
        }
        let l = layout(meta_len as usize, count as usize, channels as usize, signed)
            .ok_or_else(|| FormatError::Malformed("sizes overflow".into()))?;
        if l.len != b.len() {
            return malformed(format!(
                "{count} prototypes of {channels} channels with {meta_len} metadata bytes{} make {} bytes, the file has {}",
                if signed { " and a signature" } else { "" },
                l.len,
                b.len()
            ));
        }
        // 2. trailer and whole-file hash
        let t = &b[l.trailer..];
        if t[0..8] != TRAILER_MAGIC || t[8..32].iter().any(|&v| v != 0) {
            return malformed(format!(
                "bad trailer magic or reserved bytes at offset {}",
                l.trailer
            ));
        }
        let actual = sha256(&b[..l.trailer]);
        if actual[..] != t[32..64] && CHECK_HASHES {
            return Err(FormatError::HashMismatch {
                expected: hex(&t[32..64]),
                actual: hex(&actual),
            });
        }
        let mut sha = [0u8; 32];
        sha.copy_from_slice(&t[32..64]);
        // 3. signature
        let signer = if signed {
            let s = &b[l.sig..l.trailer];
            let mut key = [0u8; 32];
            key.copy_from_slice(&s[..32]);
            let mut sig = [0u8; 64];
            sig.copy_from_slice(&s[32..]);
            if let Some(pinned) = &policy.pinned_key {
                if pinned.as_bytes() != &key {
                    return Err(FormatError::SignerMismatch {
                        found: hex(&key),
                        pinned: hex(pinned.as_bytes()),
                    });
                }
            }
            let vk = VerifyingKey::from_bytes(&key).map_err(|e| {
                FormatError::BadSignature(format!("embedded key {} is not valid: {e}", hex(&key)))
            })?;
            vk.verify_strict(&signing_message(&b[..l.sig]), &Signature::from_bytes(&sig))
                .map_err(|e| FormatError::BadSignature(format!("key {}: {e}", hex(&key))))?;
            Some(vk)
        } else if policy.pinned_key.is_some() {
            return Err(FormatError::SignatureRequired);
        } else {
            None
        };
        // 4. metadata
        if b[l.meta_end..l.table].iter().any(|&v| v != 0) {
            return malformed("metadata padding is not zero");
        }
        let meta: Metadata = serde_json::from_slice(&b[HEADER_LEN..l.meta_end])
            .map_err(|e| FormatError::Metadata(e.to_string()))?;
        if minor == 0 && meta.embedding.encoder_sha256.is_some() {
            return Err(FormatError::Metadata(
                "a format 1.0 file cannot record `embedding.encoder_sha256` (added in 1.1)".into(),
            ));
        }
        if meta.embedding.channels != channels {
            return Err(FormatError::Content(format!(
                "metadata says {} channels, header {channels}",
                meta.embedding.channels
            )));
        }
        if meta.embedding.grid_height == 0 || meta.embedding.grid_width == 0 {
            return Err(FormatError::Content(
                "embedding grid has a zero side".into(),
            ));
        }
        let classes = meta.classes.len();
        // 5. table and data
        let mut prototypes = Vec::with_capacity(count as usize);
        for i in 0..count as usize {
            let o = l.table + i * ENTRY_LEN;
            let class = usize::from(u16_at(b, o));
            let kind = match b[o + 2] {
                1 => PrototypeKind::Global,
                2 => PrototypeKind::Local,
                k => {
                    return Err(FormatError::Content(format!(
                        "prototype {i}: unknown kind {k} (offset {})",
                        o + 2
                    )))
                }
            };
            if b[o + 3] != 0 {
                return malformed(format!(
                    "prototype {i}: reserved byte at offset {} is not zero",
                    o + 3
                ));
            }
            if class > classes {
                return Err(FormatError::Content(format!(
                    "prototype {i}: class {class} but the file has {classes} structures"
                )));
            }
            let weight = f32::from_le_bytes([b[o + 4], b[o + 5], b[o + 6], b[o + 7]]);
            let d = l.data + i * channels as usize * 4;
            let vector: Vec<f32> = b[d..d + channels as usize * 4]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            prototypes.push(Prototype {
                class,
                kind,
                weight,
                vector,
            });
        }
        let set = PrototypeSet {
            embedding: meta.embedding,
            labels: meta.classes.iter().map(|c| c.label).collect(),
            names: meta.classes.iter().map(|c| c.name.clone()).collect(),
            modality: meta.modality,
            shots: meta.shots,
            config: meta.head,
            prototypes,
        };
        set.validate()
            .map_err(|e| FormatError::Content(e.to_string()))?;
        Ok((
            set,
            PrototypeFileInfo {
                version: (major, minor),
                signer,
                sha256: sha,
                provenance: meta.provenance,
            },
        ))
    }
}
