//! `no_std` proof for `edgeseg-bridge`.
//!
//! Built with `--cfg edgeseg_nostd_check -C panic=abort` (see the command in
//! `firmware-bridge/README.md`) this is a `#![no_std]` `#![no_main]` binary
//! with its own `#[panic_handler]` that links the bridge with default
//! features off. If any dependency pulled in `std`, std's panic handler would
//! collide with ours (error E0152, duplicate lang item `panic_impl`) and the
//! build would fail. The binary exercises framing, decoder and model store so
//! they are really compiled and linked, and exits 0 when they work.
//!
//! Without the cfg (plain `cargo build --workspace`) it is an ordinary std
//! binary running the same check, so the workspace builds as usual.
#![cfg_attr(edgeseg_nostd_check, no_std, no_main)]

#[cfg(edgeseg_nostd_check)]
use core::panic::PanicInfo;
use edgeseg_bridge::device::{Flash, FlashLayout, ModelStore, PinnedKey};
use edgeseg_bridge::framing::{encode_frame, FrameDecoder, MAX_FRAME_LEN};
use edgeseg_bridge::protocol::{Heartbeat, Message};

#[cfg(edgeseg_nostd_check)]
#[panic_handler]
fn panic(_info: &PanicInfo) -> ! {
    loop {}
}

/// A tiny flash that is always erased; enough to instantiate the store.
struct NullFlash;

impl Flash for NullFlash {
    type Error = ();
    fn sector_size(&self) -> u32 {
        1024
    }
    fn write_align(&self) -> u32 {
        8
    }
    fn capacity(&self) -> u32 {
        1024 * 6
    }
    fn erase_sector(&mut self, _addr: u32) -> Result<(), ()> {
        Ok(())
    }
    fn write(&mut self, _addr: u32, _data: &[u8]) -> Result<(), ()> {
        Ok(())
    }
    fn read(&mut self, _addr: u32, buf: &mut [u8]) -> Result<(), ()> {
        buf.fill(0xFF);
        Ok(())
    }
}

/// C entry point of the no_std build (the C runtime's start code calls it).
#[cfg(edgeseg_nostd_check)]
#[unsafe(no_mangle)]
pub extern "C" fn main(_argc: i32, _argv: *const *const u8) -> i32 {
    check(7, &KEY) as i32
}

#[cfg(not(edgeseg_nostd_check))]
fn main() {
    std::process::exit(check(7, &KEY) as i32);
}

/// A valid Ed25519 public key (RFC 8032 test 1).
const KEY: [u8; 32] = [
    0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64, 0x07, 0x3a,
    0x0e, 0xe1, 0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25, 0xaf, 0x02, 0x1a, 0x68, 0xf7, 0x07, 0x51, 0x1a,
];

/// Encodes and decodes a heartbeat and opens a model store; returns 0 on success.
fn check(seq: u32, key: &[u8; 32]) -> u32 {
    let mut frame = [0u8; MAX_FRAME_LEN];
    let sent = Message::Heartbeat(Heartbeat { seq, uptime_ms: 0 });
    let Ok(len) = encode_frame(&sent, &mut frame) else {
        return 1;
    };
    let mut decoder = FrameDecoder::new();
    let mut ok = false;
    decoder.feed(&frame[..len], |result| ok = result.as_ref() == Ok(&sent));
    if !ok {
        return 2;
    }
    let Ok(layout) = FlashLayout::new(1024, 8, 0, 2, 1024 * 6) else {
        return 3;
    };
    let Ok(key) = PinnedKey::from_bytes(key) else {
        return 4;
    };
    match ModelStore::open(NullFlash, layout, key) {
        Ok(store) if store.state().active.is_none() => 0,
        _ => 5,
    }
}
