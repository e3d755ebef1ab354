//! The overlay, drawn with embedded-graphics straight onto the RGB8 frame
//! buffer: translucent mask fill, mask contour, prompt box, label, a small
//! latency readout, and the "AI late" / "AI unavailable" / "AI off" indicators.
//!
//! Only pixels the overlay draws change. [`Canvas`] can record every pixel it
//! writes (`touched`), which the tests use to check that every other pixel is
//! bit-identical to the input on every frame of a run.

use std::convert::Infallible;

use embedded_graphics::mono_font::{ascii, MonoFont, MonoTextStyleBuilder};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{PrimitiveStyle, Rectangle};
use embedded_graphics::text::{Baseline, Text};

use crate::prompt::BoxPrompt;
use crate::Segmentation;

/// An RGB8 frame buffer as an embedded-graphics draw target.
#[derive(Debug)]
pub struct Canvas<'a> {
    width: usize,
    height: usize,
    data: &'a mut [u8],
    touched: Option<&'a mut [bool]>,
}

impl<'a> Canvas<'a> {
    /// Wraps `data` (`height × width × 3` bytes). With `touched` (one flag per
    /// pixel), every pixel written is flagged. `None` when a length is wrong.
    pub fn new(
        width: usize,
        height: usize,
        data: &'a mut [u8],
        touched: Option<&'a mut [bool]>,
    ) -> Option<Self> {
        let n = width.checked_mul(height)?;
        if data.len() != n.checked_mul(3)? || touched.as_ref().is_some_and(|t| t.len() != n) {
            return None;
        }
        // Sides must fit embedded-graphics' i32/u32 coordinates.
        if width > i32::MAX as usize || height > i32::MAX as usize {
            return None;
        }
        Some(Self {
            width,
            height,
            data,
            touched,
        })
    }

    #[inline]
    fn set(&mut self, x: usize, y: usize, rgb: [u8; 3]) {
        let i = y * self.width + x;
        self.data[3 * i..3 * i + 3].copy_from_slice(&rgb);
        if let Some(t) = self.touched.as_deref_mut() {
            t[i] = true;
        }
    }

    /// Flags the pixels of `runs` as written, for a fill that was blended in
    /// before this canvas wrapped the frame ([`RowFill`]); no pixel changes.
    pub fn mark_runs(&mut self, runs: &[(u32, u32, u32)]) {
        let (w, h) = (self.width, self.height);
        if let Some(t) = self.touched.as_deref_mut() {
            for &(y, x0, x1) in runs {
                let (y, x0, x1) = (y as usize, x0 as usize, (x1 as usize).min(w.max(1) - 1));
                if y < h && x0 < w && x0 <= x1 {
                    t[y * w + x0..=y * w + x1].fill(true);
                }
            }
        }
    }

    /// Blends `rgb` over the pixels `x0..=x1` of row `y` with opacity
    /// `alpha / 256`; coordinates outside the frame are clipped. Each channel
    /// becomes `(c·(256 − a) + o·a + 128) >> 8`.
    pub fn blend_run(&mut self, y: usize, x0: usize, x1: usize, rgb: [u8; 3], alpha: u16) {
        if y >= self.height || x0 >= self.width || x1 < x0 {
            return;
        }
        let x1 = x1.min(self.width - 1);
        let (first, last) = (y * self.width + x0, y * self.width + x1);
        blend_bytes(&mut self.data[3 * first..3 * (last + 1)], rgb, alpha);
        if let Some(t) = self.touched.as_deref_mut() {
            t[first..=last].fill(true);
        }
    }
}

/// A mask's translucent fill, to be blended into a frame row by row while the
/// frame is converted (each row is then still in cache), instead of over the
/// whole converted frame afterwards.
#[derive(Debug, Clone, Copy)]
pub struct RowFill<'a> {
    /// Foreground runs `(row, first column, last column)`, as in [`MaskShape`].
    pub runs: &'a [(u32, u32, u32)],
    /// Fill colour.
    pub rgb: [u8; 3],
    /// Opacity in 1/256.
    pub alpha: u16,
}

impl RowFill<'_> {
    /// Whether the runs are in row order, which [`RowFill::runs_of_row`]
    /// needs ([`MaskShape::of`] makes them so).
    pub fn in_row_order(&self) -> bool {
        self.runs.windows(2).all(|w| w[0].0 <= w[1].0)
    }

    /// The runs of row `y`, given the index of the first run not before it
    /// (`cursor`, advanced past them). Runs must be in row order.
    pub fn runs_of_row(&self, y: usize, cursor: &mut usize) -> &[(u32, u32, u32)] {
        let mut i = *cursor;
        while self.runs.get(i).is_some_and(|r| (r.0 as usize) < y) {
            i += 1;
        }
        let start = i;
        while self.runs.get(i).is_some_and(|r| r.0 as usize == y) {
            i += 1;
        }
        *cursor = i;
        self.runs.get(start..i).unwrap_or_default()
    }

    /// Blends `runs` (all of one row) over `row`, packed RGB of `width`
    /// pixels, exactly as [`Canvas::blend_run`] does (columns past the row
    /// are clipped).
    pub fn blend_row(&self, row: &mut [u8], width: usize, runs: &[(u32, u32, u32)]) {
        for &(_, x0, x1) in runs {
            let (x0, x1) = (x0 as usize, (x1 as usize).min(width.saturating_sub(1)));
            if x0 >= width || x1 < x0 {
                continue;
            }
            if let Some(px) = row.get_mut(3 * x0..3 * (x1 + 1)) {
                blend_bytes(px, self.rgb, self.alpha);
            }
        }
    }
}

/// Pixels blended per block of [`blend_bytes`] (a whole number of vector
/// registers of `u16` lanes for the common SIMD widths).
const BLEND_BLOCK_PIXELS: usize = 32;

/// Blends `rgb` with opacity `alpha / 256` (clamped to 256) over packed RGB
/// pixels: `(c·(256 − a) + o·a + 128) >> 8` per channel.
///
/// The sum is at most `255·256 + 128 = 65408`, so it is computed exactly in
/// `u16`, and the block loop over a fixed colour pattern vectorises. It is
/// compiled for several instruction sets and chosen at run time (the x86-64
/// baseline has only SSE2's 8 lanes of `u16`); every version is the same safe
/// Rust, so the bytes are identical.
#[multiversion::multiversion(targets("x86_64+avx2", "x86_64+sse4.1", "aarch64+neon"))]
fn blend_bytes(px: &mut [u8], rgb: [u8; 3], alpha: u16) {
    let a = alpha.min(256);
    let keep = 256 - a;
    let add: [u16; 3] = rgb.map(|o| u16::from(o) * a + 128);
    let mut pattern = [0u16; 3 * BLEND_BLOCK_PIXELS];
    for (p, &k) in pattern.iter_mut().zip(add.iter().cycle()) {
        *p = k;
    }
    let mut blocks = px.chunks_exact_mut(3 * BLEND_BLOCK_PIXELS);
    // never wraps (see above); the wrapping forms only spare the overflow
    // checks of builds that keep them on, which would stop vectorisation
    let blend = |c: &mut u8, k: u16| {
        *c = (u16::from(*c).wrapping_mul(keep).wrapping_add(k) >> 8) as u8;
    };
    for block in &mut blocks {
        for (c, &k) in block.iter_mut().zip(&pattern) {
            blend(c, k);
        }
    }
    for (c, &k) in blocks.into_remainder().iter_mut().zip(&pattern) {
        blend(c, k);
    }
}

impl OriginDimensions for Canvas<'_> {
    fn size(&self) -> Size {
        // `new` checked that both sides fit in i32.
        Size::new(self.width as u32, self.height as u32)
    }
}

impl DrawTarget for Canvas<'_> {
    type Color = Rgb888;
    type Error = Infallible;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Self::Color>>,
    {
        for Pixel(p, c) in pixels {
            if let (Ok(x), Ok(y)) = (usize::try_from(p.x), usize::try_from(p.y)) {
                if x < self.width && y < self.height {
                    self.set(x, y, [c.r(), c.g(), c.b()]);
                }
            }
        }
        Ok(())
    }
}

/// A mask reduced to what the overlay draws, computed once per AI result (on
/// the worker thread) so that drawing it on each frame is cheap.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MaskShape {
    /// Frame columns the mask belongs to.
    pub width: usize,
    /// Frame rows the mask belongs to.
    pub height: usize,
    /// Foreground runs `(row, first column, last column)`.
    pub runs: Vec<(u32, u32, u32)>,
    /// Boundary pixels `(column, row)`: foreground with a 4-neighbour outside
    /// the mask or on the frame border.
    pub contour: Vec<(u32, u32)>,
    /// Foreground pixels.
    pub area: usize,
    /// Bounding box `x0, y0, x1, y1`, inclusive; `None` when empty.
    pub bbox: Option<[usize; 4]>,
}

impl MaskShape {
    /// Extracts runs, contour, area and box from a mask. The segmentation must
    /// already be validated (`mask.len() == width * height`); an inconsistent
    /// one yields an empty shape.
    pub fn of(seg: &Segmentation) -> Self {
        let (w, h) = (seg.width, seg.height);
        let mut s = Self {
            width: w,
            height: h,
            ..Self::default()
        };
        if w == 0
            || w.checked_mul(h) != Some(seg.mask.len())
            || w > u32::MAX as usize
            || h > u32::MAX as usize
        {
            return s;
        }
        let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
        for (y, row) in seg.mask.chunks_exact(w).enumerate() {
            // the rows above and below, `None` on the frame border (where every
            // mask pixel is a contour pixel)
            let neighbours = (y > 0 && y + 1 < h).then(|| {
                (
                    &seg.mask[(y - 1) * w..y * w],
                    &seg.mask[(y + 1) * w..(y + 2) * w],
                )
            });
            for (start, end) in mask_runs(row) {
                // a run's first and last pixels have a background (or border)
                // neighbour on the left or right; the pixels between are contour
                // where the row above or below is background
                s.contour.push((start as u32, y as u32));
                match neighbours {
                    Some((above, below)) => {
                        // empty for runs of one pixel
                        let (mut x, stop) = (start + 1, end.max(start + 1));
                        while x < stop {
                            x += first_with_background(&above[x..stop], &below[x..stop]);
                            if x < stop {
                                s.contour.push((x as u32, y as u32));
                                x += 1;
                            }
                        }
                    }
                    None => s
                        .contour
                        .extend((start + 1..end).map(|x| (x as u32, y as u32))),
                }
                if end > start {
                    s.contour.push((end as u32, y as u32));
                }
                s.runs.push((y as u32, start as u32, end as u32));
                s.area += end + 1 - start;
                x0 = x0.min(start);
                x1 = x1.max(end);
                y0 = y0.min(y);
                y1 = y1.max(y);
            }
        }
        if s.area > 0 {
            s.bbox = Some([x0, y0, x1, y1]);
        }
        s
    }
}

/// Bytes examined at once when scanning a mask row: a block is tested with
/// branch-free folds (which vectorise) and only a block holding what is looked
/// for is scanned byte by byte.
const SCAN_BLOCK: usize = 32;

/// Index of the first non-zero (`nonzero`) or zero byte of `s`, or `s.len()`.
fn find_byte(s: &[u8], nonzero: bool) -> usize {
    let hit = |v: u8| (v != 0) == nonzero;
    let mut blocks = s.chunks_exact(SCAN_BLOCK);
    let mut base = 0;
    for block in &mut blocks {
        let any = if nonzero {
            block.iter().fold(0u8, |acc, &v| acc | v) != 0
        } else {
            block.iter().fold(false, |acc, &v| acc | (v == 0))
        };
        if any {
            return base + block.iter().position(|&v| hit(v)).unwrap_or(SCAN_BLOCK);
        }
        base += SCAN_BLOCK;
    }
    base + blocks
        .remainder()
        .iter()
        .position(|&v| hit(v))
        .unwrap_or(blocks.remainder().len())
}

/// The foreground runs of one mask row, `(first, last)` column (inclusive), in
/// order.
pub(crate) fn mask_runs(row: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut x = 0;
    std::iter::from_fn(move || {
        if x >= row.len() {
            return None;
        }
        let start = x + find_byte(&row[x..], true);
        if start >= row.len() {
            x = start;
            return None;
        }
        let end = start + find_byte(&row[start..], false) - 1;
        x = end + 1;
        Some((start, end))
    })
}

/// Index of the first column where `above` or `below` (same length) is zero, or
/// the length.
fn first_with_background(above: &[u8], below: &[u8]) -> usize {
    let n = above.len().min(below.len());
    let mut base = 0;
    for (a, b) in above[..n]
        .chunks_exact(SCAN_BLOCK)
        .zip(below[..n].chunks_exact(SCAN_BLOCK))
    {
        let any = a
            .iter()
            .zip(b)
            .fold(false, |acc, (&a, &b)| acc | (a == 0) | (b == 0));
        if any {
            break;
        }
        base += SCAN_BLOCK;
    }
    base + above[base..n]
        .iter()
        .zip(&below[base..n])
        .position(|(&a, &b)| a == 0 || b == 0)
        .unwrap_or(n - base)
}

/// Colours and opacity of the overlay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OverlayStyle {
    /// Mask fill and contour colour.
    pub mask: [u8; 3],
    /// Fill opacity in 1/256.
    pub fill_alpha: u16,
    /// Prompt box colour.
    pub prompt_box: [u8; 3],
}

impl Default for OverlayStyle {
    fn default() -> Self {
        Self {
            mask: [0, 230, 90],
            fill_alpha: 90,
            prompt_box: [255, 210, 0],
        }
    }
}

/// What the status indicator says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Indicator {
    /// No fresh annotation: the newest one is older than the deadline.
    Late,
    /// The AI is hung, restarting or failing.
    Unavailable,
    /// No AI runs (disabled, or every backend failed).
    Off,
}

impl Indicator {
    fn text(self) -> &'static str {
        match self {
            Self::Late => "AI late",
            Self::Unavailable => "AI unavailable",
            Self::Off => "AI off",
        }
    }
    fn colour(self) -> Rgb888 {
        match self {
            Self::Late => Rgb888::new(230, 120, 0),
            Self::Unavailable => Rgb888::new(200, 0, 0),
            Self::Off => Rgb888::new(90, 90, 90),
        }
    }
}

fn font_for(width: usize) -> &'static MonoFont<'static> {
    if width >= 1000 {
        &ascii::FONT_10X20
    } else {
        &ascii::FONT_6X10
    }
}

fn text_box(canvas: &mut Canvas<'_>, text: &str, at: Point, fg: Rgb888, bg: Rgb888) {
    let style = MonoTextStyleBuilder::new()
        .font(font_for(canvas.width))
        .text_color(fg)
        .background_color(bg)
        .build();
    // Infallible target.
    let _ = Text::with_baseline(text, at, style, Baseline::Top).draw(canvas);
}

/// Draws a mask (fill + contour), the prompt box, a label and a latency
/// readout. Nothing is drawn if the shape's size is not the canvas's.
pub fn draw_annotation(
    canvas: &mut Canvas<'_>,
    shape: &MaskShape,
    prompt_box: Option<BoxPrompt>,
    label: &str,
    readout: &str,
    style: &OverlayStyle,
) {
    if (shape.width, shape.height) != (canvas.width, canvas.height) {
        return;
    }
    for &(y, x0, x1) in &shape.runs {
        canvas.blend_run(
            y as usize,
            x0 as usize,
            x1 as usize,
            style.mask,
            style.fill_alpha,
        );
    }
    draw_annotation_outline(canvas, shape, prompt_box, label, readout, style);
}

/// [`draw_annotation`] without the translucent fill, for a frame whose fill
/// was already blended in while it was converted ([`RowFill`]). The result is
/// the same bytes: the fill is drawn first and everything else over it.
pub fn draw_annotation_outline(
    canvas: &mut Canvas<'_>,
    shape: &MaskShape,
    prompt_box: Option<BoxPrompt>,
    label: &str,
    readout: &str,
    style: &OverlayStyle,
) {
    if (shape.width, shape.height) != (canvas.width, canvas.height) {
        return;
    }
    for &(x, y) in &shape.contour {
        canvas.set(x as usize, y as usize, style.mask);
    }
    if let Some(b) = prompt_box {
        let (x0, y0) = (b.x0.round() as i32, b.y0.round() as i32);
        let (x1, y1) = (b.x1.round() as i32, b.y1.round() as i32);
        let c = style.prompt_box;
        let _ = Rectangle::with_corners(Point::new(x0, y0), Point::new(x1, y1))
            .into_styled(PrimitiveStyle::with_stroke(
                Rgb888::new(c[0], c[1], c[2]),
                1,
            ))
            .draw(canvas);
    }
    if let Some([x0, y0, _, _]) = shape.bbox {
        let h = font_for(canvas.width).character_size.height as i32;
        let at = Point::new(x0 as i32, (y0 as i32 - h - 1).max(0));
        text_box(
            canvas,
            label,
            at,
            Rgb888::BLACK,
            Rgb888::new(style.mask[0], style.mask[1], style.mask[2]),
        );
    }
    draw_readout(canvas, readout);
}

/// Draws the small latency readout in the bottom-left corner.
pub fn draw_readout(canvas: &mut Canvas<'_>, readout: &str) {
    if readout.is_empty() {
        return;
    }
    let h = font_for(canvas.width).character_size.height as i32;
    let at = Point::new(2, canvas.height as i32 - h - 2);
    text_box(canvas, readout, at, Rgb888::WHITE, Rgb888::BLACK);
}

/// Prototype mode's explicit "not found" state: `no NAME found` in the
/// top-right corner (where the status indicators go) and the latency readout;
/// no mask, box or label.
pub fn draw_not_found(canvas: &mut Canvas<'_>, name: &str, readout: &str) {
    let text = format!("no {name} found");
    let font = font_for(canvas.width);
    let w = (font.character_size.width as usize * text.chars().count()) as i32;
    let at = Point::new((canvas.width as i32 - w - 2).max(0), 2);
    text_box(canvas, &text, at, Rgb888::WHITE, Rgb888::new(40, 60, 160));
    draw_readout(canvas, readout);
}

/// Draws a status indicator in the top-right corner.
pub fn draw_indicator(canvas: &mut Canvas<'_>, indicator: Indicator) {
    let text = indicator.text();
    let font = font_for(canvas.width);
    let w = (font.character_size.width as usize * text.len()) as i32;
    let at = Point::new((canvas.width as i32 - w - 2).max(0), 2);
    text_box(canvas, text, at, Rgb888::WHITE, indicator.colour());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disc(w: usize, h: usize) -> Segmentation {
        let mask = (0..w * h)
            .map(|i| {
                let (x, y) = ((i % w) as i64 - 30, (i / w) as i64 - 20);
                u8::from(x * x + y * y <= 100)
            })
            .collect();
        Segmentation {
            width: w,
            height: h,
            mask,
            iou_prediction: Some(0.9),
        }
    }

    /// `MaskShape::of` pixel by pixel: a pixel is on the contour when it is on
    /// the frame border or one of its 4 neighbours is background.
    fn shape_per_pixel(seg: &Segmentation) -> MaskShape {
        let (w, h) = (seg.width, seg.height);
        let mut s = MaskShape {
            width: w,
            height: h,
            ..MaskShape::default()
        };
        let on = |x: usize, y: usize| seg.mask[y * w + x] != 0;
        let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
        for y in 0..h {
            let mut run: Option<usize> = None;
            for x in 0..=w {
                if x < w && on(x, y) {
                    run.get_or_insert(x);
                    let edge = x == 0
                        || x + 1 == w
                        || y == 0
                        || y + 1 == h
                        || !on(x - 1, y)
                        || !on(x + 1, y)
                        || !on(x, y - 1)
                        || !on(x, y + 1);
                    if edge {
                        s.contour.push((x as u32, y as u32));
                    }
                } else if let Some(start) = run.take() {
                    s.runs.push((y as u32, start as u32, (x - 1) as u32));
                    s.area += x - start;
                    (x0, x1) = (x0.min(start), x1.max(x - 1));
                    (y0, y1) = (y0.min(y), y1.max(y));
                }
            }
        }
        s.bbox = (s.area > 0).then_some([x0, y0, x1, y1]);
        s
    }

    /// The fill blended row by row ([`RowFill`]) and then the outline give the
    /// bytes of `draw_annotation`, and flag the same pixels.
    #[test]
    fn fill_by_rows_then_outline_equals_draw_annotation() {
        let (w, h) = (64, 48);
        let seg = disc(w, h);
        let shape = MaskShape::of(&seg);
        let style = OverlayStyle::default();
        let prompt = Some(BoxPrompt {
            x0: 18.0,
            y0: 8.0,
            x1: 42.0,
            y1: 32.0,
        });
        let input: Vec<u8> = (0..w * h * 3).map(|i| (i * 13 % 251) as u8).collect();
        let mut want = input.clone();
        let mut want_touched = vec![false; w * h];
        let mut c = Canvas::new(w, h, &mut want, Some(&mut want_touched)).unwrap();
        draw_annotation(&mut c, &shape, prompt, "lesion 0.90", "AI 9 ms", &style);

        let mut got = input;
        let fill = RowFill {
            runs: &shape.runs,
            rgb: style.mask,
            alpha: style.fill_alpha,
        };
        assert!(fill.in_row_order());
        let mut cursor = 0;
        for (y, row) in got.chunks_exact_mut(w * 3).enumerate() {
            let runs = fill.runs_of_row(y, &mut cursor);
            fill.blend_row(row, w, runs);
        }
        assert_eq!(cursor, shape.runs.len(), "every run visited once");
        let mut got_touched = vec![false; w * h];
        let mut c = Canvas::new(w, h, &mut got, Some(&mut got_touched)).unwrap();
        c.mark_runs(&shape.runs);
        draw_annotation_outline(&mut c, &shape, prompt, "lesion 0.90", "AI 9 ms", &style);
        assert!(got == want);
        assert_eq!(got_touched, want_touched);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

        /// The block blend equals the per-pixel formula in u32, and flags
        /// exactly the run's pixels.
        #[test]
        fn blend_run_matches_per_pixel_formula(
            w in 1usize..200, x0 in 0usize..220, len in 0usize..220,
            rgb in proptest::array::uniform3(0u8..=255), alpha in 0u16..300, seed in 0u8..=255,
        ) {
            let h = 2;
            let input: Vec<u8> = (0..w * h * 3).map(|i| (i * 31 + usize::from(seed)) as u8).collect();
            let mut out = input.clone();
            let mut touched = vec![false; w * h];
            let mut c = Canvas::new(w, h, &mut out, Some(&mut touched)).unwrap();
            let x1 = x0 + len;
            c.blend_run(1, x0, x1, rgb, alpha);
            let a = u32::from(alpha.min(256));
            for y in 0..h {
                for x in 0..w {
                    let i = y * w + x;
                    let inside = y == 1 && x >= x0 && x <= x1;
                    proptest::prop_assert_eq!(touched[i], inside);
                    for k in 0..3 {
                        let want = if inside {
                            ((u32::from(input[3 * i + k]) * (256 - a) + u32::from(rgb[k]) * a + 128) >> 8) as u8
                        } else {
                            input[3 * i + k]
                        };
                        proptest::prop_assert_eq!(out[3 * i + k], want);
                    }
                }
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

        /// The run-wise extraction gives the same runs, contour (in the same
        /// order), area and box as the per-pixel definition, borders included.
        #[test]
        fn shape_matches_per_pixel_definition(
            w in 1usize..100, h in 1usize..30, density in 0u8..=255, seed in 0u64..10_000,
        ) {
            let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mask = (0..w * h)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    u8::from(((x >> 32) as u8) < density)
                })
                .collect();
            let seg = Segmentation { width: w, height: h, mask, iou_prediction: None };
            let fast = MaskShape::of(&seg);
            let slow = shape_per_pixel(&seg);
            proptest::prop_assert_eq!(&fast.runs, &slow.runs);
            proptest::prop_assert_eq!(&fast.contour, &slow.contour);
            proptest::prop_assert_eq!(fast.area, slow.area);
            proptest::prop_assert_eq!(fast.bbox, slow.bbox);
        }
    }

    #[test]
    fn shape_of_a_disc() {
        let s = MaskShape::of(&disc(64, 48));
        assert_eq!(s.bbox, Some([20, 10, 40, 30]));
        assert_eq!(
            s.area,
            s.runs
                .iter()
                .map(|r| (r.2 - r.1 + 1) as usize)
                .sum::<usize>()
        );
        assert!(s.contour.len() > 40 && s.contour.len() < 100);
        let bad = Segmentation {
            width: 4,
            height: 4,
            mask: vec![1; 3],
            iou_prediction: None,
        };
        assert_eq!(MaskShape::of(&bad).area, 0);
    }

    #[test]
    fn only_touched_pixels_change() {
        let (w, h) = (64, 48);
        let input: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
        let mut out = input.clone();
        let mut touched = vec![false; w * h];
        let mut c = Canvas::new(w, h, &mut out, Some(&mut touched)).unwrap();
        let shape = MaskShape::of(&disc(w, h));
        let b = BoxPrompt {
            x0: 15.0,
            y0: 5.0,
            x1: 45.0,
            y1: 35.0,
        };
        draw_annotation(
            &mut c,
            &shape,
            Some(b),
            "ROI 0.90",
            "AI 12 ms",
            &OverlayStyle::default(),
        );
        draw_indicator(&mut c, Indicator::Late);
        let mut changed = 0;
        for i in 0..w * h {
            if !touched[i] {
                assert_eq!(out[3 * i..3 * i + 3], input[3 * i..3 * i + 3], "pixel {i}");
            } else if out[3 * i..3 * i + 3] != input[3 * i..3 * i + 3] {
                changed += 1;
            }
        }
        assert!(changed > 300, "the overlay drew something ({changed})");
        // The contour is inside the disc, the fill blended.
        assert!(touched[20 * w + 30]);
        assert!(!touched[47 * w + 63]);
        // A shape of another size is not drawn at all.
        let mut out2 = input.clone();
        let mut c = Canvas::new(w, h, &mut out2, None).unwrap();
        draw_annotation(
            &mut c,
            &MaskShape::of(&disc(32, 48)),
            None,
            "x",
            "",
            &OverlayStyle::default(),
        );
        assert_eq!(out2, input);
        assert!(Canvas::new(w, h, &mut out2[..5], None).is_none());
    }
}
