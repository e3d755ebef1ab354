//! Activation ranges for int8 compute, calibrated on the calibration frames.
//!
//! An int8-compute form of a graph (ARM SDOT, GPU dp4a/IMMA) multiplies int8 weights by
//! int8 activations, so every activation that an int8 weight multiplies needs a scale.
//! This module finds those activations (the data input of every `Conv`,
//! `ConvTranspose`, `MatMul` and `Gemm` whose weight is an initializer), runs the
//! float graphs on tract with them as extra outputs, and fits one symmetric int8 scale
//! per tensor (zero point 0, the form signed int8 dot products take) three ways:
//!
//! * **min-max**: the largest magnitude seen;
//! * **percentile**: the 99.99th percentile of the magnitudes, which clips rare outliers;
//! * **MSE**: the clipping threshold, on a geometric grid of 128 steps from 1/256 of the
//!   largest magnitude up to all of it, that minimises the quantization error of the
//!   samples.
//!
//! Each candidate is fitted on the even-numbered calibration frames and its error
//! (quantize → dequantize, relative mean squared error) is measured on the odd-numbered
//! ones, which it has not seen; the method with the lowest held-out error wins, per
//! tensor. With a single frame, fit and measurement use the same frame (and say so).
//!
//! Degenerate ranges: a tensor that is 0 everywhere gets scale 1 (any scale represents
//! 0 exactly) and method `constant`; a non-finite value is an error, never a scale.
//!
//! tract's float plan does not use these ranges: on x86 without VNNI its int8 matmul
//! is 18–62× slower than f32 (`docs/results/quantization.md`), so the runtime keeps the
//! weight-only form. The ranges are recorded in the bundle's manifest for the
//! int8-compute backends.

use std::collections::BTreeMap;
use std::sync::Arc;

use edgeseg_kernels::prepost;
use edgeseg_runtime::backend::cpu::{DECODER_GRAPH, ENCODER_GRAPH};
use edgeseg_runtime::backend::{BackendOptions, PromptableSegmenter, RgbFrame, TractSegmenter};
use edgeseg_runtime::bundle::Bundle;
use edgeseg_runtime::onnx_weights;
use edgeseg_runtime::prompt::Prompt;
use indicatif::ProgressBar;
use serde::Serialize;
use tract_onnx::pb;
use tract_onnx::prelude::*;

use crate::quantize::{calibration_boxes, CalibImage, QuantizeError};

/// Values kept per tensor and run for fitting and measuring (evenly strided).
pub const SAMPLES_PER_RUN: usize = 4096;
/// The percentile of the magnitudes used by [`RangeMethod::Percentile`].
pub const PERCENTILE: f64 = 99.99;
/// Clipping thresholds tried by [`RangeMethod::Mse`].
const MSE_GRID: usize = 128;
/// Largest int8 magnitude of the symmetric scheme.
const QMAX: f32 = 127.0;

/// How a scale was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RangeMethod {
    /// The largest magnitude.
    MinMax,
    /// The [`PERCENTILE`]th percentile of the magnitudes.
    Percentile,
    /// The clipping threshold of least quantization error.
    Mse,
    /// The tensor is 0 everywhere.
    Constant,
}

/// The calibrated range of one activation.
#[derive(Debug, Clone, Serialize)]
pub struct ActivationRange {
    /// Graph of the bundle.
    pub graph: String,
    /// Value name in the graph.
    pub tensor: String,
    /// Operators that read it with an int8-able weight.
    pub consumers: Vec<String>,
    /// The chosen method.
    pub method: RangeMethod,
    /// int8 scale: a value `x` is stored as `round(x / scale)` clamped to ±127.
    pub scale: f32,
    /// Zero point (always 0: symmetric).
    pub zero_point: i32,
    /// Largest magnitude seen on the fitting frames.
    pub abs_max: f32,
    /// Held-out relative mean squared error of each method.
    pub heldout_rel_mse: BTreeMap<RangeMethod, f64>,
    /// Samples used to fit and to measure.
    pub samples: (usize, usize),
    /// Whether the measurement frames were also the fitting frames (one frame only).
    pub measured_on_fit_frames: bool,
}

/// One activation to calibrate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivationInput {
    /// Graph of the bundle.
    pub graph: String,
    /// Value name.
    pub tensor: String,
    /// Operators that read it with an int8-able weight.
    pub consumers: Vec<String>,
}

/// The activations an int8 weight multiplies: for every `Conv`, `ConvTranspose`,
/// `MatMul` or `Gemm` node with an initializer weight, its other (non-initializer)
/// data input.
pub fn activation_inputs(model: &pb::ModelProto, graph: &str) -> Vec<ActivationInput> {
    let Some(g) = model.graph.as_ref() else {
        return Vec::new();
    };
    let initializers: std::collections::BTreeSet<&str> =
        g.initializer.iter().map(|i| i.name.as_str()).collect();
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for node in &g.node {
        let op = node.op_type.as_str();
        if !matches!(op, "Conv" | "ConvTranspose" | "MatMul" | "Gemm") {
            continue;
        }
        let (Some(a), Some(b)) = (node.input.first(), node.input.get(1)) else {
            continue;
        };
        let activation = match (
            initializers.contains(a.as_str()),
            initializers.contains(b.as_str()),
        ) {
            (false, true) => a,
            (true, false) if op == "MatMul" => b,
            _ => continue,
        };
        let consumers = found.entry(activation.clone()).or_default();
        if !consumers.iter().any(|c| c == op) {
            consumers.push(op.to_string());
        }
    }
    found
        .into_iter()
        .map(|(tensor, consumers)| ActivationInput {
            graph: graph.to_string(),
            tensor,
            consumers,
        })
        .collect()
}

/// Samples of one tensor: every value's magnitude bound, evenly strided values.
#[derive(Debug, Default, Clone)]
struct Samples {
    abs_max: f32,
    values: Vec<f32>,
}

impl Samples {
    fn add(&mut self, data: &[f32], name: &str) -> Result<(), String> {
        if let Some(bad) = data.iter().find(|v| !v.is_finite()) {
            return Err(format!(
                "activation `{name}` has a non-finite value ({bad})"
            ));
        }
        self.abs_max = data.iter().fold(self.abs_max, |m, v| m.max(v.abs()));
        let step = data.len().div_ceil(SAMPLES_PER_RUN).max(1);
        self.values.extend(data.iter().step_by(step));
        Ok(())
    }
}

/// Quantizes `x` with `scale` (symmetric int8) and back.
fn fake_quant(x: f32, scale: f32) -> f32 {
    (x / scale).round().clamp(-QMAX, QMAX) * scale
}

/// Mean squared quantization error of `values` with `scale`.
fn quant_mse(values: &[f32], scale: f32) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values
        .iter()
        .map(|&x| f64::from(x - fake_quant(x, scale)).powi(2))
        .sum::<f64>()
        / values.len() as f64
}

/// The candidate clipping thresholds of `fit` (magnitude bound `abs_max`).
fn candidates(fit: &[f32], abs_max: f32) -> Vec<(RangeMethod, f32)> {
    let mut mags: Vec<f32> = fit.iter().map(|v| v.abs()).collect();
    mags.sort_by(f32::total_cmp);
    let pct = mags
        .get(((mags.len().saturating_sub(1)) as f64 * PERCENTILE / 100.0).round() as usize)
        .copied()
        .unwrap_or(abs_max);
    let mse = (0..MSE_GRID)
        .map(|i| abs_max * 2f32.powf(-8.0 * (MSE_GRID - 1 - i) as f32 / (MSE_GRID - 1) as f32))
        .filter(|c| *c > 0.0)
        .map(|c| (c, quant_mse(fit, c / QMAX)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(abs_max, |(c, _)| c);
    vec![
        (RangeMethod::MinMax, abs_max),
        (
            RangeMethod::Percentile,
            if pct > 0.0 { pct } else { abs_max },
        ),
        (RangeMethod::Mse, mse),
    ]
}

/// Fits and chooses the range of one tensor from its fitting and measuring samples.
fn choose(input: &ActivationInput, fit: &Samples, eval: &Samples, same: bool) -> ActivationRange {
    let mut range = ActivationRange {
        graph: input.graph.clone(),
        tensor: input.tensor.clone(),
        consumers: input.consumers.clone(),
        method: RangeMethod::Constant,
        scale: 1.0,
        zero_point: 0,
        abs_max: fit.abs_max,
        heldout_rel_mse: BTreeMap::new(),
        samples: (fit.values.len(), eval.values.len()),
        measured_on_fit_frames: same,
    };
    if fit.abs_max <= 0.0 {
        return range;
    }
    let power = eval
        .values
        .iter()
        .map(|&x| f64::from(x).powi(2))
        .sum::<f64>()
        / eval.values.len().max(1) as f64;
    let mut best: Option<(f64, RangeMethod, f32)> = None;
    for (method, clip) in candidates(&fit.values, fit.abs_max) {
        let scale = clip / QMAX;
        let err = quant_mse(&eval.values, scale) / power.max(f64::MIN_POSITIVE);
        range.heldout_rel_mse.insert(method, err);
        if best.is_none_or(|(e, _, _)| err < e) {
            best = Some((err, method, scale));
        }
    }
    if let Some((_, method, scale)) = best {
        range.method = method;
        range.scale = scale;
    }
    range
}

/// A float graph of `bundle` on tract with `outputs` as its outputs.
fn probe(
    bundle: &Bundle,
    graph: &str,
    facts: &[(usize, Vec<usize>)],
    outputs: &[String],
) -> Result<Arc<TypedRunnableModel>, String> {
    let proto = onnx_weights::load_graph(bundle, graph).map_err(|e| e.to_string())?;
    let mut model = tract_onnx::onnx()
        .model_for_proto_model(&proto)
        .map_err(|e| format!("tract cannot load `{graph}`: {e:#}"))?;
    for (i, shape) in facts {
        model = model
            .with_input_fact(*i, f32::fact(shape.as_slice()).into())
            .map_err(|e| format!("`{graph}` input {i}: {e:#}"))?;
    }
    model
        .with_outputs_by_name(outputs)
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .map_err(|e| format!("tract cannot plan `{graph}` with its activations as outputs: {e:#}"))
}

fn tensor(shape: &[usize], data: &[f32]) -> Result<TValue, String> {
    Tensor::from_shape(shape, data)
        .map(TValue::from)
        .map_err(|e| format!("{e:#}"))
}

/// Calibrates the activation ranges of `bundle` (a float bundle) on `images`, with the
/// three [`calibration_boxes`] of each frame for the decoder.
pub fn calibrate(
    bundle: &Bundle,
    images: &[CalibImage],
    options: &BackendOptions,
    progress: &ProgressBar,
) -> Result<Vec<ActivationRange>, QuantizeError> {
    let fail = |reason: String| QuantizeError::Activations { reason };
    let mut inputs = Vec::new();
    for graph in [ENCODER_GRAPH, DECODER_GRAPH] {
        let proto = onnx_weights::load_graph(bundle, graph).map_err(|e| fail(e.to_string()))?;
        inputs.extend(activation_inputs(&proto, graph));
    }
    if inputs.is_empty() {
        return Ok(Vec::new());
    }
    let mut model = TractSegmenter::from_bundle(bundle, options)
        .map_err(|e| fail(format!("opening the float bundle: {e}")))?;
    let [d, e1, e2] = model.embedding_dims();
    let s = prepost::INPUT_SIZE;
    let names = |graph: &str| -> Vec<String> {
        inputs
            .iter()
            .filter(|i| i.graph == graph)
            .map(|i| i.tensor.clone())
            .collect()
    };
    let (enc_names, dec_names) = (names(ENCODER_GRAPH), names(DECODER_GRAPH));
    let encoder =
        probe(bundle, ENCODER_GRAPH, &[(0, vec![1, 3, s, s])], &enc_names).map_err(fail)?;
    // One decoder plan per prompt size (a box is two points).
    let mut decoders: BTreeMap<usize, Arc<TypedRunnableModel>> = BTreeMap::new();
    // (fitting, measuring) samples per tensor
    let mut samples: BTreeMap<(String, String), (Samples, Samples)> = BTreeMap::new();
    let one_frame = images.len() < 2;
    progress.set_length(images.len() as u64);
    for (k, im) in images.iter().enumerate() {
        let on = |what: &str, e: String| fail(format!("{what} {}: {e}", im.path.display()));
        let fit = one_frame || k % 2 == 0;
        let mut record = |graph: &str, names: &[String], outs: &[TValue]| -> Result<(), String> {
            for (name, v) in names.iter().zip(outs) {
                let data = v
                    .try_as_plain_ram()
                    .and_then(|r| r.as_slice::<f32>().map(<[f32]>::to_vec))
                    .map_err(|e| format!("activation `{name}` is not f32: {e:#}"))?;
                let entry = samples
                    .entry((graph.to_string(), name.clone()))
                    .or_default();
                if fit {
                    entry.0.add(&data, name)?;
                }
                if !fit || one_frame {
                    entry.1.add(&data, name)?;
                }
            }
            Ok(())
        };
        let prep = prepost::preprocess_rgb(&im.rgb, im.height, im.width)
            .map_err(|e| on("preprocessing", e.to_string()))?;
        let outs = encoder
            .run(tvec![
                tensor(&[1, 3, s, s], &prep.input).map_err(|e| on("encoder input", e))?
            ])
            .map_err(|e| on("encoder", format!("{e:#}")))?;
        record(ENCODER_GRAPH, &enc_names, &outs).map_err(|e| on("encoder", e))?;
        if !dec_names.is_empty() {
            let frame = RgbFrame::new(im.width, im.height, &im.rgb)
                .map_err(|e| on("frame", e.to_string()))?;
            model
                .set_frame(frame)
                .map_err(|e| on("encoding", e.to_string()))?;
            let emb = model
                .embedding()
                .map(|e| e.data.to_vec())
                .ok_or_else(|| on("encoding", "no embedding".into()))?;
            for b in calibration_boxes(im.width, im.height) {
                let (coords, labels) = model
                    .sam_points(&Prompt::from_box(b))
                    .map_err(|e| on("prompting", e.to_string()))?;
                let n = labels.len();
                let decoder = match decoders.entry(n) {
                    std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::btree_map::Entry::Vacant(e) => e.insert(
                        probe(
                            bundle,
                            DECODER_GRAPH,
                            &[(0, vec![1, d, e1, e2]), (1, vec![1, n, 2]), (2, vec![1, n])],
                            &dec_names,
                        )
                        .map_err(fail)?,
                    ),
                };
                let outs = decoder
                    .run(tvec![
                        tensor(&[1, d, e1, e2], &emb).map_err(|e| on("decoder input", e))?,
                        tensor(&[1, n, 2], &coords).map_err(|e| on("decoder input", e))?,
                        tensor(&[1, n], &labels).map_err(|e| on("decoder input", e))?,
                    ])
                    .map_err(|e| on("decoder", format!("{e:#}")))?;
                record(DECODER_GRAPH, &dec_names, &outs).map_err(|e| on("decoder", e))?;
            }
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    Ok(inputs
        .iter()
        .filter_map(|i| {
            samples
                .get(&(i.graph.clone(), i.tensor.clone()))
                .map(|(fit, eval)| choose(i, fit, eval, one_frame))
        })
        .collect())
}

/// Ranges per chosen method.
pub fn method_counts(ranges: &[ActivationRange]) -> BTreeMap<RangeMethod, usize> {
    let mut c = BTreeMap::new();
    for r in ranges {
        *c.entry(r.method).or_insert(0) += 1;
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> ActivationInput {
        ActivationInput {
            graph: "g".into(),
            tensor: "x".into(),
            consumers: vec!["MatMul".into()],
        }
    }

    fn samples(values: Vec<f32>) -> Samples {
        let mut s = Samples::default();
        s.add(&values, "x").unwrap();
        s
    }

    /// A tensor with one huge outlier among 40,000 values (ten runs of 4000): the
    /// percentile clips it, which measures better than min-max on held-out frames
    /// without it, so the chosen scale is below the outlier's.
    #[test]
    fn outliers_are_clipped_when_that_measures_better() {
        let run: Vec<f32> = (0..4000)
            .map(|i| ((i % 200) as f32 - 100.0) / 100.0)
            .collect();
        let mut fit = Samples::default();
        for _ in 0..10 {
            fit.add(&run, "x").unwrap();
        }
        fit.add(&[80.0], "x").unwrap();
        let eval: Vec<f32> = (0..4000)
            .map(|i| ((i % 173) as f32 - 86.0) / 90.0)
            .collect();
        let r = choose(&input(), &fit, &samples(eval), false);
        assert_ne!(r.method, RangeMethod::MinMax, "{r:?}");
        assert!(r.scale < 80.0 / QMAX, "{r:?}");
        let mm = r.heldout_rel_mse[&RangeMethod::MinMax];
        assert!(r.heldout_rel_mse[&r.method] <= mm);
        assert_eq!(r.zero_point, 0);
    }

    /// Evenly spread values: min-max is as good as any clipping, and every error is
    /// below the relative error of one int8 step.
    #[test]
    fn uniform_values_keep_their_range() {
        let v: Vec<f32> = (0..2001).map(|i| (i as f32 - 1000.0) / 250.0).collect();
        let r = choose(&input(), &samples(v.clone()), &samples(v), false);
        assert!((r.abs_max - 4.0).abs() < 1e-6);
        let best = r.heldout_rel_mse[&r.method];
        assert!(best < 1e-4, "{r:?}");
        assert!((r.scale * QMAX - 4.0).abs() < 0.6, "{r:?}");
    }

    /// Degenerate ranges: all zeros get the documented fallback; a NaN is an error.
    #[test]
    fn degenerate_ranges() {
        let r = choose(
            &input(),
            &samples(vec![0.0; 100]),
            &samples(vec![0.0; 100]),
            true,
        );
        assert_eq!(r.method, RangeMethod::Constant);
        assert_eq!(r.scale, 1.0);
        let mut s = Samples::default();
        let err = s.add(&[1.0, f32::NAN], "x").unwrap_err();
        assert!(err.contains("non-finite"), "{err}");
        assert!(s.add(&[f32::INFINITY], "x").is_err());
    }

    /// The activation inputs of a tiny graph: the data input of a MatMul with an
    /// initializer weight (either side), of a Conv, not of a MatMul of two activations.
    #[test]
    fn finds_the_inputs_int8_weights_multiply() {
        let node = |op: &str, inputs: &[&str], out: &str| pb::NodeProto {
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.into()],
            ..Default::default()
        };
        let init = |name: &str| pb::TensorProto {
            name: name.into(),
            ..Default::default()
        };
        let model = pb::ModelProto {
            graph: Some(pb::GraphProto {
                node: vec![
                    node("Conv", &["image", "w0", "b0"], "c"),
                    node("MatMul", &["c", "w1"], "m1"),
                    node("MatMul", &["w2", "m1"], "m2"),
                    node("MatMul", &["m1", "m2"], "qk"),
                    node("Relu", &["qk"], "r"),
                    node("MatMul", &["c", "w3"], "m3"),
                ],
                initializer: vec![init("w0"), init("b0"), init("w1"), init("w2"), init("w3")],
                ..Default::default()
            }),
            ..Default::default()
        };
        let found = activation_inputs(&model, "enc");
        let names: Vec<(&str, &[String])> = found
            .iter()
            .map(|a| (a.tensor.as_str(), a.consumers.as_slice()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("c", &["MatMul".to_string()][..]),
                ("image", &["Conv".to_string()][..]),
                ("m1", &["MatMul".to_string()][..]),
            ]
        );
        assert!(found.iter().all(|a| a.graph == "enc"));
    }
}
