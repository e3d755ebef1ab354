//! Display overlay: masks, mask contours, boxes and labels drawn with
//! [`embedded_graphics`] on any [`DrawTarget`] (feature `display`).
//!
//! The code is `no_std` and never allocates, so device firmware can draw a
//! [`MaskResult`] straight onto its RGB565 framebuffer, and the host runtime
//! can draw the same overlay on its own targets. Masks are read as
//! run-length-encoded rows ([`MaskRuns`], a borrowed view that
//! [`RleMask`] converts into, or any `&[u32]` of runs with the same layout),
//! so a mask is never expanded into a pixel buffer.
//!
//! What is drawn, in this order:
//! 1. the **fill** of the foreground pixels ([`FillMode`]): solid, a 50 %
//!    checkerboard stipple that leaves every other pixel untouched (looks
//!    translucent on any target), or, with [`draw_overlay_blended`] on
//!    targets that can be read back ([`GetPixel`]), an alpha blend;
//! 2. the **contour**: every foreground pixel with a 4-neighbour that is
//!    background or outside the mask (at mask resolution: with
//!    a [`Placement`] `scale` > 1 it is `scale` display pixels thick);
//! 3. the **box** outline, drawn inside the box;
//! 4. the **label** in a monospace font, above the box if there is room on
//!    the target, otherwise inside its top-left corner.
//!
//! Pixels that none of these cover are never written: not even with their
//! own colour (the tests check this with a recording target).
//!
//! ```
//! use edgeseg_bridge::overlay::{draw_overlay, Overlay, OverlayStyle, Placement};
//! use edgeseg_bridge::protocol::{PixelBox, RleMask};
//! use embedded_graphics::{mock_display::MockDisplay, pixelcolor::Rgb565, prelude::*};
//!
//! let pixels = [0, 1, 1, 0, 0, 1, 1, 0];
//! let mask = RleMask::encode(4, 2, &pixels).unwrap();
//! let mut display = MockDisplay::<Rgb565>::new();
//! display.set_allow_overdraw(true);
//! let overlay = Overlay {
//!     mask: Some((&mask).into()),
//!     bbox: Some(PixelBox { x0: 1, y0: 0, x1: 3, y1: 2 }),
//!     label: None,
//!     placement: Placement::default(),
//! };
//! draw_overlay(&mut display, &overlay, &OverlayStyle::<Rgb565>::default_rgb()).unwrap();
//! ```

use embedded_graphics::{
    image::GetPixel,
    mono_font::{ascii::FONT_6X10, MonoFont, MonoTextStyle, MonoTextStyleBuilder},
    pixelcolor::{
        Bgr555, Bgr565, Bgr666, Bgr888, BinaryColor, Gray2, Gray4, Gray8, GrayColor, Rgb555,
        Rgb565, Rgb666, Rgb888, RgbColor,
    },
    prelude::*,
    primitives::{PrimitiveStyleBuilder, Rectangle, StrokeAlignment},
    text::{Baseline, Text},
};

use crate::protocol::{MaskResult, PixelBox, RleError, RleMask};

/// How the foreground pixels of a mask are filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillMode {
    /// No fill: only the contour (if any) marks the mask.
    None,
    /// Every foreground pixel gets the fill colour.
    Solid,
    /// 50 % checkerboard in display coordinates: foreground pixels with an
    /// even `x + y` get the fill colour, the others are left untouched. It
    /// looks translucent on any target, including write-only framebuffers.
    Stipple,
    /// Alpha blend of the fill colour over the existing pixel (`alpha` 0 =
    /// invisible, 255 = solid). Only [`draw_overlay_blended`] can read the
    /// target; [`draw_overlay`] draws this mode as [`FillMode::Stipple`].
    Blend {
        /// Opacity of the fill colour, 0..=255.
        alpha: u8,
    },
}

/// Colours, fill mode and font of an overlay.
#[derive(Debug, Clone, Copy)]
pub struct OverlayStyle<C> {
    /// How the mask is filled.
    pub fill: FillMode,
    /// Fill colour.
    pub fill_color: C,
    /// Contour colour; `None` draws no contour.
    pub contour: Option<C>,
    /// Box outline colour; `None` draws no box.
    pub box_color: Option<C>,
    /// Box outline width in display pixels (drawn inside the box).
    pub box_stroke: u32,
    /// Label text colour.
    pub label_color: C,
    /// Label background; `None` draws the glyph pixels only.
    pub label_background: Option<C>,
    /// Label font.
    pub font: &'static MonoFont<'static>,
}

impl<C: RgbColor> OverlayStyle<C> {
    /// A default style for RGB targets: cyan stipple fill, yellow contour,
    /// green 1-pixel box, black 6×10 label on green.
    pub fn default_rgb() -> Self {
        OverlayStyle {
            fill: FillMode::Stipple,
            fill_color: C::CYAN,
            contour: Some(C::YELLOW),
            box_color: Some(C::GREEN),
            box_stroke: 1,
            label_color: C::BLACK,
            label_background: Some(C::GREEN),
            font: &FONT_6X10,
        }
    }
}

/// Where mask coordinates land on the target: mask pixel `(x, y)` covers the
/// `scale × scale` display square at `origin + (x·scale, y·scale)`. Boxes are
/// in mask coordinates too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Display position of mask pixel (0, 0).
    pub origin: Point,
    /// Integer up-scaling, at least 1 (0 is treated as 1).
    pub scale: u32,
}

impl Default for Placement {
    fn default() -> Self {
        Placement {
            origin: Point::zero(),
            scale: 1,
        }
    }
}

impl Placement {
    fn scale(&self) -> i32 {
        i32::try_from(self.scale.max(1)).unwrap_or(i32::MAX)
    }

    /// Display rectangle of mask row `y`, columns `x0..x1`.
    fn span(&self, y: u16, x0: u16, x1: u16) -> Rectangle {
        let s = self.scale();
        let top_left = Point::new(
            self.origin
                .x
                .saturating_add(i32::from(x0).saturating_mul(s)),
            self.origin.y.saturating_add(i32::from(y).saturating_mul(s)),
        );
        let s = s.unsigned_abs();
        Rectangle::new(top_left, Size::new(u32::from(x1 - x0).saturating_mul(s), s))
    }

    /// Display rectangle of a box in mask coordinates (empty for degenerate boxes).
    fn bbox(&self, b: &PixelBox) -> Rectangle {
        let s = self.scale();
        let top_left = Point::new(
            self.origin
                .x
                .saturating_add(i32::from(b.x0).saturating_mul(s)),
            self.origin
                .y
                .saturating_add(i32::from(b.y0).saturating_mul(s)),
        );
        let s = s.unsigned_abs();
        Rectangle::new(
            top_left,
            Size::new(
                u32::from(b.x1.saturating_sub(b.x0)).saturating_mul(s),
                u32::from(b.y1.saturating_sub(b.y0)).saturating_mul(s),
            ),
        )
    }
}

/// A borrowed run-length-encoded mask: row-major run lengths alternating
/// background, foreground, background, … starting with background, exactly
/// like [`RleMask`] but without its run-count limit (the runtime can build
/// one over a `Vec<u32>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaskRuns<'a> {
    /// Width in pixels.
    pub width: u16,
    /// Height in pixels.
    pub height: u16,
    /// Run lengths.
    pub runs: &'a [u32],
}

impl<'a> From<&'a RleMask> for MaskRuns<'a> {
    fn from(mask: &'a RleMask) -> Self {
        MaskRuns {
            width: mask.width,
            height: mask.height,
            runs: &mask.runs,
        }
    }
}

impl<'a> MaskRuns<'a> {
    /// Checks that the runs add up to exactly `width × height`.
    pub fn validate(&self) -> Result<(), RleError> {
        let total: u64 = self.runs.iter().map(|&r| u64::from(r)).sum();
        if total == u64::from(self.width) * u64::from(self.height) {
            Ok(())
        } else {
            Err(RleError::SizeMismatch)
        }
    }

    /// The foreground as maximal horizontal spans `(y, x0, x1)` (`x1`
    /// exclusive), in row-major order. Call [`MaskRuns::validate`] first: on
    /// invalid runs the spans stop at the last complete row.
    pub fn spans(&self) -> Spans<'a> {
        Spans {
            runs: self.runs,
            width: u64::from(self.width),
            limit: u64::from(self.width) * u64::from(self.height),
            idx: 0,
            pos: 0,
            cur: None,
        }
    }
}

/// Iterator over the foreground spans of a [`MaskRuns`]; see [`MaskRuns::spans`].
#[derive(Debug, Clone)]
pub struct Spans<'a> {
    runs: &'a [u32],
    width: u64,
    limit: u64,
    idx: usize,
    pos: u64,
    cur: Option<(u64, u64)>,
}

impl Iterator for Spans<'_> {
    /// `(y, x0, x1)`: row and columns `x0..x1`.
    type Item = (u16, u16, u16);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((s, e)) = self.cur {
                if s < e && self.width > 0 {
                    let y = s / self.width;
                    let row_start = y * self.width;
                    let piece_end = e.min(row_start + self.width);
                    self.cur = Some((piece_end, e));
                    // All values are < 2^16 because s < limit = width × height.
                    let y16 = u16::try_from(y).ok()?;
                    let x0 = u16::try_from(s - row_start).ok()?;
                    let x1 = u16::try_from(piece_end - row_start).ok()?;
                    return Some((y16, x0, x1));
                }
                self.cur = None;
            }
            let run = u64::from(*self.runs.get(self.idx)?);
            let start = self.pos;
            self.pos = self.pos.saturating_add(run);
            let foreground = self.idx % 2 == 1;
            self.idx += 1;
            if foreground && run > 0 {
                self.cur = Some((start.min(self.limit), self.pos.min(self.limit)));
            }
        }
    }
}

/// A cursor over the spans of one neighbouring row, advanced monotonically.
struct RowCursor<'a> {
    spans: core::iter::Peekable<Spans<'a>>,
}

impl RowCursor<'_> {
    /// The first not yet consumed span of row `y`, skipping earlier rows.
    fn peek_in_row(&mut self, y: u16) -> Option<(u16, u16)> {
        while let Some(&(row, x0, x1)) = self.spans.peek() {
            if row < y {
                self.spans.next();
            } else if row == y {
                return Some((x0, x1));
            } else {
                return None;
            }
        }
        None
    }

    /// Calls `emit` for the parts of `a..b` that no span of row `y` covers.
    fn uncovered<E>(
        &mut self,
        y: u16,
        a: u16,
        b: u16,
        mut emit: impl FnMut(u16, u16) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut x = a;
        while x < b {
            match self.peek_in_row(y) {
                Some((_, e)) if e <= x => {
                    self.spans.next();
                }
                Some((s, e)) if s <= x => x = e.min(b),
                Some((s, _)) => {
                    let end = s.min(b);
                    emit(x, end)?;
                    x = end;
                }
                None => {
                    emit(x, b)?;
                    x = b;
                }
            }
        }
        Ok(())
    }
}

/// One overlay: an optional mask, box and label.
#[derive(Debug, Clone, Copy)]
pub struct Overlay<'a> {
    /// The mask, in mask coordinates.
    pub mask: Option<MaskRuns<'a>>,
    /// The box, in mask coordinates.
    pub bbox: Option<PixelBox>,
    /// Label text (e.g. structure name and score, formatted by the caller
    /// into a `heapless::String`).
    pub label: Option<&'a str>,
    /// Where mask coordinates land on the target.
    pub placement: Placement,
}

impl<'a> Overlay<'a> {
    /// The overlay of a [`MaskResult`] received over the protocol: its mask,
    /// its box and the given label.
    pub fn from_result(
        result: &'a MaskResult,
        label: Option<&'a str>,
        placement: Placement,
    ) -> Self {
        Overlay {
            mask: Some((&result.mask).into()),
            bbox: Some(result.bbox),
            label,
            placement,
        }
    }
}

/// Errors of the overlay drawing functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlayError<E> {
    /// The mask runs do not add up to width × height; nothing was drawn.
    Mask(RleError),
    /// The draw target failed.
    Draw(E),
}

impl<E: core::fmt::Debug> core::fmt::Display for OverlayError<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            OverlayError::Mask(e) => write!(f, "invalid overlay mask: {e}"),
            OverlayError::Draw(e) => write!(f, "draw target error: {e:?}"),
        }
    }
}

/// Colours that can be alpha-blended, for [`draw_overlay_blended`].
pub trait Blend: PixelColor {
    /// `over` blended onto `self` with opacity `alpha` (0 = `self`, 255 = `over`).
    #[must_use]
    fn blend(self, over: Self, alpha: u8) -> Self;
}

/// Rounded `(a·(255 − alpha) + b·alpha) / 255` for one channel.
fn mix(a: u8, b: u8, alpha: u8) -> u8 {
    let alpha = u16::from(alpha);
    let v = (u16::from(a) * (255 - alpha) + u16::from(b) * alpha + 127) / 255;
    // v ≤ max(a, b) ≤ 255.
    u8::try_from(v).unwrap_or(u8::MAX)
}

macro_rules! impl_blend_rgb {
    ($($t:ty),*) => {$(
        impl Blend for $t {
            fn blend(self, over: Self, alpha: u8) -> Self {
                <$t>::new(
                    mix(self.r(), over.r(), alpha),
                    mix(self.g(), over.g(), alpha),
                    mix(self.b(), over.b(), alpha),
                )
            }
        }
    )*};
}
impl_blend_rgb!(Rgb555, Bgr555, Rgb565, Bgr565, Rgb666, Bgr666, Rgb888, Bgr888);

macro_rules! impl_blend_gray {
    ($($t:ty),*) => {$(
        impl Blend for $t {
            fn blend(self, over: Self, alpha: u8) -> Self {
                <$t>::new(mix(self.luma(), over.luma(), alpha))
            }
        }
    )*};
}
impl_blend_gray!(Gray2, Gray4, Gray8);

impl Blend for BinaryColor {
    fn blend(self, over: Self, alpha: u8) -> Self {
        if alpha >= 128 {
            over
        } else {
            self
        }
    }
}

/// Draws `overlay` on any [`DrawTarget`]. [`FillMode::Blend`] is drawn as
/// [`FillMode::Stipple`] because the target cannot be read; use
/// [`draw_overlay_blended`] for targets that implement [`GetPixel`].
pub fn draw_overlay<D>(
    target: &mut D,
    overlay: &Overlay<'_>,
    style: &OverlayStyle<D::Color>,
) -> Result<(), OverlayError<D::Error>>
where
    D: DrawTarget,
{
    let fill = style.fill;
    let color = style.fill_color;
    draw_with(target, overlay, style, |target, rect| match fill {
        FillMode::None => Ok(()),
        FillMode::Solid => target.fill_solid(&rect, color),
        FillMode::Stipple | FillMode::Blend { .. } => stipple(target, rect, color),
    })
}

/// Like [`draw_overlay`], but [`FillMode::Blend`] alpha-blends the fill
/// colour over the pixels read back from the target.
pub fn draw_overlay_blended<D>(
    target: &mut D,
    overlay: &Overlay<'_>,
    style: &OverlayStyle<<D as DrawTarget>::Color>,
) -> Result<(), OverlayError<D::Error>>
where
    D: DrawTarget + GetPixel<Color = <D as DrawTarget>::Color>,
    <D as DrawTarget>::Color: Blend,
{
    let fill = style.fill;
    let color = style.fill_color;
    draw_with(target, overlay, style, |target, rect| match fill {
        FillMode::None => Ok(()),
        FillMode::Solid => target.fill_solid(&rect, color),
        FillMode::Stipple => stipple(target, rect, color),
        FillMode::Blend { alpha } => blend(target, rect, color, alpha),
    })
}

/// Checkerboard fill of `rect` (clipped to the target).
fn stipple<D: DrawTarget>(
    target: &mut D,
    rect: Rectangle,
    color: D::Color,
) -> Result<(), D::Error> {
    let rect = rect.intersection(&target.bounding_box());
    target.draw_iter(
        rect.points()
            .filter(|p| (p.x + p.y) & 1 == 0)
            .map(|p| Pixel(p, color)),
    )
}

/// Alpha-blended fill of `rect` (clipped to the target), in batches of 32
/// pixels so that no allocation is needed.
fn blend<D>(
    target: &mut D,
    rect: Rectangle,
    color: <D as DrawTarget>::Color,
    alpha: u8,
) -> Result<(), D::Error>
where
    D: DrawTarget + GetPixel<Color = <D as DrawTarget>::Color>,
    <D as DrawTarget>::Color: Blend,
{
    const BATCH: usize = 32;
    let rect = rect.intersection(&target.bounding_box());
    let mut points = rect.points();
    loop {
        let mut batch: heapless::Vec<Pixel<<D as DrawTarget>::Color>, BATCH> = heapless::Vec::new();
        for p in points.by_ref() {
            if let Some(old) = target.pixel(p) {
                // Cannot fail: the loop stops at BATCH.
                let _ = batch.push(Pixel(p, old.blend(color, alpha)));
            }
            if batch.is_full() {
                break;
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        target.draw_iter(batch)?;
    }
}

/// The shared drawing pass; `fill` draws one display rectangle of foreground.
fn draw_with<D, F>(
    target: &mut D,
    overlay: &Overlay<'_>,
    style: &OverlayStyle<D::Color>,
    mut fill: F,
) -> Result<(), OverlayError<D::Error>>
where
    D: DrawTarget,
    F: FnMut(&mut D, Rectangle) -> Result<(), D::Error>,
{
    let placement = overlay.placement;
    if let Some(mask) = overlay.mask {
        mask.validate().map_err(OverlayError::Mask)?;
        let last_row = mask.height.saturating_sub(1);
        let mut above = RowCursor {
            spans: mask.spans().peekable(),
        };
        let mut below = RowCursor {
            spans: mask.spans().peekable(),
        };
        for (y, x0, x1) in mask.spans() {
            fill(target, placement.span(y, x0, x1)).map_err(OverlayError::Draw)?;
            let Some(contour) = style.contour else {
                continue;
            };
            let mut edge = |a: u16, b: u16| target.fill_solid(&placement.span(y, a, b), contour);
            if y == 0 || y == last_row || x1 - x0 <= 2 {
                edge(x0, x1).map_err(OverlayError::Draw)?;
                continue;
            }
            // Left and right ends: their horizontal neighbour is background.
            edge(x0, x0 + 1).map_err(OverlayError::Draw)?;
            edge(x1 - 1, x1).map_err(OverlayError::Draw)?;
            // Inner pixels whose upper or lower neighbour is background.
            above
                .uncovered(y - 1, x0 + 1, x1 - 1, &mut edge)
                .map_err(OverlayError::Draw)?;
            below
                .uncovered(y + 1, x0 + 1, x1 - 1, &mut edge)
                .map_err(OverlayError::Draw)?;
        }
    }

    let box_rect = overlay.bbox.map(|b| placement.bbox(&b));
    if let (Some(rect), Some(color)) = (box_rect, style.box_color) {
        if style.box_stroke > 0 && !rect.is_zero_sized() {
            let line = PrimitiveStyleBuilder::new()
                .stroke_color(color)
                .stroke_width(style.box_stroke)
                .stroke_alignment(StrokeAlignment::Inside)
                .build();
            rect.into_styled(line)
                .draw(target)
                .map_err(OverlayError::Draw)?;
        }
    }

    if let Some(text) = overlay.label.filter(|t| !t.is_empty()) {
        label_text(
            text,
            box_rect,
            &placement,
            style,
            target.bounding_box().top_left.y,
        )
        .draw(target)
        .map_err(OverlayError::Draw)?;
    }
    Ok(())
}

/// The label as embedded-graphics text: above the box (or the placement
/// origin) if it fits below the target's top edge `target_top`, otherwise
/// inside the box's top-left corner.
fn label_text<'t, C: PixelColor>(
    text: &'t str,
    box_rect: Option<Rectangle>,
    placement: &Placement,
    style: &OverlayStyle<C>,
    target_top: i32,
) -> Text<'t, MonoTextStyle<'static, C>> {
    let mut text_style = MonoTextStyleBuilder::new()
        .font(style.font)
        .text_color(style.label_color);
    if let Some(bg) = style.label_background {
        text_style = text_style.background_color(bg);
    }
    let anchor = box_rect.map_or(placement.origin, |r| r.top_left);
    let height = i32::try_from(style.font.character_size.height).unwrap_or(i32::MAX);
    let above = anchor.y.saturating_sub(height);
    let position = if above >= target_top {
        Point::new(anchor.x, above)
    } else {
        anchor
    };
    Text::with_baseline(text, position, text_style.build(), Baseline::Top)
}

/// Display rectangle that [`draw_overlay`] may touch for `overlay` on
/// `target` with `style`: the union of the mask's, the box's and the label's
/// rectangles (before clipping to the target). Useful for partial display
/// refreshes.
pub fn overlay_bounds<D: Dimensions, C: PixelColor>(
    target: &D,
    overlay: &Overlay<'_>,
    style: &OverlayStyle<C>,
) -> Rectangle {
    let p = overlay.placement;
    let mut bounds: Option<Rectangle> = None;
    let mut add = |r: Rectangle| {
        if r.is_zero_sized() {
            return;
        }
        bounds = Some(match bounds {
            None => r,
            Some(b) => union(&b, &r),
        });
    };
    if let Some(mask) = overlay.mask {
        add(p.bbox(&PixelBox {
            x0: 0,
            y0: 0,
            x1: mask.width,
            y1: mask.height,
        }));
    }
    let box_rect = overlay.bbox.map(|b| p.bbox(&b));
    if let Some(r) = box_rect {
        add(r);
    }
    if let Some(text) = overlay.label.filter(|t| !t.is_empty()) {
        add(label_text(text, box_rect, &p, style, target.bounding_box().top_left.y).bounding_box());
    }
    bounds.unwrap_or(Rectangle::zero())
}

fn union(a: &Rectangle, b: &Rectangle) -> Rectangle {
    let (Some(a_br), Some(b_br)) = (a.bottom_right(), b.bottom_right()) else {
        return if a.is_zero_sized() { *b } else { *a };
    };
    Rectangle::with_corners(
        Point::new(
            a.top_left.x.min(b.top_left.x),
            a.top_left.y.min(b.top_left.y),
        ),
        Point::new(a_br.x.max(b_br.x), a_br.y.max(b_br.y)),
    )
}
