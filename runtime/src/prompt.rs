//! Prompts in original image coordinates (pixel indices, before any resize).

use serde::{Deserialize, Serialize};

/// An axis-aligned box in pixel indices of the original frame; `x1`/`y1` are inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BoxPrompt {
    /// Left column (inclusive).
    pub x0: f32,
    /// Top row (inclusive).
    pub y0: f32,
    /// Right column (inclusive).
    pub x1: f32,
    /// Bottom row (inclusive).
    pub y1: f32,
}

impl BoxPrompt {
    /// Width in pixels counting both inclusive ends.
    pub fn width(&self) -> f32 {
        self.x1 - self.x0 + 1.0
    }
    /// Height in pixels counting both inclusive ends.
    pub fn height(&self) -> f32 {
        self.y1 - self.y0 + 1.0
    }
}

/// Whether a point marks foreground or background.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PointLabel {
    /// The point lies on the structure to segment.
    Foreground,
    /// The point lies outside the structure.
    Background,
}

/// A clicked point in original image coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PointPrompt {
    /// Column.
    pub x: f32,
    /// Row.
    pub y: f32,
    /// Foreground or background.
    pub label: PointLabel,
}

/// What a promptable model is asked to segment.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Prompt {
    /// At most one box (SAM-style decoders take one box per query).
    pub boxes: Option<BoxPrompt>,
    /// Any number of points.
    pub points: Vec<PointPrompt>,
}

impl Prompt {
    /// A prompt holding one box.
    pub fn from_box(b: BoxPrompt) -> Self {
        Self {
            boxes: Some(b),
            points: Vec::new(),
        }
    }
}
