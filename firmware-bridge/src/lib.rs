//! # edgeseg-bridge
//!
//! The protocol shared by edgeseg hosts and scanner firmware: message types
//! serialized with postcard, protected with CRC32 and framed with COBS
//! ([`protocol`], [`framing`]); the device-side A/B model-slot state machine
//! for safe, resumable, signed model flashing ([`device`]); and, behind the
//! `std` feature, the host upload client and serial transport ([`host`]) and an
//! in-process device simulator ([`sim`]).
//!
//! Behind the `display` feature, [`overlay`] draws mask results (fill,
//! contour, box, label) with embedded-graphics on any `DrawTarget`.
//!
//! The crate is `no_std` by default (heapless buffers, no allocation) so that
//! microcontroller firmware links the very same code. Logging goes through a
//! small shim: feature `defmt` (firmware) or feature `log` (host), never both.
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]

#[cfg(all(feature = "defmt", feature = "log"))]
compile_error!(
    "edgeseg-bridge: features `defmt` and `log` are mutually exclusive; enable one of them"
);

#[macro_use]
mod log_shim;

pub mod device;
pub mod framing;
pub mod protocol;

#[cfg(feature = "display")]
pub mod overlay;

#[cfg(feature = "std")]
pub mod host;
#[cfg(feature = "std")]
pub mod sim;

pub use framing::{encode_frame, FrameDecoder, FrameError, MAX_FRAME_LEN};
pub use protocol::{Message, PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN};
