//! Static compute cost of an exported graph, measured by tract: the graph is
//! loaded with concrete input shapes, typed and decluttered, and the
//! multiply-accumulates of its convolutions, transposed convolutions and
//! matrix products (tract's `EinSum`) are summed. FLOP = 2 × MAC, the
//! convention of `../shared/baselines.md` ("conv/matmul only"); element-wise
//! work (norms, GELU, softmax) is reported apart.

use std::collections::BTreeMap;

use tract_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::cnn::{Conv, Deconv};
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::Cost;

use crate::litemedsam::LiteMedSamConfig;
use crate::ModelError;

/// The cost of one run of a graph.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GraphCost {
    /// Multiply-accumulates of convolutions and matrix products.
    pub macs: u64,
    /// Multiply-accumulates tract counts in other ops (element-wise, reductions).
    pub other_macs: u64,
    /// `macs` per tract op name (`Conv`, `Deconv`, `EinSum`).
    pub macs_by_op: BTreeMap<String, u64>,
}

impl GraphCost {
    /// GFLOP of convolutions and matrix products (2 × MAC / 1e9).
    pub fn gflop(&self) -> f64 {
        2.0 * self.macs as f64 / 1e9
    }
}

fn err(msg: impl std::fmt::Display) -> ModelError {
    ModelError::Checkpoint {
        path: "<exported graph>".into(),
        msg: format!("graph cost: {msg}"),
    }
}

/// The cost of an ONNX graph run once with the given f32 input shapes (one per
/// graph input, in order).
pub fn graph_cost(
    model: &pb::ModelProto,
    input_shapes: &[Vec<usize>],
) -> Result<GraphCost, ModelError> {
    let mut m = tract_onnx::onnx()
        .model_for_proto_model(model)
        .map_err(err)?;
    for (ix, shape) in input_shapes.iter().enumerate() {
        m = m
            .with_input_fact(ix, f32::fact(shape).into())
            .map_err(err)?;
    }
    let m = m
        .into_typed()
        .map_err(err)?
        .into_decluttered()
        .map_err(err)?;
    let mut cost = GraphCost::default();
    for id in m.eval_order().map_err(err)? {
        let node = m.node(id);
        let inputs = m.node_input_facts(id).map_err(err)?;
        let macs = if let Some(dc) = node.op_as::<Deconv>() {
            // tract gives transposed convolutions no cost: every input point
            // meets every kernel tap of its group's output channels
            let shape = inputs[0]
                .shape
                .as_concrete()
                .ok_or_else(|| err(format!("{}: symbolic input shape", node.name)))?;
            let ds = dc
                .pool_spec
                .data_format
                .shape(shape.to_vec())
                .map_err(err)?;
            let n = ds.n().copied().unwrap_or(1);
            let hw: usize = ds.hw_dims().iter().product();
            let k: usize = dc.pool_spec.kernel_shape.iter().product();
            Some((n * ds.c() * hw * k * dc.pool_spec.output_channels / dc.group) as u64)
        } else {
            None
        };
        let is_linear =
            macs.is_some() || node.op_as::<Conv>().is_some() || node.op_as::<EinSum>().is_some();
        let mut n_macs = macs.unwrap_or(0);
        if macs.is_none() {
            for (c, n) in node.op.cost(&inputs).map_err(err)? {
                if let Cost::FMA(_) = c {
                    let n = n
                        .to_i64()
                        .map_err(|_| err(format!("{}: symbolic cost {n}", node.name)))?;
                    n_macs += n as u64;
                }
            }
        }
        if is_linear {
            cost.macs += n_macs;
            *cost
                .macs_by_op
                .entry(node.op.name().to_string())
                .or_default() += n_macs;
        } else {
            cost.other_macs += n_macs;
        }
    }
    Ok(cost)
}

/// Encoder and decoder cost of a LiteMedSAM-architecture model.
#[derive(Debug, Clone, PartialEq)]
pub struct LiteMedSamCost {
    /// The image encoder on one `1×3×S×S` frame.
    pub encoder: GraphCost,
    /// The prompt encoder + mask decoder for one box (two corner points).
    pub decoder_box: GraphCost,
}

/// The cost of exported LiteMedSAM graphs: the encoder on one frame and the
/// decoder for one box prompt.
pub fn litemedsam_cost(
    graphs: &super::ExportedGraphs,
    cfg: &LiteMedSamConfig,
) -> Result<LiteMedSamCost, ModelError> {
    let (s, d, e) = (cfg.img_size, cfg.prompt_embed_dim, cfg.embedding_size());
    Ok(LiteMedSamCost {
        encoder: graph_cost(&graphs.encoder, &[vec![1, 3, s, s]])?,
        decoder_box: graph_cost(
            &graphs.decoder,
            &[vec![1, d, e, e], vec![1, 2, 2], vec![1, 2]],
        )?,
    })
}
