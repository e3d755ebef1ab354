//! A model bundle on the runtime's CPU backend (tract) as an evaluation [`Segmenter`]: the
//! image is encoded once per case, then decoded once per prompt box. This is the path the
//! device runs, so `eval --bundle` measures what ships (teacher or distilled student).

use std::path::Path;

use edgeseg_runtime::backend::{self, BackendOptions, PromptableSegmenter, RgbFrame};
use edgeseg_runtime::prompt::{BoxPrompt, Prompt};

use crate::dataset::CaseImage;
use crate::grid::{BinaryMask, GridBox};
use crate::segmenter::{SegmentError, Segmenter};

/// A bundle prompted with boxes (single-mask output).
pub struct BundleSegmenter {
    name: String,
    model: Box<dyn PromptableSegmenter>,
}

impl std::fmt::Debug for BundleSegmenter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleSegmenter")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl BundleSegmenter {
    /// Opens and verifies the bundle at `path`; `name` is what reports call it.
    pub fn open(path: &Path, name: String, options: &BackendOptions) -> Result<Self, SegmentError> {
        let model = backend::open_bundle(path, options)
            .map_err(|e| SegmentError::Model(format!("opening {}: {e}", path.display())))?;
        Ok(Self { name, model })
    }
}

fn merr(e: impl std::fmt::Display) -> SegmentError {
    SegmentError::Model(e.to_string())
}

impl Segmenter for BundleSegmenter {
    fn name(&self) -> &str {
        &self.name
    }

    fn segment(
        &mut self,
        image: &CaseImage,
        prompts: &[GridBox],
    ) -> Result<Vec<BinaryMask>, SegmentError> {
        let CaseImage::TwoD(im) = image else {
            return Err(SegmentError::Unsupported {
                segmenter: self.name.clone(),
                what: "3D volumes (bundles hold 2D models)".into(),
            });
        };
        let shape = image.shape();
        let rgb = im.to_rgb();
        let frame = RgbFrame::new(im.width, im.height, &rgb).map_err(merr)?;
        self.model.set_frame(frame).map_err(merr)?;
        prompts
            .iter()
            .map(|b| {
                let [x0, y0, x1, y1] = b.xyxy().ok_or(SegmentError::PromptOutside(*b))?;
                let prompt = Prompt::from_box(BoxPrompt {
                    x0: x0 as f32,
                    y0: y0 as f32,
                    x1: x1 as f32,
                    y1: y1 as f32,
                });
                let seg = self.model.segment(&prompt).map_err(merr)?;
                if seg.mask.len() != shape.len() {
                    return Err(SegmentError::Model(format!(
                        "model returned {} mask values for a {} image",
                        seg.mask.len(),
                        shape
                    )));
                }
                Ok(BinaryMask {
                    shape,
                    data: seg.mask.into_iter().map(|v| v != 0).collect(),
                })
            })
            .collect()
    }
}
