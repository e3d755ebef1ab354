//! The bundle tooling end to end through both command lines: `export` a model, `keygen`,
//! `bundle --sign`, `inspect` (with the right key, a wrong key and a tampered file), `sign`
//! an unsigned bundle, then the same box segmented by the tools' candle path
//! (`edgeseg-tools segment`) and by the device binary on the signed bundle
//! (`edgeseg segment --pubkey`): the masks must agree (IoU ≥ 0.999).
//!
//! The model is the tiny LiteMedSAM structure at the real input size with deterministic
//! pseudo-random weights (no ../shared needed).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use edgeseg_models::{LiteMedSam, LiteMedSamConfig, Mode};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(bin: &Path, args: &[&str]) -> Output {
    Command::new(bin).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn tools_ok(args: &[&str]) -> String {
    let o = run(Path::new(env!("CARGO_BIN_EXE_edgeseg-tools")), args);
    assert!(o.status.success(), "edgeseg-tools {args:?}:\n{}", text(&o));
    text(&o)
}

fn tools_err(args: &[&str]) -> String {
    let o = run(Path::new(env!("CARGO_BIN_EXE_edgeseg-tools")), args);
    assert!(!o.status.success(), "edgeseg-tools {args:?} should fail");
    text(&o)
}

/// The device binary, when the build has produced it (`cargo test --workspace` builds
/// every binary of the workspace before running any test).
fn edgeseg_bin() -> Option<PathBuf> {
    let tools = PathBuf::from(env!("CARGO_BIN_EXE_edgeseg-tools"));
    let p = tools.with_file_name(format!("edgeseg{}", std::env::consts::EXE_SUFFIX));
    p.is_file().then_some(p)
}

/// Deterministic weights that give non-trivial masks (as `tests/tests/cpu_backend.rs`).
fn random_weights(cfg: &LiteMedSamConfig, path: &Path) {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    LiteMedSam::new(vb, cfg, Mode::Inference).unwrap();
    let data = vm.data().lock().unwrap();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut map = HashMap::new();
    for name in names {
        let dims = data[name].as_tensor().dims().to_vec();
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
            Tensor::from_vec(v, dims, &Device::Cpu).unwrap(),
        );
    }
    candle_core::safetensors::save(&map, path).unwrap();
}

fn read_mask(p: &Path) -> Vec<bool> {
    image::open(p)
        .unwrap()
        .to_luma8()
        .pixels()
        .map(|p| p.0[0] > 127)
        .collect()
}

#[test]
fn export_sign_inspect_and_segment_through_both_command_lines() {
    let tmp = std::env::temp_dir().join(format!("edgeseg-bundle-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();

    let cfg = LiteMedSamConfig {
        img_size: 256,
        ..LiteMedSamConfig::tiny()
    };
    let config = tmp.join("model.json");
    std::fs::write(&config, serde_json::to_string(&cfg).unwrap()).unwrap();
    let weights = tmp.join("model.safetensors");
    random_weights(&cfg, &weights);

    let graphs = tmp.join("graphs");
    let out = tools_ok(&[
        "export",
        "--config",
        &s(&config),
        "--weights",
        &s(&weights),
        "--name",
        "cli-test",
        "--out",
        &s(&graphs),
    ]);
    assert!(
        out.contains("encoder.onnx") && out.contains("decoder.onnx"),
        "{out}"
    );

    // keys, a signed bundle, and inspect with the right and a wrong key
    let release = tmp.join("release");
    let other = tmp.join("other");
    tools_ok(&["keygen", "--out", &s(&release)]);
    tools_ok(&["keygen", "--out", &s(&other)]);
    let (key, public) = (tmp.join("release.key"), tmp.join("release.pub"));
    let signed = tmp.join("signed.bundle");
    tools_ok(&[
        "bundle",
        "--graphs",
        &s(&graphs),
        "--out",
        &s(&signed),
        "--sign",
        &s(&key),
    ]);
    let shown = tools_ok(&["inspect", &s(&signed), "--pubkey", &s(&public)]);
    assert!(shown.contains("cli-test"), "{shown}");
    let err = tools_err(&[
        "inspect",
        &s(&signed),
        "--pubkey",
        &s(&tmp.join("other.pub")),
    ]);
    assert!(err.contains("not by the pinned key"), "{err}");

    // an unsigned bundle fails a signature requirement until `sign` signs it
    let unsigned = tmp.join("unsigned.bundle");
    tools_ok(&["bundle", "--graphs", &s(&graphs), "--out", &s(&unsigned)]);
    tools_ok(&["inspect", &s(&unsigned)]);
    tools_err(&["inspect", &s(&unsigned), "--pubkey", &s(&public)]);
    let resigned = tmp.join("resigned.bundle");
    tools_ok(&[
        "sign",
        "--bundle",
        &s(&unsigned),
        "--key",
        &s(&key),
        "--out",
        &s(&resigned),
    ]);
    tools_ok(&["inspect", &s(&resigned), "--pubkey", &s(&public)]);

    // one flipped byte in the middle of the file is refused
    let mut bytes = std::fs::read(&signed).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    let tampered = tmp.join("tampered.bundle");
    std::fs::write(&tampered, &bytes).unwrap();
    tools_err(&["inspect", &s(&tampered)]);

    // the candle path and the device binary give the same mask for the same box
    let image = repo().join("fixtures/sample2d/images/cvc_490.png");
    let bx = "76,26,349,280";
    let candle_mask = tmp.join("candle.png");
    tools_ok(&[
        "segment",
        "--config",
        &s(&config),
        "--weights",
        &s(&weights),
        "--image",
        &s(&image),
        "--box",
        bx,
        "--out",
        &s(&candle_mask),
    ]);
    let Some(edgeseg) = edgeseg_bin() else {
        eprintln!(
            "skipped: the `edgeseg` binary is not built next to edgeseg-tools \
             (run `cargo test --workspace` or build edgeseg-runtime first)"
        );
        let _ = std::fs::remove_dir_all(&tmp);
        return;
    };
    let device_mask = tmp.join("device.png");
    let o = run(
        &edgeseg,
        &[
            "segment",
            "--bundle",
            &s(&signed),
            "--pubkey",
            &s(&public),
            "--threads",
            "1",
            "--image",
            &s(&image),
            "--box",
            bx,
            "--out",
            &s(&device_mask),
        ],
    );
    assert!(o.status.success(), "edgeseg segment:\n{}", text(&o));
    let o = run(
        &edgeseg,
        &[
            "segment",
            "--bundle",
            &s(&signed),
            "--pubkey",
            &s(&tmp.join("other.pub")),
            "--image",
            &s(&image),
            "--box",
            bx,
        ],
    );
    assert!(!o.status.success(), "a wrong pinned key must be refused");

    let (a, b) = (read_mask(&candle_mask), read_mask(&device_mask));
    assert_eq!(a.len(), b.len());
    let inter = a.iter().zip(&b).filter(|(x, y)| **x && **y).count();
    let union = a.iter().zip(&b).filter(|(x, y)| **x || **y).count();
    assert!(
        union > 0,
        "both masks are empty: the test would prove nothing"
    );
    let iou = inter as f64 / union as f64;
    eprintln!("candle vs edgeseg segment: IoU {iou:.5} ({union} px in the union)");
    assert!(iou >= 0.999, "IoU {iou}");
    let _ = std::fs::remove_dir_all(&tmp);
}
