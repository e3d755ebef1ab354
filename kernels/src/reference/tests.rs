use proptest::prelude::*;

use super::*;
use crate::prepost::{preprocess_rgb, INPUT_SIZE};

fn image(h: usize, w: usize, c: usize, seed: u64) -> Vec<u8> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..h * w * c)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 56) as u8
        })
        .collect()
}

#[test]
fn yuv_conversion_known_values() {
    // limited range black, white and mid grey; saturation at the top
    assert_eq!(yuv_to_rgb(16, 128, 128), [0, 0, 0]);
    assert_eq!(yuv_to_rgb(235, 128, 128), [255, 255, 255]);
    assert_eq!(yuv_to_rgb(126, 128, 128), [128, 128, 128]);
    assert_eq!(yuv_to_rgb(255, 128, 128), [255, 255, 255]);
    // (255, 255, 255): R and B saturate, G = (239·CY + 2¹⁹ − 127·(852492 + 409993)) >> 20
    assert_eq!(yuv_to_rgb(255, 255, 255), [255, 125, 255]);
    // pure red in BT.601 limited range: Y=81 U=90 V=240
    let [r, g, b] = yuv_to_rgb(81, 90, 240);
    assert!(r >= 254 && g <= 1 && b <= 1, "{r} {g} {b}");
}

#[test]
fn rgb_and_grey_frames_match_preprocess_rgb() {
    let (h, w) = (300, 410);
    let rgb = image(h, w, 3, 7);
    // with padding bytes at the end of each row
    let stride = w * 3 + 5;
    let mut padded = vec![0xAAu8; stride * h];
    for y in 0..h {
        padded[y * stride..y * stride + w * 3].copy_from_slice(&rgb[y * w * 3..(y + 1) * w * 3]);
    }
    let f = Frame {
        format: PixelFormat::Rgb8,
        width: w,
        height: h,
        stride,
        data: &padded,
    };
    let a = preprocess_frame(&f, INPUT_SIZE).unwrap();
    let b = preprocess_rgb(&rgb, h, w).unwrap();
    assert_eq!(a.input, b.input);
    assert_eq!(a.resized, b.resized);
    let grey = image(h, w, 1, 3);
    let g = Frame {
        format: PixelFormat::Grey8,
        width: w,
        height: h,
        stride: w,
        data: &grey,
    };
    let rgb3: Vec<u8> = grey.iter().flat_map(|&v| [v, v, v]).collect();
    assert_eq!(
        preprocess_frame(&g, INPUT_SIZE).unwrap().input,
        preprocess_rgb(&rgb3, h, w).unwrap().input
    );
}

#[test]
fn yuyv_and_nv12_share_chroma_as_specified() {
    let (h, w) = (4, 6);
    let yuyv = image(h, w * 2, 1, 11);
    let f = Frame {
        format: PixelFormat::Yuyv,
        width: w,
        height: h,
        stride: w * 2,
        data: &yuyv,
    };
    let rgb = frame_to_rgb(&f).unwrap();
    for y in 0..h {
        for x in 0..w {
            let p = &yuyv[y * w * 2 + 4 * (x / 2)..];
            let want = yuv_to_rgb(p[(x % 2) * 2], p[1], p[3]);
            assert_eq!(rgb[(y * w + x) * 3..(y * w + x) * 3 + 3], want);
        }
    }
    let nv12 = image(h * 3 / 2, w, 1, 12);
    let f = Frame {
        format: PixelFormat::Nv12,
        width: w,
        height: h,
        stride: w,
        data: &nv12,
    };
    let rgb = frame_to_rgb(&f).unwrap();
    let (x, y) = (3, 3);
    let uv = h * w + (y / 2) * w + 2;
    assert_eq!(
        rgb[(y * w + x) * 3..(y * w + x) * 3 + 3],
        yuv_to_rgb(nv12[y * w + x], nv12[uv], nv12[uv + 1])
    );
}

/// Tightly packed frames convert exactly like the stream path's `pixfmt::to_rgb`.
#[test]
fn frame_to_rgb_equals_pixfmt_for_packed_frames() {
    use crate::pixfmt::{frame_len, to_rgb, RawFormat};
    let (w, h) = (10, 6);
    for (pf, rf) in [
        (PixelFormat::Rgb8, RawFormat::Rgb24),
        (PixelFormat::Grey8, RawFormat::Grey),
        (PixelFormat::Yuyv, RawFormat::Yuyv),
        (PixelFormat::Nv12, RawFormat::Nv12),
    ] {
        let n = frame_len(rf, w, h).unwrap();
        let data = image(n, 1, 1, n as u64);
        let f = Frame {
            format: pf,
            width: w,
            height: h,
            stride: pf.min_stride(w).unwrap(),
            data: &data,
        };
        let mut want = vec![0u8; w * h * 3];
        to_rgb(rf, w, h, &data, &mut want).unwrap();
        assert_eq!(frame_to_rgb(&f).unwrap(), want, "{pf:?}");
    }
}

#[test]
fn bad_frames_are_errors() {
    let d = [0u8; 100];
    let f = |format, width, height, stride| Frame {
        format,
        width,
        height,
        stride,
        data: &d,
    };
    assert!(frame_to_rgb(&f(PixelFormat::Yuyv, 3, 2, 6)).is_err()); // odd width
    assert!(frame_to_rgb(&f(PixelFormat::Nv12, 4, 3, 4)).is_err()); // odd height
    assert!(frame_to_rgb(&f(PixelFormat::Rgb8, 4, 4, 11)).is_err()); // stride too small
    assert!(frame_to_rgb(&f(PixelFormat::Rgb8, 10, 10, 30)).is_err()); // too few bytes
    assert!(frame_to_rgb(&f(PixelFormat::Grey8, 0, 10, 30)).is_err());
    assert!(frame_to_rgb(&f(PixelFormat::Grey8, usize::MAX, 2, usize::MAX)).is_err());
}

#[test]
fn plan_modes_follow_opencv_paths() {
    assert_eq!(plan_resize(512, 512, 256, 256).unwrap().mode, 0);
    assert_eq!(plan_resize(256, 256, 256, 256).unwrap().mode, 0);
    assert_eq!(plan_resize(288, 384, 192, 256).unwrap().mode, 1);
    assert_eq!(plan_resize(100, 120, 213, 256).unwrap().mode, 2);
    assert!(plan_resize(0, 1, 1, 1).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The GPU resize algorithm, run on the CPU from the GPU's tables, equals
    /// OpenCV's INTER_AREA reference bit for bit on every path.
    #[test]
    fn emulated_resize_kernel_equals_reference(
        h in 1usize..90, w in 1usize..90, target in 1usize..64, seed in any::<u64>(),
        shrink_only in any::<bool>(),
    ) {
        let target = if shrink_only { target.min(h.max(w)) } else { target };
        let (nh, nw) = longest_side_size(h, w, target);
        prop_assume!(nh > 0 && nw > 0);
        let rgb = image(h, w, 3, seed);
        let t = plan_resize(h, w, nh, nw).unwrap();
        let want = resize_area_u8(&rgb, h, w, 3, nh, nw).unwrap();
        prop_assert_eq!(emulate_pre_resize(&rgb, w, &t, nh, nw), want);
    }

    /// Integer scales (the fast path) and exact halving too.
    #[test]
    fn emulated_resize_fast_path(dh in 1usize..20, dw in 1usize..20, sy in 1usize..5, sx in 1usize..5, seed in any::<u64>()) {
        let (h, w) = (dh * sy, dw * sx);
        let rgb = image(h, w, 3, seed);
        let t = plan_resize(h, w, dh, dw).unwrap();
        prop_assert_eq!(emulate_pre_resize(&rgb, w, &t, dh, dw), resize_area_u8(&rgb, h, w, 3, dh, dw).unwrap());
    }

    /// The GPU bilinear tables give the reference's upsampled logits bit for bit.
    #[test]
    fn emulated_bilerp_equals_upsample(
        lh in 1usize..40, lw in 1usize..40, fh in 0.1f64..1.0, fw in 0.1f64..1.0,
        oh in 1usize..80, ow in 1usize..80, seed in any::<u64>(),
    ) {
        let nh = ((lh as f64 * fh).ceil() as usize).clamp(1, lh);
        let nw = ((lw as f64 * fw).ceil() as usize).clamp(1, lw);
        let logits: Vec<f32> = image(lh, lw, 1, seed).iter().map(|&v| (f32::from(v) - 127.5) / 7.0).collect();
        let up = upsample_logits(&logits, lh, lw, nh, nw, oh, ow).unwrap();
        let ys = plan_upsample(nh, oh);
        let xs = plan_upsample(nw, ow);
        for y in 0..oh {
            for x in 0..ow {
                prop_assert_eq!(emulate_bilerp(&logits, lw, &ys, &xs, y, x).to_bits(), up[y * ow + x].to_bits());
            }
        }
    }

    /// The overlay leaves every pixel outside the mask bit-identical, paints
    /// contour pixels, and keeps the mask equal to the plain post-processing.
    #[test]
    fn overlay_touches_only_mask_pixels(oh in 1usize..40, ow in 1usize..40, seed in any::<u64>()) {
        let (lh, lw) = (16, 16);
        let logits: Vec<f32> = image(lh, lw, 1, seed).iter().map(|&v| f32::from(v) - 140.0).collect();
        let rgb = image(oh, ow, 3, seed ^ 1);
        let st = OverlayStyle::default();
        let out = postprocess_overlay(&logits, lh, lw, 12, 16, oh, ow, Some(&rgb), &st).unwrap();
        let plain = threshold_logits(&upsample_logits(&logits, lh, lw, 12, 16, oh, ow).unwrap());
        prop_assert_eq!(&out.mask, &plain);
        let ov = out.overlay.unwrap();
        for p in 0..oh * ow {
            if out.mask[p] == 0 {
                prop_assert_eq!(&ov[3 * p..3 * p + 3], &rgb[3 * p..3 * p + 3]);
            }
            let (y, x) = (p / ow, p % ow);
            if out.mask[p] == 1 && (y == 0 || x == 0 || y + 1 == oh || x + 1 == ow) {
                prop_assert_eq!(&ov[3 * p..3 * p + 3], &st.contour[..]);
            }
        }
    }

    /// f16 round trip of the pre-processing output stays within half an f16 ulp.
    #[test]
    fn f16_rounding_is_nearest(v in proptest::collection::vec(0.0f32..1.0, 1..64)) {
        let back = from_f16_bits(&to_f16_bits(&v));
        for (a, b) in v.iter().zip(&back) {
            prop_assert!((a - b).abs() <= 2f32.powi(-12));
        }
    }
}
