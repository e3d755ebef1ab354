//! Checkpoint loading: clear errors for missing/corrupt files and tensors, and
//! the `.pth` → safetensors conversion giving identical results.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use edgeseg_models::litemedsam::{LiteMedSam, LiteMedSamConfig, Prompt};
use edgeseg_models::weights::{convert_to_safetensors, read_checkpoint};
use edgeseg_models::{Mode, ModelError};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("edgeseg-models-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

#[test]
fn missing_and_corrupt_files_give_errors_naming_the_file() {
    let missing = tmp("does_not_exist.pth");
    let e = LiteMedSam::load(&missing).unwrap_err();
    assert!(matches!(e, ModelError::Io { .. }), "{e}");
    assert!(e.to_string().contains("does_not_exist.pth"), "{e}");

    for name in ["garbage.pth", "garbage.safetensors"] {
        let p = tmp(name);
        std::fs::write(&p, b"this is not a checkpoint at all").unwrap();
        let e = LiteMedSam::load(&p).unwrap_err();
        assert!(matches!(e, ModelError::Checkpoint { .. }), "{e}");
        assert!(e.to_string().contains(name), "{e}");
    }
}

#[test]
fn missing_or_misshapen_tensor_is_named() {
    let cfg = LiteMedSamConfig::tiny();
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    LiteMedSam::new(vb, &cfg, Mode::Training).unwrap();
    let p = tmp("tiny.safetensors");
    vm.save(&p).unwrap();
    let full = read_checkpoint(&p).unwrap();
    LiteMedSam::from_tensors(full.clone(), &cfg, Mode::Inference, "tiny.safetensors").unwrap();

    let victim = "mask_decoder.iou_token.weight";
    let mut map = full.clone();
    map.remove(victim);
    let e = LiteMedSam::from_tensors(map, &cfg, Mode::Inference, "tiny.safetensors").unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains(victim) && msg.contains("tiny.safetensors"),
        "{msg}"
    );

    let victim = "image_encoder.layers.1.blocks.0.attn.qkv.weight";
    let mut map = full;
    map.insert(
        victim.into(),
        Tensor::zeros((3, 3), DType::F32, &Device::Cpu).unwrap(),
    );
    let e = LiteMedSam::from_tensors(map, &cfg, Mode::Inference, "tiny.safetensors").unwrap_err();
    assert!(e.to_string().contains(victim), "{e}");
}

/// The real checkpoint converted to safetensors (memory-mapped on load) gives
/// bit-identical decoder outputs on a golden embedding.
#[test]
fn pth_to_safetensors_roundtrip_is_exact() {
    let shared = std::env::var_os("EDGESEG_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let pth = shared.join("teacher/lite_medsam.pth");
    let case = shared.join("golden/litemedsam/cvc_clinicdb__375");
    if !pth.is_file() || !case.is_dir() {
        eprintln!(
            "SKIP: {} or {} missing (set EDGESEG_SHARED)",
            pth.display(),
            case.display()
        );
        return;
    }
    let st = tmp("lite_medsam.safetensors");
    let n = convert_to_safetensors(&pth, &st).unwrap();
    assert_eq!(n, 435 - 27, "f32 tensors (27 num_batches_tracked dropped)");
    let a = LiteMedSam::load(&pth).unwrap();
    let b = LiteMedSam::load(&st).unwrap();
    let emb = edgeseg_kernels::npy::read_npy(case.join("image_embedding.npy"))
        .unwrap()
        .to_f32();
    let emb = Tensor::from_vec(emb, (1, 256, 64, 64), &Device::Cpu).unwrap();
    let prompt = Prompt {
        bbox: Some([110.0, 92.0, 138.0, 111.0]),
        points: vec![],
    };
    let da = a.decode(&emb, &prompt, true).unwrap();
    let db = b.decode(&emb, &prompt, true).unwrap();
    assert_eq!(da.low_res.dims(), &[1, 3, 256, 256]);
    assert_eq!(da.iou, db.iou);
    let va = da.low_res.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let vb = db.low_res.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(va == vb, "safetensors model differs from pth model");
    let _ = std::fs::remove_file(&st);
}
