//! The device path against the training path: a model exported to ONNX,
//! bundled, and run by the runtime's tract backend gives the same masks as the
//! candle model (mask IoU ≥ 0.999, IoU prediction within 1e-3).
//!
//! * Default: a small LiteMedSAM-architecture model at the real 256 input size
//!   with deterministic pseudo-random weights, on the committed sample frames.
//! * With `shared/`: the released teacher on the six golden cases.

use std::path::{Path, PathBuf};

use edgeseg_models::litemedsam::{LiteMedSam, LiteMedSamConfig};
use edgeseg_models::weights::TensorMap;
use edgeseg_models::Mode;
use edgeseg_runtime::backend::{BackendOptions, PromptableSegmenter, RgbFrame, TractSegmenter};
use edgeseg_runtime::bundle::{Bundle, BundleWriter, Manifest, VerifyPolicy};
use edgeseg_runtime::{BoxPrompt, Prompt};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Exports `map` and builds an in-memory bundle exactly as `edgeseg-tools bundle` does.
fn bundle_of(map: &TensorMap, cfg: &LiteMedSamConfig) -> Vec<u8> {
    use prost::Message;
    let g = edgeseg_models::export::export_litemedsam(map, cfg, "test").unwrap();
    let mut w = BundleWriter::new(Manifest::minimal("litemedsam", "test", "0.0.1"));
    for (name, mut model) in [("encoder.onnx", g.encoder), ("decoder.onnx", g.decoder)] {
        for t in edgeseg_runtime::onnx_weights::externalize(&mut model, name) {
            w = w.tensor(t.name, t.dtype, &t.shape, t.bytes);
        }
        w = w.graph(name, model.encode_to_vec());
    }
    w.to_bytes().unwrap()
}

fn read_rgb(p: &Path) -> (usize, usize, Vec<u8>) {
    let img = image::open(p).unwrap().to_rgb8();
    (img.width() as usize, img.height() as usize, img.into_raw())
}

fn iou(a: &[u8], b: &[u8]) -> f64 {
    let (mut i, mut u) = (0usize, 0usize);
    for (&x, &y) in a.iter().zip(b) {
        i += usize::from(x != 0 && y != 0);
        u += usize::from(x != 0 || y != 0);
    }
    if u == 0 {
        1.0
    } else {
        i as f64 / u as f64
    }
}

fn compare(model: &LiteMedSam, bundle: &[u8], cases: &[(PathBuf, [f32; 4])]) {
    let b = Bundle::from_bytes(bundle, &VerifyPolicy::default()).unwrap();
    let opts = BackendOptions {
        threads: 2,
        ..Default::default()
    };
    let mut seg = TractSegmenter::from_bundle(&b, &opts).unwrap();
    for (path, bx) in cases {
        let (w, h, rgb) = read_rgb(path);
        let want = model
            .segment(&rgb, h, w, Some(bx.map(f64::from)), &[])
            .unwrap();
        seg.set_frame(RgbFrame::new(w, h, &rgb).unwrap()).unwrap();
        let got = seg
            .segment(&Prompt::from_box(BoxPrompt {
                x0: bx[0],
                y0: bx[1],
                x1: bx[2],
                y1: bx[3],
            }))
            .unwrap();
        let m = iou(&got.mask, &want.mask);
        let di = (got.iou_prediction.unwrap() - want.iou).abs();
        eprintln!(
            "{}: mask IoU {m:.5} ({} vs {} px), IoU prediction diff {di:.2e}",
            path.display(),
            got.area(),
            want.mask.iter().filter(|&&v| v != 0).count()
        );
        assert!(m >= 0.999, "{}: mask IoU {m}", path.display());
        assert!(
            di <= 1e-3,
            "{}: IoU prediction differs by {di}",
            path.display()
        );
    }
}

#[test]
fn small_random_model_tract_equals_candle() {
    // the tiny architecture at the real input size, so the runtime's 256 pipeline applies
    let cfg = LiteMedSamConfig {
        img_size: 256,
        ..LiteMedSamConfig::tiny()
    };
    let vm = candle_nn::VarMap::new();
    let vb =
        candle_nn::VarBuilder::from_varmap(&vm, candle_core::DType::F32, &candle_core::Device::Cpu);
    LiteMedSam::new(vb, &cfg, Mode::Inference).unwrap();
    let mut map = TensorMap::new();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let data = vm.data().lock().unwrap();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let t = data[name].as_tensor();
        let dims = t.dims().to_vec();
        let n: usize = dims.iter().product();
        let fan_in: usize = dims.iter().skip(1).product::<usize>().max(1);
        let v: Vec<f32> = (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let u = ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
                if name.ends_with("running_var") {
                    1.0 + 0.5 * u
                } else if name.ends_with("bias") || name.ends_with("running_mean") {
                    0.1 * u
                } else if dims.len() == 1 {
                    1.0 + 0.2 * u
                } else {
                    u * (3.0 / fan_in as f32).sqrt()
                }
            })
            .collect();
        map.insert(
            name.clone(),
            candle_core::Tensor::from_vec(v, dims, &candle_core::Device::Cpu).unwrap(),
        );
    }
    drop(data);
    let model = LiteMedSam::from_tensors(map.clone(), &cfg, Mode::Inference, "random").unwrap();
    let bundle = bundle_of(&map, &cfg);
    let dir = root().join("fixtures/sample2d/images");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let cases: Vec<(PathBuf, [f32; 4])> = files
        .into_iter()
        .take(3)
        .map(|p| {
            let (w, h, _) = read_rgb(&p);
            let b = [
                w as f32 * 0.2,
                h as f32 * 0.25,
                w as f32 * 0.7,
                h as f32 * 0.8,
            ];
            (p, b)
        })
        .collect();
    compare(&model, &bundle, &cases);
}

#[test]
fn teacher_bundle_tract_equals_candle() {
    let shared = std::env::var_os("EDGESEG_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared"));
    let ckpt = shared.join("teacher/lite_medsam.pth");
    if !ckpt.is_file() {
        eprintln!(
            "SKIP: teacher bundle parity needs {} (not found)",
            ckpt.display()
        );
        return;
    }
    let map = edgeseg_models::weights::read_checkpoint(&ckpt).unwrap();
    let cfg = LiteMedSamConfig::litemedsam();
    let model = LiteMedSam::from_tensors(map.clone(), &cfg, Mode::Inference, "teacher").unwrap();
    let bundle = bundle_of(&map, &cfg);
    let cases = vec![
        (
            shared.join("data/cvc_clinicdb/images/375.png"),
            [166.0, 139.0, 208.0, 167.0],
        ),
        (
            shared.join("data/ddti_thyroid_us/images/329_1.png"),
            [13.0, 31.0, 299.0, 278.0],
        ),
        (
            shared.join("data/hc18_fetal_us/images/276_HC.png"),
            [83.0, 43.0, 570.0, 422.0],
        ),
    ];
    compare(&model, &bundle, &cases);
}
