//! Export of our models to ONNX graphs, written from Rust with the ONNX
//! protobuf types (no Python): [`onnx`] is the graph builder, [`litemedsam`]
//! the exporter of the LiteMedSAM architecture (teacher, and any model built
//! with its modules and another configuration, such as the distilled
//! students), [`cost`] the FLOP count of exported graphs.

pub mod cost;
pub mod litemedsam;
pub mod onnx;

use tract_onnx::pb;

use crate::litemedsam::LiteMedSamConfig;
use crate::weights::TensorMap;
use crate::ModelError;

/// The two graphs of a promptable segmenter.
#[derive(Debug, Clone)]
pub struct ExportedGraphs {
    /// Image encoder: `image` → `image_embeddings`.
    pub encoder: pb::ModelProto,
    /// Prompt encoder + mask decoder: embeddings, points, labels → logits, IoU.
    pub decoder: pb::ModelProto,
}

/// Exports both graphs of a LiteMedSAM-architecture model from its
/// checkpoint tensors; `source` names the checkpoint in errors.
pub fn export_litemedsam(
    map: &TensorMap,
    cfg: &LiteMedSamConfig,
    source: &str,
) -> Result<ExportedGraphs, ModelError> {
    Ok(ExportedGraphs {
        encoder: litemedsam::export_encoder(map, cfg, source)?,
        decoder: litemedsam::export_decoder(map, cfg, source)?,
    })
}
