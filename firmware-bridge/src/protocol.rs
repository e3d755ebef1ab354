//! Wire messages. The postcard enum discriminant of [`Message`] is the message
//! type on the wire, so variants are only ever appended, never reordered.

use heapless::{String, Vec};
use serde::{Deserialize, Serialize};

/// Lowest protocol version this crate speaks.
pub const PROTOCOL_VERSION_MIN: u16 = 1;
/// Highest protocol version this crate speaks.
pub const PROTOCOL_VERSION_MAX: u16 = 1;
/// Largest data payload of a [`FrameChunk`] or [`UploadChunk`].
pub const MAX_CHUNK_DATA: usize = 1024;
/// Largest number of runs in a [`MaskResult`].
pub const MAX_RLE_RUNS: usize = 256;
/// Longest text of a [`LogRecord`].
pub const MAX_LOG_TEXT: usize = 96;
/// Longest board name in [`Capabilities`].
pub const MAX_BOARD_NAME: usize = 32;
/// Longest detail text of an [`ErrorReport`].
pub const MAX_ERROR_DETAIL: usize = 64;

/// A SHA-256 digest.
pub type Sha256Digest = [u8; 32];

/// One protocol message; the variant index is the wire message type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// Host → device: open a session and offer a protocol version range.
    Hello(Hello),
    /// Device → host: answer to [`Hello`] with the negotiated version.
    Capabilities(Capabilities),
    /// Device → host: part of a scanner frame.
    FrameChunk(FrameChunk),
    /// Host → device: a segmentation result to show on the display.
    MaskResult(MaskResult),
    /// Device → host: a box or point prompt from buttons/touch.
    Prompt(Prompt),
    /// Either direction: liveness; the receiver echoes it.
    Heartbeat(Heartbeat),
    /// Device → host: a log line.
    Log(LogRecord),
    /// Host → device: start (or resume) a model upload.
    UploadBegin(UploadBegin),
    /// Host → device: model bytes at an offset.
    UploadChunk(UploadChunk),
    /// Host → device: all bytes sent; verify and mark pending.
    UploadCommit(UploadCommit),
    /// Host → device: drop the upload in progress.
    UploadAbort,
    /// Host → device: ask for the [`UploadStatus`].
    UploadStatusQuery,
    /// Device → host: upload state and the next offset the device expects.
    UploadStatus(UploadStatus),
    /// Host → device: reboot; a pending model gets its trial boot.
    Reset,
    /// Either direction: a request was refused.
    Error(ErrorReport),
}

/// Session opening from the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Lowest protocol version the sender speaks.
    pub version_min: u16,
    /// Highest protocol version the sender speaks.
    pub version_max: u16,
}

impl Hello {
    /// The Hello this crate sends.
    pub const fn current() -> Self {
        Hello {
            version_min: PROTOCOL_VERSION_MIN,
            version_max: PROTOCOL_VERSION_MAX,
        }
    }
}

/// Picks the highest version both sides speak, or `None` if the ranges do not overlap.
pub fn negotiate_version(hello: &Hello) -> Option<u16> {
    let high = hello.version_max.min(PROTOCOL_VERSION_MAX);
    let low = hello.version_min.max(PROTOCOL_VERSION_MIN);
    (hello.version_min <= hello.version_max && low <= high).then_some(high)
}

/// Semantic version of the device firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirmwareVersion {
    /// Major version.
    pub major: u16,
    /// Minor version.
    pub minor: u16,
    /// Patch version.
    pub patch: u16,
}

/// The model a device runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Slot index (0 = A, 1 = B).
    pub slot: u8,
    /// Model version from its signed manifest.
    pub version: u32,
    /// SHA-256 of the model image.
    pub sha256: Sha256Digest,
}

/// Device description, sent in answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Negotiated protocol version.
    pub protocol_version: u16,
    /// Unique device id.
    pub device_id: [u8; 16],
    /// Board name.
    pub board: String<MAX_BOARD_NAME>,
    /// ABI version of the on-device runtime that executes models.
    pub runtime_abi: u32,
    /// Number of model slots.
    pub slot_count: u8,
    /// Size of one model slot in bytes (largest accepted image).
    pub slot_size: u32,
    /// Largest encoded frame the device accepts, in bytes.
    pub max_frame_len: u32,
    /// Largest upload chunk the device accepts, in bytes.
    pub max_chunk_len: u32,
    /// Upload chunks other than the last must be a multiple of this many bytes.
    pub write_align: u32,
    /// Frames the device can buffer while busy: the host keeps at most this many chunks in flight.
    pub rx_window: u8,
    /// Firmware version.
    pub firmware_version: FirmwareVersion,
    /// The confirmed model the device runs, if any.
    pub model: Option<ModelInfo>,
    /// Lowest model version the device still accepts.
    pub security_counter: u32,
}

/// Pixel layout of a scanner frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PixelFormat {
    /// 8-bit grey.
    Gray8,
    /// 16-bit grey, little endian.
    Gray16Le,
    /// RGB565, little endian.
    Rgb565Le,
    /// 8-bit RGB.
    Rgb888,
}

/// Part of a scanner frame; frames larger than [`MAX_CHUNK_DATA`] are split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameChunk {
    /// Frame sequence number.
    pub frame_id: u32,
    /// Pixel format.
    pub format: PixelFormat,
    /// Width in pixels.
    pub width: u16,
    /// Height in pixels.
    pub height: u16,
    /// Byte offset of `data` within the frame.
    pub offset: u32,
    /// Total frame size in bytes.
    pub total_len: u32,
    /// Frame bytes.
    pub data: Vec<u8, MAX_CHUNK_DATA>,
}

/// Axis-aligned box in pixels (inclusive min, exclusive max).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PixelBox {
    /// Left.
    pub x0: u16,
    /// Top.
    pub y0: u16,
    /// Right (exclusive).
    pub x1: u16,
    /// Bottom (exclusive).
    pub y1: u16,
}

/// A run-length-encoded binary mask in row-major order: run lengths
/// alternate background, foreground, background, ... starting with background.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RleMask {
    /// Width in pixels.
    pub width: u16,
    /// Height in pixels.
    pub height: u16,
    /// Alternating run lengths, first run is background (may be 0).
    pub runs: Vec<u32, MAX_RLE_RUNS>,
}

/// Errors of [`RleMask`] encoding/decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RleError {
    /// The mask needs more than [`MAX_RLE_RUNS`] runs.
    TooManyRuns,
    /// Runs do not add up to width × height, or a buffer has the wrong size.
    SizeMismatch,
}

impl core::fmt::Display for RleError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RleError::TooManyRuns => write!(f, "mask needs more than {MAX_RLE_RUNS} runs"),
            RleError::SizeMismatch => write!(f, "mask runs do not match width x height"),
        }
    }
}

impl RleMask {
    /// Encodes a row-major mask (`0` = background, anything else = foreground).
    pub fn encode(width: u16, height: u16, pixels: &[u8]) -> Result<Self, RleError> {
        let expected = usize::from(width) * usize::from(height);
        if pixels.len() != expected {
            return Err(RleError::SizeMismatch);
        }
        let mut runs = Vec::new();
        let mut current_is_fg = false;
        let mut run: u32 = 0;
        for &p in pixels {
            let fg = p != 0;
            if fg != current_is_fg {
                runs.push(run).map_err(|_| RleError::TooManyRuns)?;
                run = 0;
                current_is_fg = fg;
            }
            run += 1; // cannot overflow: at most 65535² < 2³²
        }
        runs.push(run).map_err(|_| RleError::TooManyRuns)?;
        Ok(RleMask {
            width,
            height,
            runs,
        })
    }

    /// Decodes into `out` (row-major, 0 or 1 per pixel); `out` must hold width × height bytes.
    pub fn decode_into(&self, out: &mut [u8]) -> Result<(), RleError> {
        let expected = usize::from(self.width) * usize::from(self.height);
        if out.len() != expected {
            return Err(RleError::SizeMismatch);
        }
        let mut pos: usize = 0;
        for (i, &run) in self.runs.iter().enumerate() {
            let run = usize::try_from(run).map_err(|_| RleError::SizeMismatch)?;
            let end = pos
                .checked_add(run)
                .filter(|&e| e <= expected)
                .ok_or(RleError::SizeMismatch)?;
            let value = u8::from(i % 2 == 1);
            out[pos..end].fill(value);
            pos = end;
        }
        if pos != expected {
            return Err(RleError::SizeMismatch);
        }
        Ok(())
    }
}

/// A segmentation result for one frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaskResult {
    /// Frame the mask belongs to.
    pub frame_id: u32,
    /// Confidence in 0..=1.
    pub score: f32,
    /// Bounding box of the mask.
    pub bbox: PixelBox,
    /// The mask.
    pub mask: RleMask,
}

/// A prompt event from the device's buttons or touch screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PromptKind {
    /// A box drawn by the user.
    Box(PixelBox),
    /// A point; `positive` = include, otherwise exclude.
    Point {
        /// Column.
        x: u16,
        /// Row.
        y: u16,
        /// Include (true) or exclude (false).
        positive: bool,
    },
    /// Clear all prompts.
    Clear,
}

/// A prompt tied to the frame it was made on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prompt {
    /// Frame shown when the prompt was made.
    pub frame_id: u32,
    /// The prompt.
    pub kind: PromptKind,
}

/// Liveness message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Sequence number, echoed back.
    pub seq: u32,
    /// Sender uptime in milliseconds (wraps).
    pub uptime_ms: u32,
}

/// Log severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogLevel {
    /// Error.
    Error,
    /// Warning.
    Warn,
    /// Information.
    Info,
    /// Debug detail.
    Debug,
}

/// A log line from the device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Severity.
    pub level: LogLevel,
    /// Device uptime in milliseconds.
    pub uptime_ms: u32,
    /// Text (truncated to [`MAX_LOG_TEXT`] bytes).
    pub text: String<MAX_LOG_TEXT>,
}

/// An Ed25519 signature (64 bytes; serialized as a fixed tuple).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignatureBytes(pub [u8; 64]);

impl Serialize for SignatureBytes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut tuple = serializer.serialize_tuple(64)?;
        for byte in &self.0 {
            tuple.serialize_element(byte)?;
        }
        tuple.end()
    }
}

impl<'de> Deserialize<'de> for SignatureBytes {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SigVisitor;
        impl<'de> serde::de::Visitor<'de> for SigVisitor {
            type Value = SignatureBytes;
            fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str("64 signature bytes")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = [0u8; 64];
                for (i, slot) in out.iter_mut().enumerate() {
                    *slot = seq
                        .next_element()?
                        .ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
                }
                Ok(SignatureBytes(out))
            }
        }
        deserializer.deserialize_tuple(64, SigVisitor)
    }
}

/// Domain-separation prefix of the signed manifest bytes.
pub const MANIFEST_DOMAIN: &[u8; 16] = b"EDGESEG-MODEL-v1";
/// Length of [`ImageManifest::signed_bytes`].
pub const MANIFEST_SIGNED_LEN: usize = 16 + 4 + 4 + 32;

/// What the signature covers: the image version, length and SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageManifest {
    /// Model version; checked against the device security counter.
    pub version: u32,
    /// Image length in bytes.
    pub image_len: u32,
    /// SHA-256 of the image bytes.
    pub sha256: Sha256Digest,
}

impl ImageManifest {
    /// Canonical bytes that are signed: domain prefix, version (LE), length (LE), SHA-256.
    pub fn signed_bytes(&self) -> [u8; MANIFEST_SIGNED_LEN] {
        let mut out = [0u8; MANIFEST_SIGNED_LEN];
        out[..16].copy_from_slice(MANIFEST_DOMAIN);
        out[16..20].copy_from_slice(&self.version.to_le_bytes());
        out[20..24].copy_from_slice(&self.image_len.to_le_bytes());
        out[24..].copy_from_slice(&self.sha256);
        out
    }
}

/// Start or resume an upload. Resuming is keyed by `manifest.sha256`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadBegin {
    /// The signed manifest.
    pub manifest: ImageManifest,
    /// Ed25519 signature over [`ImageManifest::signed_bytes`].
    pub signature: SignatureBytes,
}

/// Image bytes at `offset`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadChunk {
    /// Byte offset in the image.
    pub offset: u32,
    /// Bytes.
    pub data: Vec<u8, MAX_CHUNK_DATA>,
}

/// Finish an upload; the hash names the upload being committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadCommit {
    /// SHA-256 of the image being committed.
    pub sha256: Sha256Digest,
}

/// Device-side upload state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UploadPhase {
    /// No upload in progress.
    Idle,
    /// Receiving bytes; `next_offset` is where to continue.
    Receiving,
    /// Verified and waiting for its trial boot ([`Message::Reset`]).
    Pending,
}

/// Upload progress as the device sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadStatus {
    /// Phase.
    pub phase: UploadPhase,
    /// SHA-256 of the image in progress or pending (zeros when idle).
    pub sha256: Sha256Digest,
    /// Next byte offset the device expects.
    pub next_offset: u32,
    /// Total image length (0 when idle).
    pub image_len: u32,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The message type is unknown or its body is malformed.
    UnknownMessage,
    /// No common protocol version.
    UnsupportedVersion,
    /// A request other than Hello/Heartbeat arrived before Hello.
    NotNegotiated,
    /// Signature does not verify against the pinned key.
    BadSignature,
    /// Image SHA-256 does not match the manifest.
    HashMismatch,
    /// Version lower than the device security counter.
    VersionRollback,
    /// Image larger than a slot.
    ImageTooLarge,
    /// Chunk offset or length is not acceptable; see the following status.
    BadChunk,
    /// Commit/chunk without a matching upload.
    NoUpload,
    /// Flash operation failed.
    Flash,
    /// The message is valid but not handled by this device.
    Unsupported,
}

/// A refusal with a short human-readable detail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorReport {
    /// Machine-readable reason.
    pub code: ErrorCode,
    /// Detail text.
    pub detail: String<MAX_ERROR_DETAIL>,
}

impl ErrorReport {
    /// Builds a report, truncating `detail` to [`MAX_ERROR_DETAIL`] bytes at a char boundary.
    pub fn new(code: ErrorCode, detail: &str) -> Self {
        ErrorReport {
            code,
            detail: truncated(detail),
        }
    }
}

/// Copies `text` into a heapless string, truncating at a char boundary.
pub fn truncated<const N: usize>(text: &str) -> String<N> {
    let mut out = String::new();
    for ch in text.chars() {
        if out.push(ch).is_err() {
            break;
        }
    }
    out
}
