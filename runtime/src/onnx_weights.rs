//! Graph weights live once per bundle, in its tensor table.
//!
//! An exported ONNX graph carries its weights as initializers. When a bundle
//! is built, [`externalize`] moves every float initializer of at least
//! [`EXTERNALIZE_MIN_ELEMENTS`] elements into the bundle's tensor table (named
//! `<graph section>/<initializer>`, 64-byte aligned, where the GPU backend
//! uploads them from) and leaves in the graph an initializer with the same
//! name, type and shape, no data and `data_location = EXTERNAL`. When a bundle
//! is opened, [`attach`] fills those initializers back from the tensor table,
//! checking dtype and shape, before the graph is handed to tract. The graph
//! sections stay valid ONNX and the weights are stored once.
//!
//! A quantized bundle (`edgeseg-tools quantize`) stores some of those tensors as
//! `i8` + per-channel scales or as `f16`, with the scheme in the manifest's
//! `quantization` map; [`attach`] dequantizes them exactly to `f32` (see
//! [`crate::quant`]), so the graph tract runs is float.

use prost::Message;
use tract_onnx::pb;

use crate::bundle::{Bundle, DType};
use crate::quant;

/// Float initializers with at least this many elements go to the tensor table;
/// smaller ones (scalars, shapes) stay inline in the graph.
pub const EXTERNALIZE_MIN_ELEMENTS: usize = 16;
/// The `external_data` location recorded in stripped initializers.
pub const LOCATION: &str = "bundle:tensors";

/// A tensor moved out of a graph.
#[derive(Debug, Clone)]
pub struct ExternalTensor {
    /// Name in the tensor table (`<graph>/<initializer>`).
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Shape.
    pub shape: Vec<u64>,
    /// Little-endian elements.
    pub bytes: Vec<u8>,
}

/// Why a graph's weights could not be split or re-attached.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The graph section is not a valid ONNX protobuf.
    #[error("graph `{graph}` is not a valid ONNX model: {reason}")]
    Decode {
        /// Graph section name.
        graph: String,
        /// The protobuf error.
        reason: String,
    },
    /// An external initializer has no tensor in the bundle, or one that does
    /// not match its declared type or shape.
    #[error("graph `{graph}`: initializer `{name}`: {reason}")]
    Initializer {
        /// Graph section name.
        graph: String,
        /// Initializer name.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

fn elem_count(dims: &[i64]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| {
        usize::try_from(d).ok().and_then(|d| acc.checked_mul(d))
    })
}

/// Moves the large float initializers of `model` out (see the module doc).
/// Initializers that hold their values in `float_data` are converted to
/// little-endian bytes.
pub fn externalize(model: &mut pb::ModelProto, graph: &str) -> Vec<ExternalTensor> {
    let mut out = Vec::new();
    let Some(g) = model.graph.as_mut() else {
        return out;
    };
    for init in &mut g.initializer {
        if init.data_type != pb::tensor_proto::DataType::Float as i32 {
            continue;
        }
        let Some(n) = elem_count(&init.dims) else {
            continue;
        };
        if n < EXTERNALIZE_MIN_ELEMENTS {
            continue;
        }
        let bytes = if !init.raw_data.is_empty() {
            std::mem::take(&mut init.raw_data)
        } else {
            let mut b = Vec::with_capacity(init.float_data.len() * 4);
            for v in init.float_data.drain(..) {
                b.extend_from_slice(&v.to_le_bytes());
            }
            b
        };
        if bytes.len() != n * 4 {
            continue; // malformed; leave it for tract to reject with its own message
        }
        let name = format!("{graph}/{}", init.name);
        init.data_location = Some(pb::tensor_proto::DataLocation::External as i32);
        init.external_data = vec![
            pb::StringStringEntryProto {
                key: "location".into(),
                value: LOCATION.into(),
            },
            pb::StringStringEntryProto {
                key: "tensor".into(),
                value: name.clone(),
            },
        ];
        out.push(ExternalTensor {
            name,
            dtype: DType::F32,
            shape: init.dims.iter().map(|&d| d as u64).collect(),
            bytes,
        });
    }
    out
}

/// Decodes graph section `graph` of `bundle` and fills its external
/// initializers from the bundle's tensor table.
pub fn load_graph(bundle: &Bundle, graph: &str) -> Result<pb::ModelProto, WeightsError> {
    let bytes = bundle.graph(graph).ok_or_else(|| WeightsError::Decode {
        graph: graph.to_string(),
        reason: "no such graph section".into(),
    })?;
    let mut model = pb::ModelProto::decode(bytes).map_err(|e| WeightsError::Decode {
        graph: graph.to_string(),
        reason: e.to_string(),
    })?;
    attach(&mut model, bundle, graph)?;
    Ok(model)
}

/// Fills the external initializers of `model` from `bundle`'s tensor table: float
/// initializers get the tensor's f32 values (dequantized when the manifest says the
/// tensor is quantized), `INT8` initializers the stored `i8` values unchanged.
pub fn attach(
    model: &mut pb::ModelProto,
    bundle: &Bundle,
    graph: &str,
) -> Result<(), WeightsError> {
    let Some(g) = model.graph.as_mut() else {
        return Ok(());
    };
    for init in &mut g.initializer {
        if init.data_location != Some(pb::tensor_proto::DataLocation::External as i32) {
            continue;
        }
        let err = |reason: String| WeightsError::Initializer {
            graph: graph.to_string(),
            name: init.name.clone(),
            reason,
        };
        let location = init
            .external_data
            .iter()
            .find(|e| e.key == "location")
            .map(|e| e.value.as_str());
        if location != Some(LOCATION) {
            return Err(err(format!(
                "external data location {location:?} is not this bundle's tensor table"
            )));
        }
        let tname = init
            .external_data
            .iter()
            .find(|e| e.key == "tensor")
            .map(|e| e.value.clone())
            .ok_or_else(|| err("no tensor name in external_data".into()))?;
        let t = bundle
            .tensor(&tname)
            .ok_or_else(|| err(format!("tensor `{tname}` is not in the bundle")))?;
        let raw_int8 = init.data_type == pb::tensor_proto::DataType::Int8 as i32;
        if init.data_type != pb::tensor_proto::DataType::Float as i32 && !raw_int8 {
            return Err(err(format!(
                "only float and int8 external initializers are supported (graph type {})",
                init.data_type
            )));
        }
        if raw_int8 && t.dtype != DType::I8 {
            return Err(err(format!(
                "an int8 initializer needs an int8 tensor; `{tname}` is {:?}",
                t.dtype
            )));
        }
        let same_shape = t.shape.len() == init.dims.len()
            && t.shape.iter().zip(&init.dims).all(|(&a, &b)| a as i64 == b);
        if !same_shape {
            return Err(err(format!(
                "bundle tensor shape {:?} differs from the graph's {:?}",
                t.shape, init.dims
            )));
        }
        let scheme = bundle.manifest().quantization.get(&tname);
        // stored f32 values, and the int8 values of int8 graphs (ConvInteger/
        // MatMulInteger, which apply the scales themselves), are taken as they are
        let raw = if raw_int8 || (scheme.is_none() && t.dtype == DType::F32) {
            t.bytes.to_vec()
        } else {
            let values = quant::dequantize(&t, scheme, |n| bundle.tensor(n))
                .map_err(|e| err(e.to_string()))?;
            quant::f32_le_bytes(&values)
        };
        init.raw_data = raw;
        init.data_location = None;
        init.external_data.clear();
    }
    Ok(())
}
