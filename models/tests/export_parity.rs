//! ONNX export parity: tract running the exported graphs must reproduce the
//! candle model within 1e-4 relative (max abs difference over max abs value).
//!
//! * A tiny LiteMedSAM-architecture model with deterministic pseudo-random
//!   weights (BatchNorm statistics, attention biases and norms included, so
//!   every folding done at export is exercised) runs by default, in seconds;
//!   so do the tiny student configuration (stride-4 3×3 stem, three decoder
//!   upscalings) and a stride-2 stem variant.
//! * The released teacher runs on one golden input when `shared/` is present
//!   (skipped with a message otherwise).

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use edgeseg_models::export::litemedsam::labels;
use edgeseg_models::export::{export_litemedsam, onnx, ExportedGraphs};
use edgeseg_models::litemedsam::{LiteMedSam, LiteMedSamConfig, PointPrompt, Prompt};
use edgeseg_models::weights::TensorMap;
use edgeseg_models::Mode;
use tract_onnx::prelude::*;

const TOL: f32 = 1e-4;

/// xorshift-style generator in [-1, 1).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

fn random_tiny() -> (LiteMedSam, TensorMap, LiteMedSamConfig) {
    random_model(LiteMedSamConfig::tiny())
}

fn random_model(cfg: LiteMedSamConfig) -> (LiteMedSam, TensorMap, LiteMedSamConfig) {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    LiteMedSam::new(vb, &cfg, Mode::Inference).expect("build tiny model");
    let mut names: Vec<(String, Vec<usize>)> = vm
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().dims().to_vec()))
        .collect();
    names.sort();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut map = TensorMap::new();
    for (name, dims) in names {
        let n: usize = dims.iter().product();
        let fan_in: usize = dims.iter().skip(1).product::<usize>().max(1);
        let data: Vec<f32> = (0..n)
            .map(|_| {
                let u = rng.next();
                if name.ends_with("running_var") {
                    1.0 + 0.5 * u
                } else if name.ends_with("running_mean") || name.ends_with("bias") {
                    0.1 * u
                } else if dims.len() == 1 {
                    1.0 + 0.2 * u // norm / BN scales
                } else if name.contains("attention_biases") {
                    0.5 * u
                } else if name.contains("gaussian_matrix") || name.contains("embed") {
                    u
                } else {
                    u * (3.0 / fan_in as f32).sqrt()
                }
            })
            .collect();
        map.insert(name, Tensor::from_vec(data, dims, &Device::Cpu).unwrap());
    }
    let model = LiteMedSam::from_tensors(map.clone(), &cfg, Mode::Inference, "random").unwrap();
    (model, map, cfg)
}

fn plan(
    model: &tract_onnx::pb::ModelProto,
    facts: &[(usize, Vec<usize>)],
) -> std::sync::Arc<TypedRunnableModel> {
    let mut m = tract_onnx::onnx()
        .model_for_proto_model(model)
        .expect("tract parses the exported graph");
    for (ix, shape) in facts {
        m = m
            .with_input_fact(*ix, f32::fact(shape).into())
            .expect("input fact");
    }
    m.into_optimized()
        .expect("tract optimizes the exported graph")
        .into_runnable()
        .expect("runnable")
}

fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "output lengths differ");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    let diff = got
        .iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    diff / scale
}

fn tract_f32(t: &TValue) -> Vec<f32> {
    t.try_as_plain_ram()
        .unwrap()
        .as_slice::<f32>()
        .unwrap()
        .to_vec()
}

/// SAM-convention points + labels for a model prompt.
fn sam_points(p: &Prompt) -> (Vec<f32>, Vec<f32>) {
    let mut xy = Vec::new();
    let mut lab = Vec::new();
    for q in &p.points {
        xy.extend_from_slice(&q.xy);
        lab.push(q.label as f32);
    }
    match p.bbox {
        Some(b) => {
            xy.extend_from_slice(&b);
            lab.extend([labels::BOX_TOP_LEFT, labels::BOX_BOTTOM_RIGHT]);
        }
        None => {
            xy.extend([0.0, 0.0]);
            lab.push(labels::PADDING);
        }
    }
    (xy, lab)
}

fn check_model(model: &LiteMedSam, graphs: &ExportedGraphs, image: &[f32], prompts: &[Prompt]) {
    let cfg = model.config();
    let s = cfg.img_size;
    let d = cfg.prompt_embed_dim;
    let e = cfg.embedding_size();
    let input = Tensor::from_slice(image, (1, 3, s, s), &Device::Cpu).unwrap();
    let want_emb = model.encode(&input).unwrap();
    let want_emb_v: Vec<f32> = want_emb.flatten_all().unwrap().to_vec1().unwrap();

    let enc = plan(&graphs.encoder, &[]);
    let got = enc
        .run(tvec!(tract_ndarray::Array4::from_shape_vec(
            (1, 3, s, s),
            image.to_vec()
        )
        .unwrap()
        .into_tensor()
        .into()))
        .unwrap();
    let err = rel_err(&tract_f32(&got[0]), &want_emb_v);
    eprintln!("encoder: max rel err {err:.2e}");
    assert!(err <= TOL, "encoder output differs: {err:e} > {TOL:e}");

    for p in prompts {
        let (masks, iou) = model.predict_all(&want_emb, p).unwrap();
        let want_masks: Vec<f32> = masks.flatten_all().unwrap().to_vec1().unwrap();
        let want_iou: Vec<f32> = iou.flatten_all().unwrap().to_vec1().unwrap();
        let (xy, lab) = sam_points(p);
        let n = lab.len();
        let dec = plan(
            &graphs.decoder,
            &[(0, vec![1, d, e, e]), (1, vec![1, n, 2]), (2, vec![1, n])],
        );
        let got = dec
            .run(tvec!(
                tract_ndarray::Array4::from_shape_vec((1, d, e, e), want_emb_v.clone())
                    .unwrap()
                    .into_tensor()
                    .into(),
                tract_ndarray::Array3::from_shape_vec((1, n, 2), xy)
                    .unwrap()
                    .into_tensor()
                    .into(),
                tract_ndarray::Array2::from_shape_vec((1, n), lab)
                    .unwrap()
                    .into_tensor()
                    .into()
            ))
            .unwrap();
        let em = rel_err(&tract_f32(&got[0]), &want_masks);
        let ei = rel_err(&tract_f32(&got[1]), &want_iou);
        eprintln!("decoder {p:?}: logits rel err {em:.2e}, iou rel err {ei:.2e}");
        assert!(em <= TOL, "decoder logits differ: {em:e}");
        assert!(ei <= TOL, "decoder IoU differs: {ei:e}");
    }
}

fn prompts(s: f32) -> Vec<Prompt> {
    vec![
        Prompt {
            bbox: Some([0.2 * s, 0.25 * s, 0.7 * s, 0.8 * s]),
            points: vec![],
        },
        Prompt {
            bbox: None,
            points: vec![
                PointPrompt {
                    xy: [0.4 * s, 0.5 * s],
                    label: 1,
                },
                PointPrompt {
                    xy: [0.1 * s, 0.9 * s],
                    label: 0,
                },
            ],
        },
        Prompt {
            bbox: Some([0.1 * s, 0.1 * s, 0.9 * s, 0.6 * s]),
            points: vec![PointPrompt {
                xy: [0.5 * s, 0.3 * s],
                label: 1,
            }],
        },
    ]
}

#[test]
fn tiny_model_export_matches_candle() {
    let (model, map, cfg) = random_tiny();
    let graphs = export_litemedsam(&map, &cfg, "random").unwrap();
    let s = cfg.img_size;
    let mut rng = Rng(42);
    let image: Vec<f32> = (0..3 * s * s).map(|_| rng.next().abs()).collect();
    check_model(&model, &graphs, &image, &prompts(s as f32));
}

#[test]
fn tiny_student_export_matches_candle() {
    let (model, map, cfg) = random_model(LiteMedSamConfig::tiny_student());
    assert_eq!((cfg.stem_stride, cfg.decoder_upscales), (4, 3));
    let graphs = export_litemedsam(&map, &cfg, "random").unwrap();
    let s = cfg.img_size;
    let mut rng = Rng(7);
    let image: Vec<f32> = (0..3 * s * s).map(|_| rng.next().abs()).collect();
    check_model(&model, &graphs, &image, &prompts(s as f32));
}

#[test]
fn stride2_stem_export_matches_candle() {
    // 16 → 8 (stem) → 4 → 2 (merges) → 2·2³ = 16 low-res
    let cfg = LiteMedSamConfig {
        stem_stride: 2,
        decoder_upscales: 3,
        ..LiteMedSamConfig::tiny()
    };
    let (model, map, cfg) = random_model(cfg);
    let graphs = export_litemedsam(&map, &cfg, "random").unwrap();
    let s = cfg.img_size;
    let mut rng = Rng(11);
    let image: Vec<f32> = (0..3 * s * s).map(|_| rng.next().abs()).collect();
    check_model(&model, &graphs, &image, &prompts(s as f32));
}

#[test]
fn invalid_config_is_an_error_not_a_panic() {
    let (_, map, _) = random_tiny();
    let cfg = LiteMedSamConfig {
        stem_stride: 3,
        ..LiteMedSamConfig::tiny()
    };
    let err = export_litemedsam(&map, &cfg, "ckpt.pth")
        .unwrap_err()
        .to_string();
    assert!(err.contains("stem_stride 3"), "{err}");
    let vb = VarBuilder::from_tensors(map, DType::F32, &Device::Cpu);
    let err = LiteMedSam::new(vb, &cfg, Mode::Inference).unwrap_err();
    assert!(err.to_string().contains("stem_stride 3"), "{err}");
}

#[test]
fn exported_graphs_are_clean() {
    let (_, map, cfg) = random_tiny();
    let graphs = export_litemedsam(&map, &cfg, "random").unwrap();
    for (name, g) in [("encoder", &graphs.encoder), ("decoder", &graphs.decoder)] {
        assert_eq!(g.opset_import[0].version, onnx::OPSET);
        let ops = onnx::op_histogram(g);
        eprintln!("{name}: {ops:?}");
        for (op, _) in &ops {
            assert!(
                !matches!(
                    op.as_str(),
                    "BatchNormalization" | "Dropout" | "Shape" | "ConstantOfShape" | "Expand"
                ),
                "{name} holds {op}, which a folded inference graph should not"
            );
        }
        // every node input is a graph input, an initializer or an earlier output
        let gr = g.graph.as_ref().unwrap();
        let mut known: std::collections::HashSet<&str> = gr
            .input
            .iter()
            .map(|i| i.name.as_str())
            .chain(gr.initializer.iter().map(|i| i.name.as_str()))
            .collect();
        for n in &gr.node {
            for i in &n.input {
                assert!(
                    known.contains(i.as_str()),
                    "{name}: {i} used before defined"
                );
            }
            known.extend(n.output.iter().map(|s| s.as_str()));
        }
    }
}

#[test]
fn missing_tensor_is_a_clear_error() {
    let (_, mut map, cfg) = random_tiny();
    map.remove("mask_decoder.iou_token.weight");
    let err = export_litemedsam(&map, &cfg, "ckpt.pth")
        .unwrap_err()
        .to_string();
    assert!(err.contains("mask_decoder.iou_token.weight"), "{err}");
    assert!(err.contains("ckpt.pth"), "{err}");
}

fn teacher() -> Option<PathBuf> {
    let shared = std::env::var_os("EDGESEG_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let p = shared.join("teacher/lite_medsam.pth");
    let golden = shared.join("golden/litemedsam/cvc_clinicdb__375/input_256.npy");
    if p.is_file() && golden.is_file() {
        Some(shared)
    } else {
        eprintln!("SKIP: teacher parity needs shared/teacher/lite_medsam.pth and shared/golden (not found)");
        None
    }
}

#[test]
fn teacher_export_matches_candle() {
    let Some(shared) = teacher() else { return };
    let path = shared.join("teacher/lite_medsam.pth");
    let map = edgeseg_models::weights::read_checkpoint(&path).unwrap();
    let cfg = LiteMedSamConfig::litemedsam();
    let model = LiteMedSam::from_tensors(map.clone(), &cfg, Mode::Inference, "teacher").unwrap();
    let graphs = export_litemedsam(&map, &cfg, "teacher").unwrap();
    let input = edgeseg_kernels::npy::read_npy(
        shared.join("golden/litemedsam/cvc_clinicdb__375/input_256.npy"),
    )
    .unwrap()
    .to_f32();
    check_model(&model, &graphs, &input, &prompts(256.0));
}
