//! Fuzz frame ingest: `cargo +nightly fuzz run frame_ingest`.
//!
//! Input layout: byte 0 selects the path, bytes 1–2 and 3–4 are the declared
//! width and height (u16 LE, reduced modulo 1024 for the raw formats), the
//! rest is the payload:
//!
//! - 0–4: a raw RGB24 / GREY / YUYV / NV12 / I420 frame through `to_rgb`;
//! - 5: an MJPEG frame through `to_rgb`;
//! - 6: a Y4M stream through `Y4mReader` and `to_rgb`, frame by frame;
//! - 7: a raw stream of the declared size through `RawSource`;
//! - other: an image file (PNG/JPEG) through `decode_image`.
//!
//! Every path must return errors, never panic, and every success must have the
//! declared size.
#![no_main]

use std::time::Instant;

use edgeseg_kernels::pixfmt::RawFormat;
use edgeseg_runtime::stream::frame::{decode_image, to_rgb, PixelFormat, RawFrame};
use edgeseg_runtime::stream::source::{RawSource, Source};
use edgeseg_runtime::stream::y4m::Y4mReader;
use libfuzzer_sys::fuzz_target;

const RAW: [RawFormat; 5] = [
    RawFormat::Rgb24,
    RawFormat::Grey,
    RawFormat::Yuyv,
    RawFormat::Nv12,
    RawFormat::I420,
];

fn check(frame: &RawFrame) {
    let mut out = Vec::new();
    if let Ok((w, h)) = to_rgb(frame, &mut out) {
        assert_eq!(out.len(), w * h * 3);
        if let PixelFormat::Raw(_) = frame.format {
            assert_eq!((w, h), (frame.width, frame.height));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let mode = data[0];
    let w = usize::from(u16::from_le_bytes([data[1], data[2]]));
    let h = usize::from(u16::from_le_bytes([data[3], data[4]]));
    let payload = &data[5..];
    let frame = |format, width, height| RawFrame {
        id: 0,
        width,
        height,
        format,
        data: payload.to_vec(),
        capture: Instant::now(),
    };
    match mode {
        0..=4 => check(&frame(PixelFormat::Raw(RAW[usize::from(mode)]), w % 1024, h % 1024)),
        5 => check(&frame(PixelFormat::Mjpeg, w, h)),
        6 => {
            if let Ok(mut r) = Y4mReader::new(payload) {
                let hd = r.header();
                let mut buf = Vec::new();
                for id in 0..4 {
                    match r.read_frame(&mut buf) {
                        Ok(true) => check(&RawFrame {
                            id,
                            width: hd.width,
                            height: hd.height,
                            format: PixelFormat::Raw(hd.format),
                            data: std::mem::take(&mut buf),
                            capture: Instant::now(),
                        }),
                        _ => break,
                    }
                }
            }
        }
        7 => {
            let fmt = RAW[usize::from(data[1]) % 5];
            let reader = Box::new(std::io::Cursor::new(payload.to_vec()));
            if let Ok(mut s) = RawSource::new("fuzz".into(), reader, w % 256, h % 256, fmt, false) {
                for _ in 0..4 {
                    match s.next_frame() {
                        Some(Ok(f)) => check(&f),
                        Some(Err(_)) | None => break,
                    }
                }
            }
        }
        _ => {
            if let Ok(img) = decode_image(0, "fuzz", payload, None) {
                assert_eq!(img.data.len(), img.width * img.height * 3);
            }
        }
    }
});
