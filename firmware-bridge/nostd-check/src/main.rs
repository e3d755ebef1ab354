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
        Ok(store) if store.state().active.is_none() => {}
        _ => return 5,
    }
    #[cfg(feature = "display")]
    if !overlay_check::draw() {
        return 6;
    }
    0
}

/// The display overlay on a fixed RGB565 framebuffer, without std or alloc.
#[cfg(feature = "display")]
mod overlay_check {
    use edgeseg_bridge::overlay::{draw_overlay, Overlay, OverlayStyle, Placement};
    use edgeseg_bridge::protocol::{PixelBox, RleMask};
    use embedded_graphics::{pixelcolor::Rgb565, prelude::*};

    const W: usize = 24;
    const H: usize = 24;

    struct Framebuffer([Rgb565; W * H]);

    impl DrawTarget for Framebuffer {
        type Color = Rgb565;
        type Error = core::convert::Infallible;

        fn draw_iter<I: IntoIterator<Item = Pixel<Rgb565>>>(
            &mut self,
            pixels: I,
        ) -> Result<(), Self::Error> {
            for Pixel(p, c) in pixels {
                if let (Ok(x), Ok(y)) = (usize::try_from(p.x), usize::try_from(p.y)) {
                    if x < W && y < H {
                        self.0[y * W + x] = c;
                    }
                }
            }
            Ok(())
        }
    }

    impl OriginDimensions for Framebuffer {
        fn size(&self) -> Size {
            Size::new(W as u32, H as u32)
        }
    }

    /// Draws a 4×4 square mask with a box and a label; checks the contour
    /// pixel, an untouched pixel and a label pixel.
    pub fn draw() -> bool {
        let mut pixels = [0u8; 8 * 8];
        for y in 2..6 {
            pixels[y * 8 + 2..y * 8 + 6].fill(1);
        }
        let Ok(mask) = RleMask::encode(8, 8, &pixels) else {
            return false;
        };
        let mut fb = Framebuffer([Rgb565::BLACK; W * H]);
        let overlay = Overlay {
            mask: Some((&mask).into()),
            bbox: Some(PixelBox {
                x0: 1,
                y0: 1,
                x1: 7,
                y1: 7,
            }),
            label: Some("ok"),
            placement: Placement {
                origin: Point::new(4, 12),
                scale: 1,
            },
        };
        if draw_overlay(&mut fb, &overlay, &OverlayStyle::default_rgb()).is_err() {
            return false;
        }
        let at = |x: usize, y: usize| fb.0[y * W + x];
        // Box top-left is (5, 13); the 6×10 label "ok" sits above it at (5, 3).
        let label = (3..13).flat_map(|y| (5..17).map(move |x| (x, y)));
        let label_bg = label.clone().any(|(x, y)| at(x, y) == Rgb565::GREEN);
        let glyphs = label.clone().any(|(x, y)| at(x, y) == Rgb565::BLACK);
        at(4 + 2, 12 + 2) == Rgb565::YELLOW && at(23, 0) == Rgb565::BLACK && label_bg && glyphs
    }
}
