//! Framing: `0x00 ‖ COBS(postcard(message) ‖ CRC32-LE) ‖ 0x00`.
//!
//! The leading delimiter ends any garbage the receiver may have collected, so
//! a frame following line noise is still received. Empty frames are ignored.

use crate::protocol::Message;
use crc::{Crc, CRC_32_ISO_HDLC};
use heapless::Vec;

/// CRC-32 (ISO-HDLC, as used by Ethernet/zlib) over the postcard bytes.
pub const FRAME_CRC: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);
/// Largest postcard-serialized message, in bytes.
pub const MAX_MESSAGE_LEN: usize = 1400;
/// Largest COBS-encoded body (message + CRC) between delimiters.
pub const MAX_ENCODED_LEN: usize = cobs_max_len(MAX_MESSAGE_LEN + 4);
/// Largest complete frame on the wire, both delimiters included.
pub const MAX_FRAME_LEN: usize = MAX_ENCODED_LEN + 2;
/// Number of message types this version knows (wire tags `0..MESSAGE_TYPE_COUNT`).
pub const MESSAGE_TYPE_COUNT: u32 = 15;

const fn cobs_max_len(source_len: usize) -> usize {
    source_len + source_len.div_ceil(254) + 1
}

/// Errors of encoding or decoding a frame. Decoding errors drop the frame only;
/// the decoder continues with the next delimiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The frame was longer than [`MAX_ENCODED_LEN`] and was discarded.
    Overflow,
    /// The COBS encoding is invalid.
    Cobs,
    /// The frame is too short to hold a message and its CRC.
    TooShort,
    /// The CRC does not match.
    Crc,
    /// The message type is not known to this protocol version.
    UnknownMessageType(u32),
    /// The message type is known but its body does not parse.
    Malformed,
    /// Encoding: the message or output buffer is too large/small.
    BufferTooSmall,
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FrameError::Overflow => write!(f, "frame longer than {MAX_ENCODED_LEN} bytes"),
            FrameError::Cobs => write!(f, "invalid COBS encoding"),
            FrameError::TooShort => write!(f, "frame too short"),
            FrameError::Crc => write!(f, "CRC mismatch"),
            FrameError::UnknownMessageType(t) => write!(f, "unknown message type {t}"),
            FrameError::Malformed => write!(f, "malformed message body"),
            FrameError::BufferTooSmall => write!(f, "buffer too small for frame"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for FrameError {}

/// Encodes `message` as a complete frame into `out`; returns the frame length.
pub fn encode_frame(message: &Message, out: &mut [u8]) -> Result<usize, FrameError> {
    let mut raw = [0u8; MAX_MESSAGE_LEN + 4];
    let body_len = postcard::to_slice(message, &mut raw[..MAX_MESSAGE_LEN])
        .map_err(|_| FrameError::BufferTooSmall)?
        .len();
    let crc = FRAME_CRC.checksum(&raw[..body_len]);
    let total = body_len + 4;
    raw[body_len..total].copy_from_slice(&crc.to_le_bytes());
    if out.len() < 2 {
        return Err(FrameError::BufferTooSmall);
    }
    out[0] = 0;
    let last = out.len() - 1;
    let encoded = cobs::try_encode(&raw[..total], &mut out[1..last])
        .map_err(|_| FrameError::BufferTooSmall)?;
    let end = 1 + encoded;
    out[end] = 0;
    Ok(end + 1)
}

/// Encodes `message` into a fixed-capacity vector holding one frame.
pub fn encode_frame_vec(message: &Message) -> Result<Vec<u8, MAX_FRAME_LEN>, FrameError> {
    let mut buf = [0u8; MAX_FRAME_LEN];
    let len = encode_frame(message, &mut buf)?;
    Vec::from_slice(&buf[..len]).map_err(|_| FrameError::BufferTooSmall)
}

/// Decodes the body between two delimiters (COBS bytes, modified in place).
pub fn decode_frame_body(encoded: &mut [u8]) -> Result<Message, FrameError> {
    let len = cobs::decode_in_place(encoded).map_err(|_| FrameError::Cobs)?;
    let raw = encoded.get(..len).ok_or(FrameError::Cobs)?;
    if raw.len() < 5 {
        return Err(FrameError::TooShort);
    }
    let (body, crc_bytes) = raw.split_at(raw.len() - 4);
    let received = u32::from_le_bytes([crc_bytes[0], crc_bytes[1], crc_bytes[2], crc_bytes[3]]);
    if FRAME_CRC.checksum(body) != received {
        return Err(FrameError::Crc);
    }
    match postcard::take_from_bytes::<Message>(body) {
        Ok((message, [])) => Ok(message),
        Ok(_) => Err(FrameError::Malformed),
        Err(_) => match read_varint_u32(body) {
            Some(tag) if tag >= MESSAGE_TYPE_COUNT => Err(FrameError::UnknownMessageType(tag)),
            _ => Err(FrameError::Malformed),
        },
    }
}

/// Reads a postcard (LEB128) varint u32 from the start of `bytes`.
fn read_varint_u32(bytes: &[u8]) -> Option<u32> {
    let mut value: u32 = 0;
    for (i, &b) in bytes.iter().take(5).enumerate() {
        let part = u32::from(b & 0x7f);
        value |= part.checked_shl(7 * i as u32)?;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Streaming frame decoder with a fixed buffer. Feed it bytes in any chunking;
/// it yields the same sequence of messages/errors and never panics.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8, MAX_ENCODED_LEN>,
    overflowed: bool,
}

impl FrameDecoder {
    /// A decoder waiting for the next frame.
    pub const fn new() -> Self {
        FrameDecoder {
            buf: Vec::new(),
            overflowed: false,
        }
    }

    /// Feeds one byte; returns a result when a delimiter ends a non-empty frame.
    pub fn push_byte(&mut self, byte: u8) -> Option<Result<Message, FrameError>> {
        if byte == 0 {
            if self.overflowed {
                self.overflowed = false;
                self.buf.clear();
                return Some(Err(FrameError::Overflow));
            }
            if self.buf.is_empty() {
                return None;
            }
            let result = decode_frame_body(&mut self.buf);
            self.buf.clear();
            return Some(result);
        }
        if !self.overflowed && self.buf.push(byte).is_err() {
            self.overflowed = true;
        }
        None
    }

    /// Feeds a slice, calling `on_frame` for every completed frame.
    pub fn feed<F: FnMut(Result<Message, FrameError>)>(&mut self, bytes: &[u8], mut on_frame: F) {
        for &byte in bytes {
            if let Some(result) = self.push_byte(byte) {
                on_frame(result);
            }
        }
    }

    /// Drops any partial frame (e.g. after a reconnect).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.overflowed = false;
    }
}
