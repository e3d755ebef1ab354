//! The int8-compute form of an int8 bundle: graphs whose convolutions and matrix
//! products multiply int8 weights by int8 activations, the form tract's integer matmul
//! kernels run (SDOT `arm64simd_mmm_i32_8x8_dot` on ARMv8.2+ cores; `avx2_mmm_i32` on
//! x86, where it is 18–62× slower than f32: `docs/results/quantization.md`).
//!
//! For every `Conv` and `MatMul` whose weight the int8 bundle stores as int8 per output
//! channel, and whose activation has a calibrated scale `a`
//! (`extra.quantization.activation_ranges`):
//!
//! ```text
//! Conv(X, W, B)  →  Xq = QuantizeLinear(X, a, 0:int8)          (one per activation)
//!                   Y  = Cast<f32>(ConvInteger(Xq, Wq, 0, 0)) · (a·w[c]) + B
//! MatMul(X, W)   →  Y  = Cast<f32>(MatMulInteger(Xq, Wq, 0, 0)) · (a·w[n])
//! MatMul(W, X)   →  Y  = Cast<f32>(MatMulInteger(Wq, Xq, 0, 0)) · (a·w[m])ᵀ
//! ```
//!
//! `Wq` is the bundle's int8 tensor itself (an int8 external initializer, read raw by
//! the runtime), `w[c]` its per-channel scales. Only per-tensor `QuantizeLinear` and
//! integer products are used, which tract implements exactly; no per-channel QDQ
//! operator appears (tract reads only their first scale). The products accumulate in
//! int32, so such a graph computes what [`crate::int8sim`]'s simulation does, up to
//! float rounding. `ConvTranspose` (no integer form in ONNX) and `Gemm` stay float.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use edgeseg_runtime::bundle::{Bundle, BundleWriter, DType, Quantization, VerifyPolicy};
use edgeseg_runtime::onnx_weights::LOCATION;
use prost::Message;
use tract_onnx::pb;

use crate::int8sim::{activation_index, activation_scales, scalar_initializer, Int8SimError};

/// What [`convert`] did, per graph.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Conversion {
    /// Operators now computed in int8, per graph and op type.
    pub int8_ops: BTreeMap<String, BTreeMap<String, usize>>,
    /// Int8-able operators left in float, with the reason, per graph.
    pub kept_float: BTreeMap<String, Vec<String>>,
}

fn attr<'a>(node: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

/// The tensor-table name of an external initializer, if `init` is one of this bundle.
fn external_tensor(init: &pb::TensorProto) -> Option<String> {
    if init.data_location != Some(pb::tensor_proto::DataLocation::External as i32) {
        return None;
    }
    let field = |k: &str| {
        init.external_data
            .iter()
            .find(|e| e.key == k)
            .map(|e| e.value.clone())
    };
    (field("location").as_deref() == Some(LOCATION))
        .then(|| field("tensor"))
        .flatten()
}

fn f32_initializer(name: String, dims: Vec<i64>, values: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name,
        dims,
        data_type: pb::tensor_proto::DataType::Float as i32,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn i64_initializer(name: String, values: &[i64]) -> pb::TensorProto {
    pb::TensorProto {
        name,
        dims: vec![values.len() as i64],
        data_type: pb::tensor_proto::DataType::Int64 as i32,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn node(name: String, op: &str, input: Vec<String>, output: String) -> pb::NodeProto {
    pb::NodeProto {
        name,
        op_type: op.into(),
        input,
        output: vec![output],
        ..Default::default()
    }
}

/// Rewrites one graph; `scales` are its activations' scales.
fn convert_graph(
    model: &mut pb::ModelProto,
    graph: &str,
    bundle: &Bundle,
    scales: &BTreeMap<String, f32>,
    report: &mut Conversion,
) -> Result<(), String> {
    let g = model
        .graph
        .as_mut()
        .ok_or_else(|| "the model has no graph".to_string())?;
    let init_names: Vec<String> = g.initializer.iter().map(|i| i.name.clone()).collect();
    let init_refs: Vec<&str> = init_names.iter().map(String::as_str).collect();
    let inits: BTreeMap<String, pb::TensorProto> = g
        .initializer
        .iter()
        .map(|i| (i.name.clone(), i.clone()))
        .collect();
    let mut new_nodes: Vec<pb::NodeProto> = Vec::with_capacity(g.node.len() * 2);
    let mut new_inits: Vec<pb::TensorProto> = Vec::new();
    let mut quantized: BTreeMap<String, String> = BTreeMap::new(); // activation → Xq
    let zero = format!("{graph}.int8c.zero");
    new_inits.push(scalar_initializer(
        zero.clone(),
        pb::tensor_proto::DataType::Int8,
        vec![0],
    ));
    let kept = report.kept_float.entry(graph.to_string()).or_default();
    let counts = report.int8_ops.entry(graph.to_string()).or_default();
    for (i, n) in g.node.iter().enumerate() {
        let Some(ai) = activation_index(n, &init_refs) else {
            new_nodes.push(n.clone());
            continue;
        };
        let wi = 1 - ai;
        let label = format!("{} `{}`", n.op_type, n.name);
        let keep = |why: &str, kept: &mut Vec<String>| kept.push(format!("{label}: {why}"));
        let act = &n.input[ai];
        let Some(&a_scale) = scales.get(act) else {
            keep("no activation scale", kept);
            new_nodes.push(n.clone());
            continue;
        };
        if !matches!(n.op_type.as_str(), "Conv" | "MatMul") {
            keep("no integer form in ONNX (or not converted)", kept);
            new_nodes.push(n.clone());
            continue;
        }
        if attr(n, "auto_pad").is_some_and(|a| !a.s.is_empty() && a.s != b"NOTSET") {
            // explicit pads only: what the exporter writes
            keep("auto_pad", kept);
            new_nodes.push(n.clone());
            continue;
        }
        let w_init = &inits[&n.input[wi]];
        let Some(tensor) = external_tensor(w_init) else {
            keep("weight not in the tensor table", kept);
            new_nodes.push(n.clone());
            continue;
        };
        let rank = w_init.dims.len();
        let Some(view) = bundle.tensor(&tensor) else {
            return Err(format!(
                "{label}: weight tensor `{tensor}` is not in the bundle"
            ));
        };
        let want_axis = match (n.op_type.as_str(), wi, rank) {
            ("Conv", 1, r) if r >= 3 => 0,
            ("MatMul", 1, 2) => 1,
            ("MatMul", 0, 2) => 0,
            _ => {
                keep("weight layout not converted", kept);
                new_nodes.push(n.clone());
                continue;
            }
        };
        let Some(Quantization::PerChannel {
            axis,
            scales: scale_name,
            zero_points: None,
        }) = bundle.manifest().quantization.get(&tensor)
        else {
            keep("weight is not int8 per output channel", kept);
            new_nodes.push(n.clone());
            continue;
        };
        if view.dtype != DType::I8 || *axis as usize != want_axis {
            keep("weight is not int8 on its output-channel axis", kept);
            new_nodes.push(n.clone());
            continue;
        }
        let w_scales = bundle
            .tensor(scale_name)
            .ok_or_else(|| format!("{label}: scale tensor `{scale_name}` is not in the bundle"))
            .and_then(|v| edgeseg_runtime::quant::scale_values(&v).map_err(|e| e.to_string()))?;
        let channels = w_init.dims[want_axis];
        if w_scales.len() as i64 != channels {
            return Err(format!(
                "{label}: {} scales for {channels} output channels",
                w_scales.len()
            ));
        }
        let combined: Vec<f32> = w_scales.iter().map(|w| w * a_scale).collect();
        if combined.iter().any(|c| !c.is_finite()) {
            return Err(format!("{label}: a combined scale is not finite"));
        }
        // the activation, quantized once
        let xq = quantized
            .entry(act.clone())
            .or_insert_with(|| {
                let s = format!("{act}.int8c.scale");
                new_inits.push(scalar_initializer(
                    s.clone(),
                    pb::tensor_proto::DataType::Float,
                    a_scale.to_le_bytes().to_vec(),
                ));
                let q = format!("{act}.int8c.q");
                new_nodes.push(node(
                    format!("{act}.int8c.quantize"),
                    "QuantizeLinear",
                    vec![act.clone(), s, zero.clone()],
                    q.clone(),
                ));
                q
            })
            .clone();
        // the weight, as stored
        let wq = format!("{}.int8c", n.input[wi]);
        let mut w_int8 = w_init.clone();
        w_int8.name = wq.clone();
        w_int8.data_type = pb::tensor_proto::DataType::Int8 as i32;
        new_inits.push(w_int8);
        let out = n.output.first().cloned().unwrap_or_default();
        let base = format!("{}.int8c{i}", n.name);
        let acc = format!("{base}.i32");
        let mut integer = match n.op_type.as_str() {
            "Conv" => node(
                format!("{base}.conv_integer"),
                "ConvInteger",
                vec![xq, wq, zero.clone(), zero.clone()],
                acc.clone(),
            ),
            _ => {
                let inputs = if ai == 0 {
                    vec![xq, wq, zero.clone(), zero.clone()]
                } else {
                    vec![wq, xq, zero.clone(), zero.clone()]
                };
                node(
                    format!("{base}.matmul_integer"),
                    "MatMulInteger",
                    inputs,
                    acc.clone(),
                )
            }
        };
        if n.op_type == "Conv" {
            integer.attribute = n.attribute.clone();
        }
        new_nodes.push(integer);
        let accf = format!("{base}.f32");
        let mut cast = node(format!("{base}.cast"), "Cast", vec![acc], accf.clone());
        cast.attribute.push(pb::AttributeProto {
            name: "to".into(),
            r#type: pb::attribute_proto::AttributeType::Int as i32,
            i: pb::tensor_proto::DataType::Float as i64,
            ..Default::default()
        });
        new_nodes.push(cast);
        // the per-channel scale, broadcast on the output-channel axis
        let scale_dims: Vec<i64> = match (n.op_type.as_str(), ai) {
            ("Conv", _) => {
                let mut d = vec![channels];
                d.extend(std::iter::repeat_n(1, rank - 2));
                d
            }
            (_, 0) => vec![channels],
            _ => vec![channels, 1],
        };
        let scale = format!("{base}.scale");
        new_inits.push(f32_initializer(
            scale.clone(),
            scale_dims.clone(),
            &combined,
        ));
        let has_bias = n.op_type == "Conv" && n.input.get(2).is_some_and(|b| !b.is_empty());
        let scaled = if has_bias {
            format!("{base}.scaled")
        } else {
            out.clone()
        };
        new_nodes.push(node(
            format!("{base}.rescale"),
            "Mul",
            vec![accf, scale],
            scaled.clone(),
        ));
        if has_bias {
            let shape = format!("{base}.bias_shape");
            new_inits.push(i64_initializer(shape.clone(), &scale_dims));
            let bias = format!("{base}.bias");
            new_nodes.push(node(
                format!("{base}.bias_reshape"),
                "Reshape",
                vec![n.input[2].clone(), shape],
                bias.clone(),
            ));
            new_nodes.push(node(
                format!("{base}.bias_add"),
                "Add",
                vec![scaled, bias],
                out,
            ));
        }
        *counts.entry(n.op_type.clone()).or_default() += 1;
    }
    g.node = new_nodes;
    g.initializer.extend(new_inits);
    // float copies of converted weights that nothing reads any more
    let used: std::collections::BTreeSet<&String> =
        g.node.iter().flat_map(|n| n.input.iter()).collect();
    let keep_init: Vec<bool> = g
        .initializer
        .iter()
        .map(|i| used.contains(&i.name) || g.input.iter().any(|v| v.name == i.name))
        .collect();
    let mut k = keep_init.into_iter();
    g.initializer.retain(|_| k.next().unwrap_or(true));
    Ok(())
}

/// Writes to `out` the int8-compute form of the int8 bundle at `path`: the same
/// manifest (model name suffixed `-int8c`, `extra.int8_compute` added), the same
/// tensors, and graphs rewritten as described in the module documentation.
pub fn convert(path: &Path, out: &Path) -> Result<Conversion, Int8SimError> {
    let invalid = |reason: String| Int8SimError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let bundle_err = |p: PathBuf| move |source| Int8SimError::Bundle { path: p, source };
    let bundle = Bundle::open(path, &VerifyPolicy::integrity_only())
        .map_err(bundle_err(path.to_path_buf()))?;
    let scales = activation_scales(&bundle, path)?;
    let mut report = Conversion::default();
    let mut graphs = Vec::new();
    for name in bundle.graph_names() {
        let bytes = bundle.graph(name).unwrap_or_default();
        let Some(graph_scales) = scales.get(name) else {
            graphs.push((name.to_string(), bytes.to_vec()));
            continue;
        };
        let mut model = pb::ModelProto::decode(bytes)
            .map_err(|e| invalid(format!("graph `{name}` does not decode: {e}")))?;
        convert_graph(&mut model, name, &bundle, graph_scales, &mut report)
            .map_err(|e| invalid(format!("graph `{name}`: {e}")))?;
        graphs.push((name.to_string(), model.encode_to_vec()));
    }
    let mut manifest = bundle.manifest().clone();
    manifest.model.name = format!("{}-int8c", manifest.model.name);
    manifest.extra.insert(
        "int8_compute".into(),
        serde_json::json!({
            "form": "Conv → QuantizeLinear(per-tensor, int8, zero point 0) + ConvInteger + Cast + Mul(per-channel scale) + Add(bias); MatMul → QuantizeLinear + MatMulInteger + Cast + Mul; ConvTranspose and Gemm float",
            "source_bundle_sha256": edgeseg_runtime::bundle::hex(&bundle.file_sha256()),
            "int8_ops": report.int8_ops,
            "kept_float": report.kept_float,
        }),
    );
    let mut w = BundleWriter::new(manifest);
    for (name, bytes) in graphs {
        w = w.graph(&name, bytes);
    }
    for t in bundle.tensors() {
        w = w.tensor(t.name, t.dtype, t.shape, t.bytes.to_vec());
    }
    w.write_to(out).map_err(bundle_err(out.to_path_buf()))?;
    Ok(report)
}
