//! # edgeseg-bridge
//!
//! The protocol shared by edgeseg hosts and scanner firmware: message types
//! serialized with postcard, framed with COBS and protected with CRC32, the
//! device-side model-slot state machine for safe, resumable, signed model
//! flashing, a device simulator, and overlay drawing for small displays.
//! It is `no_std` by default (heapless buffers, no allocation) so that
//! microcontroller firmware links the very same code; the host side (serial
//! transport, simulator) sits behind the `std` feature.
//!
//! The protocol is not written yet; this crate is its home.
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]
