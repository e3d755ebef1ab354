//! The CPU backend: a bundle's encoder and decoder graphs on tract.
//!
//! Plans are built once: the encoder plan when the bundle is opened, decoder
//! plans per number of prompt points (the decoder graph's only dynamic
//! dimension), the box-only plan at open and others on first use. Each plan
//! keeps one tract state, so buffers are reused frame after frame. Work runs on
//! a private tract thread pool of the configured size (tract's
//! `multithread-mm`), never on a global one.
//!
//! Pre- and post-processing are the reference functions of
//! `edgeseg_kernels::prepost` (resize longest side, min–max normalize, pad;
//! bilinear upsample and threshold), so this backend gives the same masks as
//! the candle implementation in `edgeseg-models`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use edgeseg_kernels::prepost::{self, Preprocessed};
use tract_linalg::multithread::{multithread_tract_scope, Executor};
use tract_onnx::prelude::*;

use super::tract_ops::Fused;
use super::{BackendError, BackendOptions, Embedding, PromptableSegmenter, RgbFrame, Segmentation};
use crate::bundle::{Bundle, Layout, Normalization};
use crate::onnx_weights;
use crate::prompt::{PointLabel, Prompt};

/// Graph section holding the image encoder.
pub const ENCODER_GRAPH: &str = "encoder.onnx";
/// Graph section holding the prompt encoder + mask decoder.
pub const DECODER_GRAPH: &str = "decoder.onnx";
/// Most threads accepted for the CPU pool.
pub const MAX_THREADS: usize = 256;
/// Most prompt points (box corners and padding included) per decode.
pub const MAX_POINTS: usize = 64;

/// SAM's point labels (see `edgeseg_models::export::litemedsam::labels`).
const LABEL_PADDING: f32 = -1.0;
const LABEL_BACKGROUND: f32 = 0.0;
const LABEL_FOREGROUND: f32 = 1.0;
const LABEL_BOX_TOP_LEFT: f32 = 2.0;
const LABEL_BOX_BOTTOM_RIGHT: f32 = 3.0;

/// The model input side this backend's preprocessing produces.
pub fn model_input_size() -> usize {
    prepost::INPUT_SIZE
}

type Plan = Arc<TypedRunnableModel>;
type PlanState = TypedSimpleState;

fn unavailable(what: impl std::fmt::Display) -> BackendError {
    BackendError::Unavailable(what.to_string())
}

fn inference(e: impl std::fmt::Display) -> BackendError {
    BackendError::Inference(format!("{e:#}"))
}

/// Time spent opening a bundle, by step (for `edgeseg bench`).
#[derive(Debug, Clone, Default)]
pub struct LoadTimings {
    /// Encoder graph decode + weight attach + tract parse.
    pub encoder_parse_ms: f64,
    /// Encoder plan optimization.
    pub encoder_optimize_ms: f64,
    /// Decoder graph decode + parse.
    pub decoder_parse_ms: f64,
    /// Box-prompt decoder plan optimization.
    pub decoder_optimize_ms: f64,
}

struct FrameState {
    prep: Preprocessed,
    embedding: TValue,
    embedding_f32: Vec<f32>,
    width: usize,
    height: usize,
}

/// A promptable segmenter running a bundle on tract.
pub struct TractSegmenter {
    name: String,
    executor: Executor,
    threads: usize,
    input_size: usize,
    embedding_shape: [usize; 4],
    encoder: PlanState,
    decoder_model: InferenceModel,
    decoders: BTreeMap<usize, PlanState>,
    frame: Option<FrameState>,
    timings: LoadTimings,
    embedding_id: Option<crate::fewshot::EmbeddingId>,
    fused: [Fused; 2],
}

impl std::fmt::Debug for TractSegmenter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TractSegmenter")
            .field("name", &self.name)
            .field("threads", &self.threads)
            .field("input_size", &self.input_size)
            .field("decoder_plans", &self.decoders.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn f32_vec(t: &Tensor) -> Result<Vec<f32>, BackendError> {
    t.try_as_plain_ram()
        .and_then(|v| v.as_slice::<f32>().map(<[f32]>::to_vec))
        .map_err(inference)
}

pub(crate) fn parse_graph(bundle: &Bundle, graph: &str) -> Result<InferenceModel, BackendError> {
    let proto = onnx_weights::load_graph(bundle, graph).map_err(unavailable)?;
    tract_onnx::onnx()
        .model_for_proto_model(&proto)
        .map_err(|e| unavailable(format!("tract cannot load graph `{graph}`: {e:#}")))
}

/// tract's optimized model of `model`, with edgeseg's own ops patched in when
/// `fused` (see [`super::tract_ops`]), and how many nodes they replaced
/// before tract's optimizer ran.
pub(crate) fn optimized(model: InferenceModel, fused: bool) -> TractResult<(TypedModel, Fused)> {
    let mut m = model.into_typed()?.into_decluttered()?;
    let mut counts = Fused::default();
    if fused {
        counts = super::tract_ops::fuse_decluttered(&mut m)?;
    }
    let mut m = m.into_optimized()?;
    if fused {
        super::tract_ops::fuse_row_softmax(&mut m)?;
    }
    Ok((m, counts))
}

/// Set (to any value) to build plain tract plans, without edgeseg's own ops: a switch
/// for comparing or ruling them out on a device without rebuilding.
pub const PLAIN_TRACT_ENV: &str = "EDGESEG_PLAIN_TRACT";

fn optimize(model: InferenceModel, graph: &str) -> Result<(PlanState, Fused), BackendError> {
    let fused = std::env::var_os(PLAIN_TRACT_ENV).is_none();
    let (model, fused) = optimized(model, fused)
        .map_err(|e| unavailable(format!("tract cannot optimize graph `{graph}`: {e:#}")))?;
    let plan: Plan = model
        .into_runnable()
        .map_err(|e| unavailable(format!("tract cannot plan graph `{graph}`: {e:#}")))?;
    let state = plan
        .spawn()
        .map_err(|e| unavailable(format!("graph `{graph}`: {e:#}")))?;
    Ok((state, fused))
}

impl TractSegmenter {
    /// Builds the plans for `bundle` with `options.threads` worker threads.
    ///
    /// The bundle must declare an RGB, NCHW, min–max normalized square input
    /// of the size the reference preprocessing produces (256), and hold the
    /// graphs [`ENCODER_GRAPH`] and [`DECODER_GRAPH`].
    pub fn from_bundle(bundle: &Bundle, options: &BackendOptions) -> Result<Self, BackendError> {
        let m = bundle.manifest();
        let inp = &m.input;
        if inp.channels != 3
            || inp.layout != Layout::Nchw
            || inp.normalization != Normalization::MinMax
            || inp.height != inp.width
            || inp.height as usize != prepost::INPUT_SIZE
        {
            return Err(unavailable(format!(
                "bundle {} declares input {}x{}x{} {:?} {:?}; this backend implements 3x{s}x{s} NCHW min-max",
                m.model.name,
                inp.channels,
                inp.height,
                inp.width,
                inp.layout,
                inp.normalization,
                s = prepost::INPUT_SIZE
            )));
        }
        if options.threads == 0 || options.threads > MAX_THREADS {
            return Err(unavailable(format!(
                "thread count {} is outside 1..={MAX_THREADS}",
                options.threads
            )));
        }
        let executor = if options.threads == 1 {
            Executor::SingleThread
        } else {
            Executor::multithread_with_name(options.threads, "edgeseg-cpu")
        };
        let s = prepost::INPUT_SIZE;
        let mut timings = LoadTimings::default();
        let t = Instant::now();
        let enc = parse_graph(bundle, ENCODER_GRAPH)?
            .with_input_fact(0, f32::fact([1, 3, s, s]).into())
            .map_err(unavailable)?;
        timings.encoder_parse_ms = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let (encoder, encoder_fused) =
            multithread_tract_scope(executor.clone(), || optimize(enc, ENCODER_GRAPH))?;
        timings.encoder_optimize_ms = t.elapsed().as_secs_f64() * 1e3;
        let out = encoder
            .plan()
            .model()
            .output_fact(0)
            .map_err(unavailable)?
            .shape
            .as_concrete()
            .map(|d| d.to_vec())
            .unwrap_or_default();
        let embedding_shape: [usize; 4] = out
            .as_slice()
            .try_into()
            .map_err(|_| unavailable(format!("encoder output shape {out:?} is not 4-D")))?;
        let t = Instant::now();
        let decoder_model = parse_graph(bundle, DECODER_GRAPH)?;
        timings.decoder_parse_ms = t.elapsed().as_secs_f64() * 1e3;
        let mut me = Self {
            name: format!("tract-cpu/{}t", options.threads),
            executor,
            threads: options.threads,
            input_size: s,
            embedding_shape,
            encoder,
            decoder_model,
            decoders: BTreeMap::new(),
            frame: None,
            timings,
            embedding_id: None,
            fused: [encoder_fused, Fused::default()],
        };
        let [_, c, eh, ew] = embedding_shape;
        me.embedding_id = crate::fewshot::EmbeddingId::of_bundle(bundle, Some([c, eh, ew]));
        let t = Instant::now();
        me.decoder_for(2)?; // the box-only prompt
        me.timings.decoder_optimize_ms = t.elapsed().as_secs_f64() * 1e3;
        Ok(me)
    }

    /// Opens and verifies the bundle at `path`, then builds the plans.
    pub fn open(path: &std::path::Path, options: &BackendOptions) -> Result<Self, BackendError> {
        let bundle = Bundle::open(path, &options.verify)
            .map_err(|e| unavailable(format!("{}: {e}", path.display())))?;
        Self::from_bundle(&bundle, options)
    }

    /// How long the steps of opening took.
    pub fn load_timings(&self) -> &LoadTimings {
        &self.timings
    }

    /// How many nodes of the encoder plan and of the last-built decoder plan
    /// edgeseg's own tract ops replaced ([`super::tract_ops`]).
    pub fn fused_ops(&self) -> [Fused; 2] {
        self.fused
    }

    /// The thread count.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The square model input side (from the bundle manifest).
    pub fn input_size(&self) -> usize {
        self.input_size
    }

    /// The image embedding's `[channels, height, width]`.
    pub fn embedding_dims(&self) -> [usize; 3] {
        let [_, c, h, w] = self.embedding_shape;
        [c, h, w]
    }

    fn decoder_for(&mut self, n: usize) -> Result<&mut PlanState, BackendError> {
        if !self.decoders.contains_key(&n) {
            let [_, d, e1, e2] = self.embedding_shape;
            let model = self
                .decoder_model
                .clone()
                .with_input_fact(0, f32::fact([1, d, e1, e2]).into())
                .and_then(|m| m.with_input_fact(1, f32::fact([1, n, 2]).into()))
                .and_then(|m| m.with_input_fact(2, f32::fact([1, n]).into()))
                .map_err(unavailable)?;
            let (state, fused) =
                multithread_tract_scope(self.executor.clone(), || optimize(model, DECODER_GRAPH))?;
            self.fused[1] = fused;
            self.decoders.insert(n, state);
        }
        self.decoders
            .get_mut(&n)
            .ok_or_else(|| inference("decoder plan vanished"))
    }

    /// Runs only the encoder on an already preprocessed `1×3×S×S` input and
    /// returns the embedding (used by benchmarks and parity tests).
    pub fn encode_preprocessed(&mut self, input: &[f32]) -> Result<Vec<f32>, BackendError> {
        let v = self.run_encoder(input)?;
        Ok(v.1)
    }

    /// Runs the encoder on a pre-processed frame and makes it the current one.
    fn encode(&mut self, prep: prepost::Preprocessed) -> Result<(), BackendError> {
        let (embedding, embedding_f32) = self.run_encoder(&prep.input)?;
        self.frame = Some(FrameState {
            width: prep.orig_w,
            height: prep.orig_h,
            prep,
            embedding,
            embedding_f32,
        });
        Ok(())
    }

    fn run_encoder(&mut self, input: &[f32]) -> Result<(TValue, Vec<f32>), BackendError> {
        let s = self.input_size;
        let t = Tensor::from_shape(&[1, 3, s, s], input).map_err(inference)?;
        let enc = &mut self.encoder;
        let out = multithread_tract_scope(self.executor.clone(), || enc.run(tvec!(t.into())))
            .map_err(inference)?;
        let emb = out
            .into_iter()
            .next()
            .ok_or_else(|| inference("encoder returned no output"))?;
        if emb.shape() != self.embedding_shape {
            return Err(BackendError::BadShape {
                output: "image_embeddings".into(),
                got: emb.shape().to_vec(),
                expected: format!("{:?}", self.embedding_shape),
            });
        }
        let v = f32_vec(&emb)?;
        if v.iter().any(|x| !x.is_finite()) {
            return Err(BackendError::NonFinite {
                output: "image_embeddings".into(),
            });
        }
        Ok((emb, v))
    }

    /// Runs only the decoder on the current frame's embedding with SAM-style
    /// points (model coordinates) and labels; returns all low-res logits and
    /// IoU predictions.
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
        let emb = self
            .frame
            .as_ref()
            .ok_or(BackendError::NoFrame)?
            .embedding
            .clone();
        let c = Tensor::from_shape(&[1, n, 2], coords).map_err(inference)?;
        let l = Tensor::from_shape(&[1, n], labels).map_err(inference)?;
        let executor = self.executor.clone();
        let dec = self.decoder_for(n)?;
        let out = multithread_tract_scope(executor, || dec.run(tvec!(emb, c.into(), l.into())))
            .map_err(inference)?;
        if out.len() != 2 {
            return Err(inference(format!(
                "decoder returned {} outputs, expected 2",
                out.len()
            )));
        }
        // low-res logits at the model input size, whatever the embedding grid
        // (students upscale a smaller embedding by more than SAM's 4×)
        let s = self.input_size;
        let logits = &out[0];
        let iou = &out[1];
        let k = iou.shape().get(1).copied().unwrap_or(0);
        if logits.shape() != [1, k, s, s] || k == 0 {
            return Err(BackendError::BadShape {
                output: "low_res_logits".into(),
                got: logits.shape().to_vec(),
                expected: format!("[1, k, {s}, {s}] with k ≥ 1 IoU predictions"),
            });
        }
        let logits = f32_vec(logits)?;
        let iou = f32_vec(iou)?;
        if logits.iter().any(|x| !x.is_finite()) {
            return Err(BackendError::NonFinite {
                output: "low_res_logits".into(),
            });
        }
        if iou.iter().any(|x| !x.is_finite()) {
            return Err(BackendError::NonFinite {
                output: "iou_predictions".into(),
            });
        }
        Ok((logits, iou))
    }

    /// SAM-convention points and labels (model space) for `prompt` on the
    /// current frame: what [`Self::decode_points`] takes.
    pub fn sam_points(&self, prompt: &Prompt) -> Result<(Vec<f32>, Vec<f32>), BackendError> {
        let f = self.frame.as_ref().ok_or(BackendError::NoFrame)?;
        Self::prompt_points(prompt, f.height, f.width)
    }

    /// SAM-convention points for `prompt` on a `h`×`w` frame, in model space.
    fn prompt_points(
        prompt: &Prompt,
        h: usize,
        w: usize,
    ) -> Result<(Vec<f32>, Vec<f32>), BackendError> {
        prompt_points(prompt, h, w)
    }
}

/// SAM-convention points and labels for `prompt` on a `h`×`w` frame, in model
/// space (shared with the kernel-plan backends).
pub(crate) fn prompt_points(
    prompt: &Prompt,
    h: usize,
    w: usize,
) -> Result<(Vec<f32>, Vec<f32>), BackendError> {
    let bad = |m: String| BackendError::InvalidPrompt(m);
    if prompt.boxes.is_none() && prompt.points.is_empty() {
        return Err(bad("no box and no points".into()));
    }
    if prompt.points.len() + 2 > MAX_POINTS {
        return Err(bad(format!(
            "{} points (at most {})",
            prompt.points.len(),
            MAX_POINTS - 2
        )));
    }
    let mut coords = Vec::new();
    let mut labels = Vec::new();
    for p in &prompt.points {
        if !(p.x.is_finite() && p.y.is_finite()) {
            return Err(bad(format!("point ({}, {}) is not finite", p.x, p.y)));
        }
        let q = prepost::point_to_256([p.x as f64, p.y as f64], h, w);
        coords.extend_from_slice(&q);
        labels.push(match p.label {
            PointLabel::Foreground => LABEL_FOREGROUND,
            PointLabel::Background => LABEL_BACKGROUND,
        });
    }
    match prompt.boxes {
        Some(b) => {
            let v = [b.x0, b.y0, b.x1, b.y1];
            if v.iter().any(|x| !x.is_finite()) {
                return Err(bad(format!("box {v:?} is not finite")));
            }
            if b.x1 < b.x0 || b.y1 < b.y0 {
                return Err(bad(format!("box {v:?} has x1 < x0 or y1 < y0")));
            }
            // clamp to the frame (tracking margins may overhang it)
            let (mx, my) = ((w - 1) as f64, (h - 1) as f64);
            let c = [
                (b.x0 as f64).clamp(0.0, mx),
                (b.y0 as f64).clamp(0.0, my),
                (b.x1 as f64).clamp(0.0, mx),
                (b.y1 as f64).clamp(0.0, my),
            ];
            coords.extend_from_slice(&prepost::box_to_256(c, h, w));
            labels.extend([LABEL_BOX_TOP_LEFT, LABEL_BOX_BOTTOM_RIGHT]);
        }
        None => {
            coords.extend([0.0, 0.0]);
            labels.push(LABEL_PADDING);
        }
    }
    Ok((coords, labels))
}

impl PromptableSegmenter for TractSegmenter {
    fn name(&self) -> &str {
        &self.name
    }

    fn set_frame(&mut self, frame: RgbFrame<'_>) -> Result<(), BackendError> {
        let frame = RgbFrame::new(frame.width, frame.height, frame.data)?;
        self.frame = None;
        let prep = prepost::preprocess_rgb(frame.data, frame.height, frame.width)
            .map_err(|e| BackendError::InvalidFrame(e.to_string()))?;
        self.encode(prep)
    }

    fn set_frame_rows(&mut self, rows: &mut dyn prepost::RgbRows) -> Result<(), BackendError> {
        self.frame = None;
        let prep = prepost::preprocess_rows(rows)
            .map_err(|e| BackendError::InvalidFrame(e.to_string()))?;
        self.encode(prep)
    }

    fn segment(&mut self, prompt: &Prompt) -> Result<Segmentation, BackendError> {
        let (h, w) = {
            let f = self.frame.as_ref().ok_or(BackendError::NoFrame)?;
            (f.height, f.width)
        };
        let (coords, labels) = Self::prompt_points(prompt, h, w)?;
        let (logits, iou) = self.decode_points(&coords, &labels)?;
        let f = self.frame.as_ref().ok_or(BackendError::NoFrame)?;
        let plane = logits.len() / iou.len();
        // output 0 is the single-mask output LiteMedSAM uses
        let mask = prepost::postprocess_mask(&logits[..plane], &f.prep)
            .map_err(|e| inference(format!("postprocessing: {e}")))?;
        Ok(Segmentation {
            width: w,
            height: h,
            mask,
            iou_prediction: iou.first().copied(),
        })
    }

    fn embedding_id(&self) -> Option<crate::fewshot::EmbeddingId> {
        self.embedding_id.clone()
    }

    fn embedding(&self) -> Option<Embedding<'_>> {
        let f = self.frame.as_ref()?;
        let [_, c, eh, ew] = self.embedding_shape;
        let s = self.input_size;
        Some(Embedding {
            channels: c,
            height: eh,
            width: ew,
            valid_height: (f.prep.new_h * eh).div_ceil(s).min(eh),
            valid_width: (f.prep.new_w * ew).div_ceil(s).min(ew),
            frame_height: f.height,
            frame_width: f.width,
            data: &f.embedding_f32,
        })
    }
}
