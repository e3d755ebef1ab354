//! Display overlay (feature `display`): golden images rendered into an
//! `embedded-graphics-simulator` `SimulatorDisplay` (no SDL), the
//! untouched-pixel guarantee, and the contour against a brute-force reference.
//!
//! Golden PNGs live in `tests/golden/`. A missing or different golden fails
//! the test; `EDGESEG_BLESS=1 cargo test -p edgeseg-bridge --features display
//! --test overlay_golden` (re)writes them. On a mismatch the rendered image is
//! written next to the test binary's target dir as `<name>.actual.png`.

use std::collections::HashSet;
use std::path::PathBuf;

use edgeseg_bridge::overlay::{
    draw_overlay, draw_overlay_blended, overlay_bounds, FillMode, MaskRuns, Overlay, OverlayError,
    OverlayStyle, Placement,
};
use edgeseg_bridge::protocol::{MaskResult, PixelBox, RleError, RleMask};
use embedded_graphics::{
    image::GetPixel,
    pixelcolor::{Rgb565, Rgb888},
    prelude::*,
    primitives::Rectangle,
};
use embedded_graphics_simulator::{OutputSettings, SimulatorDisplay};

/// A `SimulatorDisplay` that records every pixel written and can be read back.
struct Recorder {
    inner: SimulatorDisplay<Rgb565>,
    touched: HashSet<Point>,
}

impl Recorder {
    /// A display with a deterministic, busy background (so that any stray
    /// write is visible).
    fn new(width: u32, height: u32) -> Self {
        let mut inner =
            SimulatorDisplay::with_default_color(Size::new(width, height), Rgb565::BLACK);
        let bg = inner.bounding_box().points().map(|p| {
            let (x, y) = (p.x as u32, p.y as u32);
            let r = (x * 31 / width) as u8;
            let g = ((y * 63 / height) as u8) ^ ((x / 8 + y / 8) % 2 * 8) as u8;
            let b = (((x + y) * 7) % 32) as u8;
            Pixel(p, Rgb565::new(r, g, b))
        });
        inner.draw_iter(bg).unwrap();
        Recorder {
            inner,
            touched: HashSet::new(),
        }
    }
}

impl DrawTarget for Recorder {
    type Color = Rgb565;
    type Error = core::convert::Infallible;

    fn draw_iter<I: IntoIterator<Item = Pixel<Rgb565>>>(
        &mut self,
        pixels: I,
    ) -> Result<(), Self::Error> {
        for Pixel(p, c) in pixels {
            if self.inner.bounding_box().contains(p) {
                self.touched.insert(p);
            }
            self.inner.draw_iter([Pixel(p, c)])?;
        }
        Ok(())
    }
}

impl OriginDimensions for Recorder {
    fn size(&self) -> Size {
        self.inner.size()
    }
}

impl GetPixel for Recorder {
    type Color = Rgb565;

    fn pixel(&self, p: Point) -> Option<Rgb565> {
        self.inner
            .bounding_box()
            .contains(p)
            .then(|| self.inner.get_pixel(p))
    }
}

fn to_rgb888(display: &SimulatorDisplay<Rgb565>) -> SimulatorDisplay<Rgb888> {
    let mut out = SimulatorDisplay::<Rgb888>::new(display.size());
    out.draw_iter(
        display
            .bounding_box()
            .points()
            .map(|p| Pixel(p, Rgb888::from(display.get_pixel(p)))),
    )
    .unwrap();
    out
}

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.png"))
}

/// Compares with (or, with `EDGESEG_BLESS=1`, writes) `tests/golden/<name>.png`.
fn check_golden(name: &str, display: &SimulatorDisplay<Rgb565>) {
    let path = golden_path(name);
    let rendered = to_rgb888(display);
    let settings = OutputSettings::default();
    if std::env::var("EDGESEG_BLESS").as_deref() == Ok("1") {
        rendered
            .to_rgb_output_image(&settings)
            .save_png(&path)
            .unwrap();
        eprintln!("blessed {}", path.display());
    }
    let golden = SimulatorDisplay::<Rgb888>::load_png(&path).unwrap_or_else(|e| {
        panic!(
            "golden image {} missing or unreadable ({e}); render it with EDGESEG_BLESS=1",
            path.display()
        )
    });
    assert_eq!(
        golden.size(),
        rendered.size(),
        "golden {name}: size differs"
    );
    if let Some(diff) = golden.diff(&rendered) {
        let differing = diff
            .bounding_box()
            .points()
            .filter(|&p| diff.get_pixel(p).is_on())
            .count();
        let actual = std::env::temp_dir().join(format!("edgeseg-overlay-{name}.actual.png"));
        rendered
            .to_rgb_output_image(&settings)
            .save_png(&actual)
            .unwrap();
        panic!(
            "golden {name}: {differing} pixels differ; rendered image written to {}",
            actual.display()
        );
    }
}

/// An ellipse with an elliptic hole and a notch, `w × h`.
fn ring_mask(w: u16, h: u16) -> RleMask {
    let (cx, cy) = (f32::from(w) / 2.0, f32::from(h) / 2.0);
    let mut px = vec![0u8; usize::from(w) * usize::from(h)];
    for y in 0..h {
        for x in 0..w {
            let dx = (f32::from(x) + 0.5 - cx) / (cx - 1.0);
            let dy = (f32::from(y) + 0.5 - cy) / (cy - 1.0);
            let r = dx * dx + dy * dy;
            let hole = ((dx - 0.2) * (dx - 0.2) + dy * dy) * 6.0 < 1.0;
            let notch = x > w - w / 4 && y.abs_diff(h / 2) < 2;
            px[usize::from(y) * usize::from(w) + usize::from(x)] =
                u8::from(r <= 1.0 && !hole && !notch);
        }
    }
    RleMask::encode(w, h, &px).unwrap()
}

fn bbox_of(mask: &RleMask) -> PixelBox {
    let spans: Vec<_> = MaskRuns::from(mask).spans().collect();
    PixelBox {
        x0: spans.iter().map(|s| s.1).min().unwrap(),
        y0: spans.iter().map(|s| s.0).min().unwrap(),
        x1: spans.iter().map(|s| s.2).max().unwrap(),
        y1: spans.iter().map(|s| s.0).max().unwrap() + 1,
    }
}

#[test]
fn golden_stipple_rgb565() {
    let mask = ring_mask(40, 24);
    let mut d = Recorder::new(128, 80);
    let overlay = Overlay {
        mask: Some((&mask).into()),
        bbox: Some(bbox_of(&mask)),
        label: Some("nodule 0.93"),
        placement: Placement {
            origin: Point::new(20, 20),
            scale: 2,
        },
    };
    draw_overlay(&mut d, &overlay, &OverlayStyle::default_rgb()).unwrap();
    check_golden("stipple_rgb565", &d.inner);
}

#[test]
fn golden_blend_rgb565() {
    let mask = ring_mask(40, 24);
    let mut d = Recorder::new(128, 80);
    let style = OverlayStyle {
        fill: FillMode::Blend { alpha: 96 },
        fill_color: Rgb565::RED,
        contour: Some(Rgb565::WHITE),
        label_background: None,
        label_color: Rgb565::WHITE,
        ..OverlayStyle::default_rgb()
    };
    let overlay = Overlay {
        mask: Some((&mask).into()),
        bbox: Some(bbox_of(&mask)),
        label: Some("vessel"),
        placement: Placement {
            origin: Point::new(20, 20),
            scale: 2,
        },
    };
    draw_overlay_blended(&mut d, &overlay, &style).unwrap();
    check_golden("blend_rgb565", &d.inner);
}

#[test]
fn golden_solid_clipped_label_inside() {
    // Box at the top edge: the label goes inside the box. The mask runs off
    // the right and bottom edges of the display: drawing is clipped.
    let mask = ring_mask(48, 30);
    let mut d = Recorder::new(64, 40);
    let style = OverlayStyle {
        fill: FillMode::Solid,
        fill_color: Rgb565::new(0, 20, 10),
        box_stroke: 2,
        ..OverlayStyle::default_rgb()
    };
    let overlay = Overlay {
        mask: Some((&mask).into()),
        bbox: Some(PixelBox {
            x0: 0,
            y0: 0,
            x1: 48,
            y1: 30,
        }),
        label: Some("head"),
        placement: Placement {
            origin: Point::new(30, 0),
            scale: 1,
        },
    };
    draw_overlay(&mut d, &overlay, &style).unwrap();
    check_golden("solid_clipped_rgb565", &d.inner);
}

/// Brute-force contour of a decoded mask: foreground with a background or
/// out-of-mask 4-neighbour.
fn reference_contour(mask: &RleMask) -> HashSet<Point> {
    let (w, h) = (i32::from(mask.width), i32::from(mask.height));
    let mut px = vec![0u8; (w * h) as usize];
    mask.decode_into(&mut px).unwrap();
    let fg = |x: i32, y: i32| x >= 0 && y >= 0 && x < w && y < h && px[(y * w + x) as usize] != 0;
    let mut out = HashSet::new();
    for y in 0..h {
        for x in 0..w {
            if fg(x, y) && !(fg(x - 1, y) && fg(x + 1, y) && fg(x, y - 1) && fg(x, y + 1)) {
                out.insert(Point::new(x, y));
            }
        }
    }
    out
}

/// xorshift for deterministic random masks.
fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

fn random_mask(seed: &mut u64) -> RleMask {
    loop {
        let w = 1 + (rng(seed) % 40) as u16;
        let h = 1 + (rng(seed) % 30) as u16;
        // Blobby: a few random rectangles unioned, minus a few.
        let mut px = vec![0u8; usize::from(w) * usize::from(h)];
        for k in 0..6 {
            let x0 = (rng(seed) % u64::from(w)) as u16;
            let y0 = (rng(seed) % u64::from(h)) as u16;
            let x1 = (x0 + 1 + (rng(seed) % 16) as u16).min(w);
            let y1 = (y0 + 1 + (rng(seed) % 12) as u16).min(h);
            for y in y0..y1 {
                for x in x0..x1 {
                    px[usize::from(y) * usize::from(w) + usize::from(x)] = u8::from(k < 4);
                }
            }
        }
        if let Ok(m) = RleMask::encode(w, h, &px) {
            return m;
        }
    }
}

#[test]
fn contour_matches_brute_force_and_nothing_else_is_touched() {
    let mut seed = 0x5eed_1234_u64;
    for case in 0..300 {
        let mask = random_mask(&mut seed);
        let mut d = Recorder::new(48, 36);
        let before = d.inner.clone();
        let style = OverlayStyle {
            fill: FillMode::None,
            box_color: None,
            ..OverlayStyle::default_rgb()
        };
        let overlay = Overlay {
            mask: Some((&mask).into()),
            bbox: None,
            label: None,
            placement: Placement::default(),
        };
        draw_overlay(&mut d, &overlay, &style).unwrap();
        let expected = reference_contour(&mask);
        assert_eq!(d.touched, expected, "case {case}: contour pixels differ");
        for p in d.inner.bounding_box().points() {
            if !expected.contains(&p) {
                assert_eq!(
                    d.inner.get_pixel(p),
                    before.get_pixel(p),
                    "case {case}: {p:?} changed"
                );
            } else {
                assert_eq!(d.inner.get_pixel(p), Rgb565::YELLOW);
            }
        }
    }
}

#[test]
fn fill_modes_touch_only_mask_box_and_label() {
    let mut seed = 0xfeed_u64;
    for case in 0..100 {
        let mask = random_mask(&mut seed);
        let scale = 1 + (case % 3) as u32;
        let origin = Point::new((case % 7) as i32 - 3, 12 + (case % 5) as i32);
        let placement = Placement { origin, scale };
        let fill = [
            FillMode::Solid,
            FillMode::Stipple,
            FillMode::Blend { alpha: 128 },
            FillMode::None,
        ][case % 4];
        let style = OverlayStyle {
            fill,
            ..OverlayStyle::default_rgb()
        };
        let bbox = bbox_of_or_unit(&mask);
        let overlay = Overlay {
            mask: Some((&mask).into()),
            bbox: Some(bbox),
            label: Some("T1"),
            placement,
        };
        let mut d = Recorder::new(140, 110);
        let before = d.inner.clone();
        draw_overlay_blended(&mut d, &overlay, &style).unwrap();

        // Allowed: mapped foreground pixels, the box rectangle, the label rectangle.
        let mut px = vec![0u8; usize::from(mask.width) * usize::from(mask.height)];
        mask.decode_into(&mut px).unwrap();
        let s = scale as i32;
        let is_fg = |p: Point| {
            let (dx, dy) = (p.x - origin.x, p.y - origin.y);
            if dx < 0 || dy < 0 {
                return false;
            }
            let (mx, my) = (dx / s, dy / s);
            mx < i32::from(mask.width)
                && my < i32::from(mask.height)
                && px[(my * i32::from(mask.width) + mx) as usize] != 0
        };
        let box_rect = Rectangle::new(
            origin + Point::new(i32::from(bbox.x0) * s, i32::from(bbox.y0) * s),
            Size::new(
                u32::from(bbox.x1 - bbox.x0) * scale,
                u32::from(bbox.y1 - bbox.y0) * scale,
            ),
        );
        let label_rect = Rectangle::new(box_rect.top_left - Point::new(0, 10), Size::new(12, 10));
        let bounds = overlay_bounds(&d, &overlay, &style);
        for p in d.inner.bounding_box().points() {
            let allowed = is_fg(p) || box_rect.contains(p) || label_rect.contains(p);
            if !allowed {
                assert!(
                    !d.touched.contains(&p),
                    "case {case}: wrote outside the overlay at {p:?}"
                );
                assert_eq!(
                    d.inner.get_pixel(p),
                    before.get_pixel(p),
                    "case {case}: {p:?}"
                );
            }
            if d.touched.contains(&p) {
                assert!(
                    bounds.contains(p),
                    "case {case}: {p:?} outside overlay_bounds"
                );
            }
            // Stipple leaves the odd interior pixels alone.
            if fill == FillMode::Stipple
                && is_fg(p)
                && (p.x + p.y) & 1 == 1
                && !box_rect.contains(p)
                && !label_rect.contains(p)
                && !reference_contour(&mask)
                    .contains(&Point::new((p.x - origin.x) / s, (p.y - origin.y) / s))
            {
                assert!(!d.touched.contains(&p), "case {case}: stipple wrote {p:?}");
            }
        }
    }
}

fn bbox_of_or_unit(mask: &RleMask) -> PixelBox {
    if MaskRuns::from(mask).spans().next().is_some() {
        bbox_of(mask)
    } else {
        PixelBox {
            x0: 0,
            y0: 0,
            x1: 1,
            y1: 1,
        }
    }
}

#[test]
fn invalid_mask_is_refused_and_nothing_is_drawn() {
    let mut mask = ring_mask(10, 6);
    mask.runs[0] += 1;
    let mut d = Recorder::new(20, 20);
    let overlay = Overlay {
        mask: Some((&mask).into()),
        bbox: Some(PixelBox {
            x0: 0,
            y0: 0,
            x1: 4,
            y1: 4,
        }),
        label: Some("x"),
        placement: Placement::default(),
    };
    let err = draw_overlay(&mut d, &overlay, &OverlayStyle::default_rgb()).unwrap_err();
    assert_eq!(err, OverlayError::Mask(RleError::SizeMismatch));
    assert!(d.touched.is_empty());
}

#[test]
fn mask_result_overlay_matches_manual_overlay() {
    let mask = ring_mask(30, 20);
    let result = MaskResult {
        frame_id: 7,
        score: 0.9,
        bbox: bbox_of(&mask),
        mask: mask.clone(),
    };
    let placement = Placement {
        origin: Point::new(5, 15),
        scale: 1,
    };
    let mut a = Recorder::new(60, 40);
    let mut b = Recorder::new(60, 40);
    draw_overlay(
        &mut a,
        &Overlay::from_result(&result, Some("ok"), placement),
        &OverlayStyle::default_rgb(),
    )
    .unwrap();
    let manual = Overlay {
        mask: Some((&mask).into()),
        bbox: Some(result.bbox),
        label: Some("ok"),
        placement,
    };
    draw_overlay(&mut b, &manual, &OverlayStyle::default_rgb()).unwrap();
    assert!(a.inner.diff(&b.inner).is_none());
}
