//! A simple overlay for single-image results: translucent fill, mask contour and prompt box on
//! a copy of the RGB image. Pixels that the overlay does not touch keep their input values.
//! (The streaming runtime draws its own overlay with embedded-graphics.)

use crate::grid::{BinaryMask, GridBox};
use crate::metrics::boundary;

/// Overlay colours and opacity.
#[derive(Debug, Clone, Copy)]
pub struct OverlayStyle {
    /// Fill colour (RGB).
    pub fill: [u8; 3],
    /// Fill opacity in [0, 1].
    pub alpha: f32,
    /// Contour colour.
    pub contour: [u8; 3],
    /// Box colour.
    pub box_colour: [u8; 3],
}

impl Default for OverlayStyle {
    fn default() -> Self {
        Self {
            fill: [0, 200, 255],
            alpha: 0.35,
            contour: [255, 255, 0],
            box_colour: [0, 255, 0],
        }
    }
}

/// Draws `mask` (2D, same size as the image) and the boxes onto `rgb` (HWC, 3 channels).
/// Returns `None` if the sizes do not agree.
pub fn draw(
    rgb: &[u8],
    width: usize,
    height: usize,
    mask: &BinaryMask,
    boxes: &[GridBox],
    style: &OverlayStyle,
) -> Option<Vec<u8>> {
    if mask.shape.dims() != [height, width] || rgb.len() != width * height * 3 {
        return None;
    }
    let mut out = rgb.to_vec();
    let edge = boundary(mask);
    for (i, (&m, &e)) in mask.data.iter().zip(&edge).enumerate() {
        let px = &mut out[i * 3..i * 3 + 3];
        if e {
            px.copy_from_slice(&style.contour);
        } else if m {
            for (c, f) in px.iter_mut().zip(style.fill) {
                *c = (f32::from(*c) * (1.0 - style.alpha) + f32::from(f) * style.alpha).round()
                    as u8;
            }
        }
    }
    for b in boxes {
        let Some([x0, y0, x1, y1]) = b.xyxy() else {
            continue;
        };
        let (x1, y1) = (x1.min(width - 1), y1.min(height - 1));
        let mut put = |x: usize, y: usize| {
            out[(y * width + x) * 3..(y * width + x) * 3 + 3].copy_from_slice(&style.box_colour)
        };
        for x in x0..=x1 {
            put(x, y0);
            put(x, y1);
        }
        for y in y0..=y1 {
            put(x0, y);
            put(x1, y);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::Shape;

    #[test]
    fn untouched_pixels_keep_their_values() {
        let (w, h) = (8, 6);
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
        let mut mask = BinaryMask::empty(Shape::d2(h, w));
        for y in 2..5 {
            for x in 2..6 {
                mask.data[y * w + x] = true;
            }
        }
        let out = draw(&rgb, w, h, &mask, &[], &OverlayStyle::default()).unwrap();
        for i in 0..w * h {
            if !mask.data[i] {
                assert_eq!(out[i * 3..i * 3 + 3], rgb[i * 3..i * 3 + 3]);
            }
        }
        // (3, 3) is interior: blended, (2, 2) is on the contour
        assert_ne!(
            out[(3 * w + 3) * 3..(3 * w + 3) * 3 + 3],
            rgb[(3 * w + 3) * 3..(3 * w + 3) * 3 + 3]
        );
        assert_eq!(out[(2 * w + 2) * 3..(2 * w + 2) * 3 + 3], [255, 255, 0]);
        assert!(draw(&rgb, w + 1, h, &mask, &[], &OverlayStyle::default()).is_none());
    }
}
