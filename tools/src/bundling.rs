//! Export, bundle, inspect and sign: how a model leaves the offline tools as
//! one verified file.
//!
//! * [`export_litemedsam`] writes `encoder.onnx`, `decoder.onnx` and a draft
//!   `manifest.json` (a bundle manifest without sections) into a folder.
//! * [`build_bundle`] turns such a folder into a bundle: the graphs become
//!   graph sections with their large weights moved to the tensor table (see
//!   `edgeseg_runtime::onnx_weights`), the manifest is completed, and the file
//!   is optionally signed.
//! * [`inspect`] verifies a bundle and describes it; [`resign`] re-signs one.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use edgeseg_models::export::{export_litemedsam as export_graphs, onnx};
use edgeseg_models::litemedsam::LiteMedSamConfig;
use edgeseg_runtime::backend::cpu::{DECODER_GRAPH, ENCODER_GRAPH};
use edgeseg_runtime::bundle::{
    Architecture, Bundle, BundleWriter, DType, InputSpec, Layout, Manifest, ModelInfo,
    Normalization, OutputSpec, PromptKind, Provenance, VerifyPolicy,
};
use edgeseg_runtime::onnx_weights;

use crate::distill::provenance::{TrainingProvenance, PROVENANCE_FILE};
use prost::Message;
use tract_onnx::pb;

/// Name of the draft manifest written next to exported graphs.
pub const DRAFT_MANIFEST: &str = "manifest.json";

/// What [`export_litemedsam`] wrote.
#[derive(Debug)]
pub struct ExportSummary {
    /// Paths written.
    pub files: Vec<PathBuf>,
    /// Operator histogram per graph.
    pub ops: Vec<(String, Vec<(String, usize)>)>,
    /// Parameters in the checkpoint (float tensors only).
    pub parameters: u64,
}

/// Exports the LiteMedSAM checkpoint at `weights` into `out_dir`.
pub fn export_litemedsam(
    weights: &Path,
    out_dir: &Path,
    cfg: &LiteMedSamConfig,
    name: &str,
    version: &str,
    command: &str,
) -> Result<ExportSummary> {
    let map = edgeseg_models::weights::read_checkpoint(weights)
        .with_context(|| format!("reading {}", weights.display()))?;
    let graphs = export_graphs(&map, cfg, &weights.display().to_string())?;
    let parameters: u64 = map
        .iter()
        // training-only tensors (BatchNorm counters, the distillation adapter) are not exported
        .filter(|(k, t)| {
            t.dtype().is_float()
                && !k.ends_with("num_batches_tracked")
                && !k.starts_with(crate::distill::train::ADAPTER_PREFIX)
        })
        .map(|(_, t)| t.elem_count() as u64)
        .sum();
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let mut files = Vec::new();
    let mut ops = Vec::new();
    for (file, model) in [
        (ENCODER_GRAPH, &graphs.encoder),
        (DECODER_GRAPH, &graphs.decoder),
    ] {
        let p = out_dir.join(file);
        std::fs::write(&p, onnx::encode(model))
            .with_context(|| format!("writing {}", p.display()))?;
        ops.push((file.to_string(), onnx::op_histogram(model)));
        files.push(p);
    }
    let training = if *cfg == LiteMedSamConfig::litemedsam() {
        None
    } else {
        TrainingProvenance::read_beside(weights)?
    };
    let manifest = litemedsam_manifest(
        cfg,
        name,
        version,
        parameters,
        weights,
        command,
        training.as_ref(),
    );
    let p = out_dir.join(DRAFT_MANIFEST);
    std::fs::write(&p, serde_json::to_string_pretty(&manifest)?)
        .with_context(|| format!("writing {}", p.display()))?;
    files.push(p);
    Ok(ExportSummary {
        files,
        ops,
        parameters,
    })
}

fn litemedsam_manifest(
    cfg: &LiteMedSamConfig,
    name: &str,
    version: &str,
    parameters: u64,
    weights: &Path,
    command: &str,
    training: Option<&TrainingProvenance>,
) -> Manifest {
    let e = cfg.embedding_size() as u64;
    let d = cfg.prompt_embed_dim as u64;
    let k = (cfg.num_multimask_outputs + 1) as u64;
    let low = cfg.low_res_size() as u64;
    let mut details = BTreeMap::new();
    let j = |v: serde_json::Value| v;
    details.insert("embed_dims".into(), j(serde_json::json!(cfg.embed_dims)));
    details.insert("depths".into(), j(serde_json::json!(cfg.depths)));
    details.insert("num_heads".into(), j(serde_json::json!(cfg.num_heads)));
    details.insert(
        "window_sizes".into(),
        j(serde_json::json!(cfg.window_sizes)),
    );
    details.insert("embedding".into(), j(serde_json::json!([d, e, e])));
    details.insert(
        "decoder_depth".into(),
        j(serde_json::json!(cfg.decoder_depth)),
    );
    details.insert("box_prior".into(), j(serde_json::json!(cfg.box_prior)));
    details.insert("onnx_opset".into(), j(serde_json::json!(onnx::OPSET)));
    details.insert(
        "point_labels".into(),
        j(serde_json::json!({"-1": "padding", "0": "background", "1": "foreground", "2": "box top-left", "3": "box bottom-right"})),
    );
    let f32o = |name: &str, shape: Vec<Option<u64>>, description: &str| OutputSpec {
        name: name.into(),
        dtype: DType::F32,
        shape,
        description: description.into(),
    };
    Manifest {
        model: ModelInfo {
            family: "litemedsam".into(),
            name: name.into(),
            version: version.into(),
        },
        architecture: Architecture {
            summary: format!(
                "TinyViT image encoder (dims {:?}, depths {:?}) + SAM prompt encoder and two-way mask decoder",
                cfg.embed_dims, cfg.depths
            ),
            parameters,
            details,
        },
        input: InputSpec {
            height: cfg.img_size as u32,
            width: cfg.img_size as u32,
            channels: 3,
            layout: Layout::Nchw,
            normalization: Normalization::MinMax,
        },
        prompts: vec![PromptKind::Box, PromptKind::Point],
        outputs: vec![
            f32o(
                "image_embeddings",
                vec![Some(1), Some(d), Some(e), Some(e)],
                "encoder output",
            ),
            f32o(
                "low_res_logits",
                vec![Some(1), Some(k), Some(low), Some(low)],
                "mask logits in the padded input frame; index 0 is the single-mask output",
            ),
            f32o("iou_predictions", vec![Some(1), Some(k)], "predicted IoU per mask"),
        ],
        quantization: BTreeMap::new(),
        provenance: match training {
            Some(t) => Provenance {
                teacher: Some(t.teacher.clone()),
                training_data: t.training_data.clone(),
                commands: t.commands.iter().cloned().chain([command.to_string()]).collect(),
                metrics: BTreeMap::new(),
            },
            None if *cfg == LiteMedSamConfig::litemedsam() => Provenance {
                teacher: None,
                training_data: vec!["LiteMedSAM release (bowang-lab/MedSAM, LiteMedSAM branch), trained by its authors".into()],
                commands: vec![command.to_string()],
                metrics: BTreeMap::new(),
            },
            None => Provenance {
                teacher: None,
                training_data: vec![format!(
                    "unknown: no {PROVENANCE_FILE} beside the weights"
                )],
                commands: vec![command.to_string()],
                metrics: BTreeMap::new(),
            },
        },
        sections: Vec::new(),
        extra: BTreeMap::from([(
            "source_weights".into(),
            serde_json::json!(weights.file_name().map(|n| n.to_string_lossy().to_string())),
        )]),
    }
}

/// What [`build_bundle`] wrote.
#[derive(Debug)]
pub struct BundleSummary {
    /// Bundle size in bytes.
    pub bytes: u64,
    /// Tensors moved to the tensor table.
    pub tensors: usize,
    /// Bytes of tensor data.
    pub tensor_bytes: u64,
}

/// Builds a bundle from an export folder (graphs + draft manifest).
pub fn build_bundle(
    graph_dir: &Path,
    out: &Path,
    key: Option<&Path>,
    command: &str,
) -> Result<BundleSummary> {
    let mp = graph_dir.join(DRAFT_MANIFEST);
    let text = std::fs::read_to_string(&mp).with_context(|| format!("reading {}", mp.display()))?;
    let mut manifest: Manifest =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", mp.display()))?;
    manifest.provenance.commands.push(command.to_string());
    let mut writer = BundleWriter::new(manifest);
    let mut tensors = 0usize;
    let mut tensor_bytes = 0u64;
    for graph in [ENCODER_GRAPH, DECODER_GRAPH] {
        let p = graph_dir.join(graph);
        let bytes = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
        let mut model = pb::ModelProto::decode(bytes.as_slice())
            .with_context(|| format!("{} is not an ONNX model", p.display()))?;
        let moved = onnx_weights::externalize(&mut model, graph);
        for t in moved {
            tensors += 1;
            tensor_bytes += t.bytes.len() as u64;
            writer = writer.tensor(t.name, t.dtype, &t.shape, t.bytes);
        }
        writer = writer.graph(graph, model.encode_to_vec());
    }
    if let Some(k) = key {
        let sk = crate::keys::read_signing_key(k)?;
        writer = writer.sign_with(sk);
    }
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    writer
        .write_to(out)
        .with_context(|| format!("writing {}", out.display()))?;
    let bytes = std::fs::metadata(out)?.len();
    Ok(BundleSummary {
        bytes,
        tensors,
        tensor_bytes,
    })
}

/// Verification policy from an optional pinned public key file.
pub fn policy(pubkey: Option<&Path>) -> Result<VerifyPolicy> {
    Ok(match pubkey {
        Some(p) => {
            let raw = crate::keys::read_public_key(p)?;
            let vk = ed25519_dalek::VerifyingKey::from_bytes(&raw)
                .with_context(|| format!("{} is not a valid Ed25519 public key", p.display()))?;
            VerifyPolicy::require_signature(vk)
        }
        None => VerifyPolicy::integrity_only(),
    })
}

/// Opens and verifies `path`, and describes it (manifest, sections, tensors).
pub fn inspect(path: &Path, pubkey: Option<&Path>, all_tensors: bool) -> Result<String> {
    let b = Bundle::open(path, &policy(pubkey)?)
        .with_context(|| format!("verifying {}", path.display()))?;
    let m = b.manifest();
    let mut s = String::new();
    writeln!(s, "bundle {}", path.display())?;
    writeln!(
        s,
        "  verified: whole-file and per-section SHA-256{}",
        match (b.signer(), pubkey) {
            (Some(_), Some(_)) => ", Ed25519 signature by the pinned key",
            (Some(_), None) =>
                ", Ed25519 signature (by the key embedded in the bundle; pass --pubkey to pin one)",
            (None, _) => "; unsigned",
        }
    )?;
    if let Some(k) = b.signer() {
        writeln!(
            s,
            "  signer: {}",
            edgeseg_runtime::bundle::hex(k.as_bytes())
        )?;
    }
    writeln!(
        s,
        "  sha256: {}",
        edgeseg_runtime::bundle::hex(&b.file_sha256())
    )?;
    writeln!(s, "  size: {} bytes", b.as_bytes().len())?;
    writeln!(
        s,
        "model: {} {} {} ({} parameters)",
        m.model.family, m.model.name, m.model.version, m.architecture.parameters
    )?;
    writeln!(s, "  {}", m.architecture.summary)?;
    writeln!(
        s,
        "input: {}x{}x{} {:?} {:?}",
        m.input.channels, m.input.height, m.input.width, m.input.layout, m.input.normalization
    )?;
    writeln!(s, "prompts: {:?}", m.prompts)?;
    for o in &m.outputs {
        writeln!(
            s,
            "output {}: {:?} {:?} {}",
            o.name, o.dtype, o.shape, o.description
        )?;
    }
    for g in b.graph_names() {
        let len = b.graph(g).map_or(0, |x| x.len());
        writeln!(s, "graph {g}: {len} bytes")?;
    }
    let n = b.tensors().count();
    let total: usize = b.tensors().map(|t| t.bytes.len()).sum();
    writeln!(s, "tensors: {n} ({total} bytes)")?;
    if all_tensors {
        for t in b.tensors() {
            writeln!(s, "  {} {:?} {:?}", t.name, t.dtype, t.shape)?;
        }
    }
    if !m.quantization.is_empty() {
        writeln!(s, "quantization: {} tensors", m.quantization.len())?;
    }
    writeln!(s, "provenance:")?;
    if let Some(t) = &m.provenance.teacher {
        writeln!(s, "  teacher: {t}")?;
    }
    for d in &m.provenance.training_data {
        writeln!(s, "  data: {d}")?;
    }
    for c in &m.provenance.commands {
        writeln!(s, "  command: {c}")?;
    }
    for (k, v) in &m.provenance.metrics {
        writeln!(s, "  metric {k}: {v}")?;
    }
    Ok(s)
}

/// Re-writes `input` signed with `key` into `out` (the bundle is verified
/// first; an existing signature is replaced).
pub fn resign(input: &Path, key: &Path, out: &Path) -> Result<()> {
    let b = Bundle::open(input, &VerifyPolicy::integrity_only())
        .with_context(|| format!("verifying {}", input.display()))?;
    let mut w = BundleWriter::new(b.manifest().clone());
    let names: Vec<String> = b.graph_names().map(str::to_string).collect();
    for g in names {
        let Some(bytes) = b.graph(&g) else {
            bail!("graph {g} vanished");
        };
        w = w.graph(g, bytes.to_vec());
    }
    for t in b.tensors() {
        w = w.tensor(t.name, t.dtype, t.shape, t.bytes.to_vec());
    }
    w = w.sign_with(crate::keys::read_signing_key(key)?);
    w.write_to(out)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}
