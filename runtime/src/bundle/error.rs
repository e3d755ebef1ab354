//! The error type of the bundle parser and writer.

use std::path::PathBuf;

/// Everything that can be wrong with a bundle. Every variant says what is wrong
/// and where (byte offset, section, or tensor name).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The file could not be opened, read, mapped or written.
    #[error("bundle {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The input is shorter than a header plus a trailer.
    #[error("bundle is {len} bytes, shorter than the minimum of {min} bytes (header + trailer)")]
    TooShort { len: u64, min: u64 },
    /// The first 8 bytes are not `EDGESEG\0`.
    #[error("not an edgeseg bundle: magic at offset 0 is {found:02x?}, expected \"EDGESEG\\0\"")]
    BadMagic { found: [u8; 8] },
    /// The format version is not one this reader understands.
    #[error(
        "unsupported bundle format version {major}.{minor}: this reader reads {supported_major}.0 \
         to {supported_major}.{supported_minor} (a newer minor or another major is refused)"
    )]
    UnsupportedVersion {
        major: u16,
        minor: u16,
        supported_major: u16,
        supported_minor: u16,
    },
    /// A fixed header or trailer field has a wrong value.
    #[error("{field} at offset {offset}: {reason}")]
    Field {
        field: &'static str,
        offset: u64,
        reason: String,
    },
    /// A value exceeds one of the parser's limits.
    #[error("{what} is {value}, over the limit of {limit}")]
    Limit {
        what: String,
        value: u64,
        limit: u64,
    },
    /// An offset/length pair does not lie inside its container.
    #[error("{what}: range {offset}..+{len} does not lie inside {container} (0..{bound})")]
    OutOfBounds {
        what: String,
        offset: u64,
        len: u64,
        container: &'static str,
        bound: u64,
    },
    /// An offset is not aligned as the format requires.
    #[error("{what}: offset {offset} is not {align}-byte aligned")]
    Misaligned {
        what: String,
        offset: u64,
        align: u64,
    },
    /// Two sections or two tensors overlap, or are not in ascending offset order.
    #[error("{first} and {second} overlap or are out of order: {first} ends at {first_end}, {second} starts at {second_start}")]
    Overlap {
        first: String,
        second: String,
        first_end: u64,
        second_start: u64,
    },
    /// A section table entry is invalid.
    #[error("section table entry {index} (at offset {offset}): {reason}")]
    Section {
        index: u32,
        offset: u64,
        reason: String,
    },
    /// Bytes outside every section (padding) or reserved bytes are not zero.
    #[error("non-zero padding or reserved byte at offset {offset} ({context})")]
    NonZeroPadding { offset: u64, context: String },
    /// A name (section or tensor) is empty, too long, not UTF-8 or contains NUL.
    #[error("invalid {what} name at offset {offset}: {reason}")]
    InvalidName {
        what: &'static str,
        offset: u64,
        reason: String,
    },
    /// A name appears twice.
    #[error("duplicate {what} name {name:?}")]
    DuplicateName { what: &'static str, name: String },
    /// The whole-file SHA-256 in the trailer does not match the content.
    #[error("file SHA-256 mismatch: trailer says {expected}, content hashes to {actual} (the file is corrupt or was modified)")]
    FileHashMismatch { expected: String, actual: String },
    /// A section's SHA-256 does not match the digest recorded in the manifest.
    #[error(
        "section {name:?} SHA-256 mismatch: manifest says {expected}, section hashes to {actual}"
    )]
    SectionHashMismatch {
        name: String,
        expected: String,
        actual: String,
    },
    /// The manifest is not valid JSON for the manifest schema.
    #[error("manifest (section at offset {offset}): {reason}")]
    Manifest { offset: u64, reason: String },
    /// The manifest's section list does not match the section table, or refers to unknown tensors.
    #[error("manifest does not match the bundle: {reason}")]
    ManifestMismatch { reason: String },
    /// A tensor table entry is invalid.
    #[error("tensor table entry {index}{} at table offset {offset}: {reason}", name.as_ref().map(|n| format!(" ({n:?})")).unwrap_or_default())]
    Tensor {
        index: u64,
        name: Option<String>,
        offset: u64,
        reason: String,
    },
    /// The policy pins a key but the bundle carries no signature.
    #[error(
        "the verify policy requires a signature from the pinned key, but the bundle is unsigned"
    )]
    SignatureRequired,
    /// The bundle is signed by a key other than the pinned one.
    #[error("the bundle is signed by key {found}, not by the pinned key {pinned}")]
    SignerMismatch { found: String, pinned: String },
    /// The signature does not verify (bad signature, weak or malformed key).
    #[error("signature verification failed: {reason}")]
    BadSignature { reason: String },
    /// The writer was given inconsistent input.
    #[error("cannot build bundle: {reason}")]
    Build { reason: String },
}
