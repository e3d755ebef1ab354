//! Simulated int8 compute: what accuracy a device that multiplies int8 weights by
//! int8 activations would deliver, measured on tract before any such device exists.
//!
//! An int8 bundle made by `quantize --mode int8|mixed` stores its weights as int8 per
//! output channel (which both backends dequantize at load, exactly), and records one
//! symmetric int8 scale per activation that an int8 weight multiplies
//! (`extra.quantization.activation_ranges`, from [`crate::actcalib`]). This module
//! inserts a per-tensor `QuantizeLinear` → `DequantizeLinear` pair (int8, zero point
//! 0) on each of those activations, in front of the operators that read them. tract
//! implements per-tensor QDQ exactly (only *per-channel* QDQ is silently wrong there,
//! and it is not used here), so the float plan then computes what an int8 engine
//! would, up to float summation order:
//!
//! * weights: the int8 values times their per-channel scales (exact);
//! * activations: rounded to the int8 grid of their scale and saturated; ONNX
//!   `QuantizeLinear` saturates to −128…127, one level more on the negative side than
//!   the symmetric ±127 of the recorded scheme;
//! * accumulation and everything between the multiplies (norms, softmax, GELU) in
//!   f32, as an int8 engine with f32 requantization would do.
//!
//! The result is a *simulation bundle*: it runs on tract like any bundle (slower: the
//! QDQ pairs are extra element-wise passes) and is for evaluation only; its manifest
//! says so (`extra.int8_simulation`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use edgeseg_runtime::bundle::{Bundle, BundleError, BundleWriter, VerifyPolicy};
use prost::Message;
use thiserror::Error;
use tract_onnx::pb;

/// Errors of the simulation.
#[derive(Debug, Error)]
pub enum Int8SimError {
    /// The bundle could not be opened or written.
    #[error("{path}: {source}")]
    Bundle {
        /// The bundle.
        path: PathBuf,
        /// What went wrong.
        source: BundleError,
    },
    /// The bundle records no activation scales.
    #[error(
        "{path}: no activation ranges in the manifest (extra.quantization.activation_ranges); \
         make the bundle with `edgeseg-tools quantize --mode int8|mixed`"
    )]
    NoRanges {
        /// The bundle.
        path: PathBuf,
    },
    /// A recorded scale or graph is unusable.
    #[error("{path}: {reason}")]
    Invalid {
        /// The bundle.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// What [`simulate`] did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Simulation {
    /// QDQ pairs inserted, per graph.
    pub pairs: BTreeMap<String, usize>,
    /// Operator inputs rewired to a dequantized activation, per graph.
    pub rewired_inputs: BTreeMap<String, usize>,
}

/// The activation scales recorded in `bundle`'s manifest: graph → tensor → scale.
pub fn activation_scales(
    bundle: &Bundle,
    path: &Path,
) -> Result<BTreeMap<String, BTreeMap<String, f32>>, Int8SimError> {
    let invalid = |reason: String| Int8SimError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let tensors = bundle
        .manifest()
        .extra
        .get("quantization")
        .and_then(|q| q.get("activation_ranges"))
        .and_then(|r| r.get("tensors"))
        .and_then(|t| t.as_object())
        .ok_or_else(|| Int8SimError::NoRanges {
            path: path.to_path_buf(),
        })?;
    let mut out: BTreeMap<String, BTreeMap<String, f32>> = BTreeMap::new();
    for (key, value) in tensors {
        let (graph, tensor) = key
            .split_once('/')
            .ok_or_else(|| invalid(format!("activation range `{key}` is not GRAPH/TENSOR")))?;
        let scale = value
            .get("scale")
            .and_then(|s| s.as_f64())
            .ok_or_else(|| invalid(format!("activation range `{key}` has no scale")))?
            as f32;
        if !(scale.is_finite() && scale > 0.0) {
            return Err(invalid(format!(
                "activation `{key}` has scale {scale}, not a positive finite number"
            )));
        }
        out.entry(graph.to_string())
            .or_default()
            .insert(tensor.to_string(), scale);
    }
    Ok(out)
}

/// The activation input of an int8-able operator (the rule of
/// [`crate::actcalib::activation_inputs`]): index of the non-initializer data input
/// whose partner is an initializer.
pub(crate) fn activation_index(node: &pb::NodeProto, initializers: &[&str]) -> Option<usize> {
    if !matches!(
        node.op_type.as_str(),
        "Conv" | "ConvTranspose" | "MatMul" | "Gemm"
    ) {
        return None;
    }
    let (a, b) = (node.input.first()?, node.input.get(1)?);
    match (
        initializers.contains(&a.as_str()),
        initializers.contains(&b.as_str()),
    ) {
        (false, true) => Some(0),
        (true, false) if node.op_type == "MatMul" => Some(1),
        _ => None,
    }
}

pub(crate) fn scalar_initializer(
    name: String,
    data_type: pb::tensor_proto::DataType,
    raw: Vec<u8>,
) -> pb::TensorProto {
    pb::TensorProto {
        name,
        data_type: data_type as i32,
        raw_data: raw,
        ..Default::default()
    }
}

/// Inserts a per-tensor int8 `QuantizeLinear` → `DequantizeLinear` pair for every
/// activation of `scales` that an int8-able operator of `model` reads, and rewires
/// those operators to the dequantized value. Returns (pairs, rewired inputs). Scales
/// of tensors no operator reads that way are an error (the manifest and the graph
/// disagree).
pub fn insert_activation_qdq(
    model: &mut pb::ModelProto,
    scales: &BTreeMap<String, f32>,
) -> Result<(usize, usize), String> {
    let g = model
        .graph
        .as_mut()
        .ok_or_else(|| "the model has no graph".to_string())?;
    let initializers: Vec<String> = g.initializer.iter().map(|i| i.name.clone()).collect();
    let init_refs: Vec<&str> = initializers.iter().map(String::as_str).collect();
    // first consumer of each activation, and the rewiring
    let mut first: BTreeMap<String, usize> = BTreeMap::new();
    let mut rewired = 0usize;
    for (i, node) in g.node.iter_mut().enumerate() {
        let Some(k) = activation_index(node, &init_refs) else {
            continue;
        };
        let tensor = node.input[k].clone();
        if !scales.contains_key(&tensor) {
            continue;
        }
        first.entry(tensor.clone()).or_insert(i);
        node.input[k] = format!("{tensor}.int8sim.dq");
        rewired += 1;
    }
    if let Some(unused) = scales.keys().find(|t| !first.contains_key(*t)) {
        return Err(format!(
            "the manifest has a scale for `{unused}`, which no Conv/ConvTranspose/MatMul/Gemm \
             of this graph reads with an initializer weight"
        ));
    }
    // insert from the last position backwards so that earlier indices stay valid
    let mut at: Vec<(usize, &String)> = first.iter().map(|(t, &i)| (i, t)).collect();
    at.sort();
    for (i, tensor) in at.into_iter().rev() {
        let scale = scales[tensor];
        let (s, z) = (
            format!("{tensor}.int8sim.scale"),
            format!("{tensor}.int8sim.zero"),
        );
        g.initializer.push(scalar_initializer(
            s.clone(),
            pb::tensor_proto::DataType::Float,
            scale.to_le_bytes().to_vec(),
        ));
        g.initializer.push(scalar_initializer(
            z.clone(),
            pb::tensor_proto::DataType::Int8,
            vec![0],
        ));
        let q = format!("{tensor}.int8sim.q");
        let quantize = pb::NodeProto {
            name: format!("{tensor}.int8sim.quantize"),
            op_type: "QuantizeLinear".into(),
            input: vec![tensor.clone(), s.clone(), z.clone()],
            output: vec![q.clone()],
            ..Default::default()
        };
        let dequantize = pb::NodeProto {
            name: format!("{tensor}.int8sim.dequantize"),
            op_type: "DequantizeLinear".into(),
            input: vec![q, s, z],
            output: vec![format!("{tensor}.int8sim.dq")],
            ..Default::default()
        };
        g.node.insert(i, dequantize);
        g.node.insert(i, quantize);
    }
    Ok((first.len(), rewired))
}

/// Writes to `out` the simulation bundle of the int8 bundle at `path`: the same
/// manifest (model name suffixed `-int8sim`, `extra.int8_simulation` added), the same
/// tensors, and graphs with QDQ pairs on every calibrated activation.
pub fn simulate(path: &Path, out: &Path) -> Result<Simulation, Int8SimError> {
    let bundle_err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| Int8SimError::Bundle { path: p, source }
    };
    let invalid = |reason: String| Int8SimError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let bundle = Bundle::open(path, &VerifyPolicy::integrity_only()).map_err(bundle_err(path))?;
    let scales = activation_scales(&bundle, path)?;
    if let Some(g) = scales.keys().find(|g| bundle.graph(g).is_none()) {
        return Err(invalid(format!(
            "activation ranges name graph `{g}`, which the bundle lacks"
        )));
    }
    let mut sim = Simulation::default();
    let mut manifest = bundle.manifest().clone();
    manifest.model.name = format!("{}-int8sim", manifest.model.name);
    let mut graphs = Vec::new();
    for name in bundle.graph_names() {
        let bytes = bundle.graph(name).unwrap_or_default();
        let Some(graph_scales) = scales.get(name) else {
            graphs.push((name.to_string(), bytes.to_vec()));
            continue;
        };
        let mut model = pb::ModelProto::decode(bytes)
            .map_err(|e| invalid(format!("graph `{name}` does not decode: {e}")))?;
        let (pairs, rewired) = insert_activation_qdq(&mut model, graph_scales)
            .map_err(|e| invalid(format!("graph `{name}`: {e}")))?;
        sim.pairs.insert(name.to_string(), pairs);
        sim.rewired_inputs.insert(name.to_string(), rewired);
        graphs.push((name.to_string(), model.encode_to_vec()));
    }
    manifest.extra.insert(
        "int8_simulation".into(),
        serde_json::json!({
            "what": "evaluation only: per-tensor int8 QuantizeLinear/DequantizeLinear (zero point 0) on every calibrated activation, in front of the operators that read it; weights as the int8 bundle stores them",
            "source_bundle_sha256": edgeseg_runtime::bundle::hex(&bundle.file_sha256()),
            "pairs": sim.pairs,
            "rewired_inputs": sim.rewired_inputs,
        }),
    );
    let mut w = BundleWriter::new(manifest);
    for (name, bytes) in graphs {
        w = w.graph(&name, bytes);
    }
    for t in bundle.tensors() {
        w = w.tensor(t.name, t.dtype, t.shape, t.bytes.to_vec());
    }
    w.write_to(out).map_err(bundle_err(out))?;
    Ok(sim)
}
