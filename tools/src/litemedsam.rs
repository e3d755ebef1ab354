//! The LiteMedSAM teacher (candle, `edgeseg-models`) as an evaluation [`Segmenter`]: the image
//! is preprocessed and encoded once per case, then decoded once per prompt box.

use std::path::Path;

use edgeseg_models::litemedsam::{LiteMedSam, Prompt};

use crate::dataset::CaseImage;
use crate::grid::{BinaryMask, GridBox};
use crate::segmenter::{SegmentError, Segmenter};

/// LiteMedSAM prompted with boxes (single-mask output, as the reference pipeline).
pub struct LiteMedSamSegmenter {
    model: LiteMedSam,
}

impl LiteMedSamSegmenter {
    /// Loads the weights (`.pth` or `.safetensors`).
    pub fn load(weights: &Path) -> Result<Self, SegmentError> {
        let model = LiteMedSam::load(weights)
            .map_err(|e| SegmentError::Model(format!("loading {}: {e}", weights.display())))?;
        Ok(Self { model })
    }

    /// The loaded model.
    pub fn model(&self) -> &LiteMedSam {
        &self.model
    }
}

fn merr(e: impl std::fmt::Display) -> SegmentError {
    SegmentError::Model(e.to_string())
}

impl Segmenter for LiteMedSamSegmenter {
    fn name(&self) -> &str {
        "litemedsam"
    }

    fn segment(
        &mut self,
        image: &CaseImage,
        prompts: &[GridBox],
    ) -> Result<Vec<BinaryMask>, SegmentError> {
        let CaseImage::TwoD(im) = image else {
            return Err(SegmentError::Unsupported {
                segmenter: "litemedsam".into(),
                what: "3D volumes (it is a 2D model)".into(),
            });
        };
        let shape = image.shape();
        let rgb = im.to_rgb();
        let prepared = self
            .model
            .preprocess(&rgb, im.height, im.width)
            .map_err(merr)?;
        let embedding = self.model.encode(&prepared.input).map_err(merr)?;
        prompts
            .iter()
            .map(|b| {
                let [x0, y0, x1, y1] = b.xyxy().ok_or(SegmentError::PromptOutside(*b))?;
                let prompt = Prompt::from_original(
                    Some([x0 as f64, y0 as f64, x1 as f64, y1 as f64]),
                    &[],
                    im.height,
                    im.width,
                );
                let decoded = self
                    .model
                    .decode(&embedding, &prompt, false)
                    .map_err(merr)?;
                let mask = self
                    .model
                    .postprocess(&decoded, 0, &prepared.prep)
                    .map_err(merr)?;
                if mask.len() != shape.len() {
                    return Err(SegmentError::Model(format!(
                        "model returned {} mask values for a {} image",
                        mask.len(),
                        shape
                    )));
                }
                Ok(BinaryMask {
                    shape,
                    data: mask.into_iter().map(|v| v != 0).collect(),
                })
            })
            .collect()
    }
}
