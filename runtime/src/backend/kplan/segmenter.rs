//! A [`PromptableSegmenter`] that runs a [`ModelPlan`] on an [`Executor`]:
//! the same pre/post-processing and prompt encoding as the tract backend
//! (`backend::cpu`), the model itself as kernel programs.

use std::collections::BTreeMap;

use edgeseg_kernels::prepost::{self, Preprocessed};

use super::{Executor, ModelPlan, PlanError, Program};
use crate::backend::cpu::{prompt_points, MAX_POINTS};
use crate::backend::{BackendError, Embedding, PromptableSegmenter, RgbFrame, Segmentation};
use crate::bundle::{Bundle, Layout, Normalization};
use crate::prompt::Prompt;

fn inference(e: PlanError) -> BackendError {
    match e {
        PlanError::Unsupported(m) => BackendError::Unavailable(m),
        e => BackendError::Inference(e.to_string()),
    }
}

struct FrameState {
    prep: Preprocessed,
    embedding: Vec<f32>,
    width: usize,
    height: usize,
}

/// A bundle run as kernel programs on executor `E`.
pub struct PlanSegmenter<E: Executor> {
    name: String,
    plan: ModelPlan,
    exec: E,
    decoders: BTreeMap<usize, Program>,
    frame: Option<FrameState>,
    embedding_id: Option<crate::fewshot::EmbeddingId>,
}

impl<E: Executor> std::fmt::Debug for PlanSegmenter<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlanSegmenter")
            .field("name", &self.name)
            .field("encoder_steps", &self.plan.encoder.steps.len())
            .field("decoder_plans", &self.decoders.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The square input side of `bundle`, after checking that it declares the
/// input the reference preprocessing makes (3×256×256 NCHW, min–max).
pub fn input_size(bundle: &Bundle) -> Result<usize, PlanError> {
    let m = bundle.manifest();
    let i = &m.input;
    let s = prepost::INPUT_SIZE;
    if i.channels != 3
        || i.layout != Layout::Nchw
        || i.normalization != Normalization::MinMax
        || i.height != i.width
        || i.height as usize != s
    {
        return Err(PlanError::Unsupported(format!(
            "bundle {} declares input {}x{}x{}; the plan implements 3x{s}x{s} NCHW min-max",
            m.model.name, i.channels, i.height, i.width
        )));
    }
    Ok(s)
}

impl<E: Executor> PlanSegmenter<E> {
    /// Wraps `plan` (built from `bundle`) and its executor.
    pub fn new(bundle: &Bundle, plan: ModelPlan, exec: E) -> Result<Self, BackendError> {
        input_size(bundle).map_err(inference)?;
        let [c, h, w] = plan.embedding;
        let mut me = Self {
            name: format!("kernel-plan/{}", exec.name()),
            plan,
            exec,
            decoders: BTreeMap::new(),
            frame: None,
            embedding_id: crate::fewshot::EmbeddingId::of_bundle(bundle, Some([c, h, w])),
        };
        me.decoder_for(2).map_err(inference)?;
        Ok(me)
    }

    /// The plan.
    pub fn plan(&self) -> &ModelPlan {
        &self.plan
    }

    /// The executor (e.g. to turn on a profile).
    pub fn executor_mut(&mut self) -> &mut E {
        &mut self.exec
    }

    fn decoder_for(&mut self, n: usize) -> Result<&Program, PlanError> {
        if !self.decoders.contains_key(&n) {
            let p = self.plan.decoder(n)?;
            self.decoders.insert(n, p);
        }
        self.decoders
            .get(&n)
            .ok_or_else(|| PlanError::Input("decoder program vanished".into()))
    }

    /// Encodes a pre-processed frame and makes it the current one.
    fn set_preprocessed(&mut self, prep: prepost::Preprocessed) -> Result<(), BackendError> {
        let embedding = self.encode_preprocessed(&prep.input)?;
        self.frame = Some(FrameState {
            width: prep.orig_w,
            height: prep.orig_h,
            prep,
            embedding,
        });
        Ok(())
    }

    /// Runs the encoder program on a preprocessed `3×S×S` input.
    pub fn encode_preprocessed(&mut self, input: &[f32]) -> Result<Vec<f32>, BackendError> {
        let mut out = self
            .exec
            .run(&self.plan.encoder, &[input])
            .map_err(inference)?;
        let emb = out
            .pop()
            .ok_or_else(|| BackendError::Inference("encoder gave no output".into()))?;
        if emb.iter().any(|v| !v.is_finite()) {
            return Err(BackendError::NonFinite {
                output: "image_embeddings".into(),
            });
        }
        Ok(emb)
    }

    /// Runs the decoder program on the current frame's embedding with SAM
    /// points and labels (model space): all low-res logits and IoU predictions.
    pub fn decode_points(
        &mut self,
        coords: &[f32],
        labels: &[f32],
    ) -> Result<(Vec<f32>, Vec<f32>), BackendError> {
        let n = labels.len();
        if n == 0 || n > MAX_POINTS || coords.len() != 2 * n {
            return Err(BackendError::InvalidPrompt(format!(
                "{n} points with {} coordinates (need 1..={MAX_POINTS} points, 2 coordinates each)",
                coords.len()
            )));
        }
        self.decoder_for(n).map_err(inference)?;
        let f = self.frame.as_ref().ok_or(BackendError::NoFrame)?;
        let prog = &self.decoders[&n];
        let out = self
            .exec
            .run(prog, &[&f.embedding, coords, labels])
            .map_err(inference)?;
        let [logits, iou] = <[Vec<f32>; 2]>::try_from(out)
            .map_err(|_| BackendError::Inference("decoder program has 2 outputs".into()))?;
        for (name, v) in [("low_res_logits", &logits), ("iou_predictions", &iou)] {
            if v.iter().any(|x| !x.is_finite()) {
                return Err(BackendError::NonFinite {
                    output: name.into(),
                });
            }
        }
        Ok((logits, iou))
    }
}

impl<E: Executor> PromptableSegmenter for PlanSegmenter<E> {
    fn name(&self) -> &str {
        &self.name
    }

    fn set_frame(&mut self, frame: RgbFrame<'_>) -> Result<(), BackendError> {
        let frame = RgbFrame::new(frame.width, frame.height, frame.data)?;
        self.frame = None;
        let prep = prepost::preprocess_rgb(frame.data, frame.height, frame.width)
            .map_err(|e| BackendError::InvalidFrame(e.to_string()))?;
        self.set_preprocessed(prep)
    }

    fn set_frame_rows(&mut self, rows: &mut dyn prepost::RgbRows) -> Result<(), BackendError> {
        self.frame = None;
        let prep = prepost::preprocess_rows(rows)
            .map_err(|e| BackendError::InvalidFrame(e.to_string()))?;
        self.set_preprocessed(prep)
    }

    fn segment(&mut self, prompt: &Prompt) -> Result<Segmentation, BackendError> {
        let (h, w) = {
            let f = self.frame.as_ref().ok_or(BackendError::NoFrame)?;
            (f.height, f.width)
        };
        let (coords, labels) = prompt_points(prompt, h, w)?;
        let (logits, iou) = self.decode_points(&coords, &labels)?;
        let s = self.plan.input_size;
        let plane = self.plan.low_res * self.plan.low_res;
        if self.plan.low_res != s || logits.len() < plane {
            return Err(BackendError::BadShape {
                output: "low_res_logits".into(),
                got: vec![self.plan.masks, self.plan.low_res, self.plan.low_res],
                expected: format!("[k, {s}, {s}]"),
            });
        }
        let f = self.frame.as_ref().ok_or(BackendError::NoFrame)?;
        let mask = prepost::postprocess_mask(&logits[..plane], &f.prep)
            .map_err(|e| BackendError::Inference(format!("postprocessing: {e}")))?;
        Ok(Segmentation {
            width: w,
            height: h,
            mask,
            iou_prediction: iou.first().copied(),
        })
    }

    fn embedding(&self) -> Option<Embedding<'_>> {
        let f = self.frame.as_ref()?;
        let [c, eh, ew] = self.plan.embedding;
        let s = self.plan.input_size;
        Some(Embedding {
            channels: c,
            height: eh,
            width: ew,
            valid_height: (f.prep.new_h * eh).div_ceil(s).min(eh),
            valid_width: (f.prep.new_w * ew).div_ceil(s).min(ew),
            frame_height: f.height,
            frame_width: f.width,
            data: &f.embedding,
        })
    }

    fn embedding_id(&self) -> Option<crate::fewshot::EmbeddingId> {
        self.embedding_id.clone()
    }
}
