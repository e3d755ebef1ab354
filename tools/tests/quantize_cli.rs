//! `edgeseg-tools quantize` end to end on a tiny LiteMedSAM-structured model with
//! deterministic pseudo-random weights (exported and bundled through the CLI, as in
//! `bundle_cli.rs`): bad calibration folders give errors (exit status 1, never a
//! panic), int8 and f16 bundles are smaller and their weights dequantize to within half
//! a quantization step of the float weights, their masks on a held-out frame match the
//! float bundle's (checked here independently of the tool's own measurement), the guard
//! refuses a bundle unless forced, and `mixed` keeps weights in f16 until a logit-error
//! guard that int8 misses holds.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use edgeseg_models::{LiteMedSam, LiteMedSamConfig, Mode};
use edgeseg_runtime::backend::{BackendOptions, PromptableSegmenter, RgbFrame, TractSegmenter};
use edgeseg_runtime::bundle::{self, Bundle, Quantization, VerifyPolicy};
use edgeseg_runtime::prompt::{BoxPrompt, Prompt};
use edgeseg_runtime::quant;

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgeseg-tools"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn tools_ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(o.status.success(), "edgeseg-tools {args:?}:\n{}", text(&o));
    text(&o)
}

/// Fails cleanly: exit status 1 (anyhow), not 101 (panic).
fn tools_err(args: &[&str]) -> String {
    let o = run(args);
    assert_eq!(
        o.status.code(),
        Some(1),
        "edgeseg-tools {args:?}:\n{}",
        text(&o)
    );
    text(&o)
}

/// Deterministic weights that give non-trivial masks (as `bundle_cli.rs`).
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

/// A frame with a bright disc and a darker ellipse on a gradient, different per `seed`.
fn frame(w: u32, h: u32, seed: u32) -> image::RgbImage {
    let (cx, cy) = ((w / 3 + seed * 17 % w) % w, (h / 2 + seed * 29 % h) % h);
    image::RgbImage::from_fn(w, h, |x, y| {
        let (dx, dy) = (x as f32 - cx as f32, y as f32 - cy as f32);
        let g = ((x + 2 * y + seed * 5) % 97) as f32;
        let disc = if dx * dx + dy * dy < (w.min(h) as f32 / 4.0).powi(2) {
            120.0
        } else {
            0.0
        };
        let (ex, ey) = (x as f32 - 0.7 * w as f32, y as f32 - 0.3 * h as f32);
        let ell = if ex * ex / 400.0 + ey * ey / 100.0 < 1.0 {
            -40.0
        } else {
            0.0
        };
        let v = (40.0 + g + disc + ell).clamp(0.0, 255.0) as u8;
        image::Rgb([v, v.saturating_add(10), v / 2 + 30])
    })
}

fn iou(a: &[u8], b: &[u8]) -> f64 {
    let inter = a
        .iter()
        .zip(b)
        .filter(|(x, y)| **x != 0 && **y != 0)
        .count();
    let union = a
        .iter()
        .zip(b)
        .filter(|(x, y)| **x != 0 || **y != 0)
        .count();
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

struct Runs {
    masks: Vec<Vec<u8>>,
    logits: Vec<Vec<f32>>,
}

/// Masks and single-mask logits of `bundle` on the held-out frame, two boxes.
fn held_out(bundle: &Path, im: &image::RgbImage) -> Runs {
    let opts = BackendOptions {
        threads: 1,
        verify: VerifyPolicy::integrity_only(),
        ..BackendOptions::default()
    };
    let mut m = TractSegmenter::open(bundle, &opts).unwrap();
    let (w, h) = (im.width() as usize, im.height() as usize);
    m.set_frame(RgbFrame::new(w, h, im.as_raw()).unwrap())
        .unwrap();
    let mut r = Runs {
        masks: Vec::new(),
        logits: Vec::new(),
    };
    for b in [[20.0, 30.0, 120.0, 110.0], [90.0, 10.0, 170.0, 90.0]] {
        let p = Prompt::from_box(BoxPrompt {
            x0: b[0],
            y0: b[1],
            x1: b[2],
            y1: b[3],
        });
        r.masks.push(m.segment(&p).unwrap().mask);
        let (c, l) = m.sam_points(&p).unwrap();
        let (logits, iou) = m.decode_points(&c, &l).unwrap();
        r.logits.push(logits[..logits.len() / iou.len()].to_vec());
    }
    r
}

fn rel_rms(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    let (mut e, mut r) = (0f64, 0f64);
    for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
        e += (f64::from(*x) - f64::from(*y)).powi(2);
        r += f64::from(*x).powi(2);
    }
    (e / r).sqrt()
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn report(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn quantize_int8_f16_mixed_with_guard_and_bad_calibration() {
    let tmp = std::env::temp_dir().join(format!("edgeseg-quantize-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();

    // a float bundle of the tiny model
    let cfg = LiteMedSamConfig {
        img_size: 256,
        ..LiteMedSamConfig::tiny()
    };
    let config = tmp.join("model.json");
    std::fs::write(&config, serde_json::to_string(&cfg).unwrap()).unwrap();
    let weights = tmp.join("model.safetensors");
    random_weights(&cfg, &weights);
    let graphs = tmp.join("graphs");
    tools_ok(&[
        "export",
        "--config",
        &s(&config),
        "--weights",
        &s(&weights),
        "--name",
        "q-test",
        "--out",
        &s(&graphs),
    ]);
    let float = tmp.join("float.bundle");
    tools_ok(&["bundle", "--graphs", &s(&graphs), "--out", &s(&float)]);

    // calibration frames (png, jpg, grey) and a held-out frame
    let calib = tmp.join("calib");
    std::fs::create_dir_all(&calib).unwrap();
    frame(200, 160, 1).save(calib.join("a.png")).unwrap();
    frame(180, 180, 2).save(calib.join("b.jpg")).unwrap();
    image::DynamicImage::ImageRgb8(frame(160, 220, 3))
        .to_luma8()
        .save(calib.join("c.png"))
        .unwrap();
    std::fs::write(calib.join("README.txt"), "ignored").unwrap();
    let held = frame(190, 150, 7);

    // bad calibration folders and outputs: clear errors, no output written
    let q8 = tmp.join("int8.bundle");
    let empty = tmp.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let base = |c: &Path, mode: &str, out: &Path| {
        vec![
            "quantize".to_string(),
            "--bundle".into(),
            s(&float),
            "--calib".into(),
            s(c),
            "--mode".into(),
            mode.into(),
            "--out".into(),
            s(out),
            "--threads".into(),
            "1".into(),
        ]
    };
    let e = tools_err(&args(&base(&empty, "int8", &q8)));
    assert!(e.contains("holds no .png/.jpg/.jpeg image"), "{e}");
    let e = tools_err(&args(&base(&tmp.join("missing"), "int8", &q8)));
    assert!(
        e.contains("calibration folder") && e.contains("missing"),
        "{e}"
    );
    let bad = tmp.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    frame(64, 64, 1).save(bad.join("ok.png")).unwrap();
    std::fs::write(bad.join("broken.png"), b"\x89PNG not really").unwrap();
    let e = tools_err(&args(&base(&bad, "int8", &q8)));
    assert!(e.contains("unreadable") && e.contains("broken.png"), "{e}");
    let e = tools_err(&args(&base(&calib, "int8", &float)));
    assert!(e.contains("--out is the input bundle"), "{e}");
    assert!(!q8.exists());

    // int8
    let r8 = tmp.join("int8.json");
    let mut a = base(&calib, "int8", &q8);
    a.extend(["--min-iou".into(), "0.9".into(), "--report".into(), s(&r8)]);
    let out = tools_ok(&args(&a));
    println!("{out}");
    let rep8 = report(&r8);
    let err8 = rep8["error"]["logit_rel_rms"].as_f64().unwrap();
    assert_eq!(rep8["error"]["prompts"], 9);
    assert!(err8 > 0.0, "int8 weights cannot be exact: {rep8}");

    let fb = Bundle::open(&float, &VerifyPolicy::integrity_only()).unwrap();
    let qb = Bundle::open(&q8, &VerifyPolicy::integrity_only()).unwrap();
    let (fl, ql) = (fb.as_bytes().len() as f64, qb.as_bytes().len() as f64);
    let tensor_bytes = |b: &Bundle| b.tensors().map(|t| t.bytes.len()).sum::<usize>() as f64;
    println!(
        "tiny model: int8 bundle {ql} / {fl} bytes = {:.3}; tensor data {:.3}",
        ql / fl,
        tensor_bytes(&qb) / tensor_bytes(&fb)
    );
    assert!(tensor_bytes(&qb) / tensor_bytes(&fb) <= 0.30);
    assert!(ql < fl * 0.5);
    // every float tensor is quantized, and dequantizes to within half a step
    let m = qb.manifest();
    let (mut n_int8, mut n_f16) = (0, 0);
    for t in fb.tensors() {
        let reference = quant::tensor_f32(&fb, t.name).unwrap().unwrap();
        let got = quant::tensor_f32(&qb, t.name).unwrap().unwrap();
        assert_eq!(reference.len(), got.len());
        match m.quantization.get(t.name) {
            Some(Quantization::PerChannel {
                axis,
                scales,
                zero_points: None,
            }) => {
                n_int8 += 1;
                assert_eq!(qb.tensor(t.name).unwrap().dtype, bundle::DType::I8);
                let sc = quant::scale_values(&qb.tensor(scales).unwrap()).unwrap();
                let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
                let inner: usize = shape[*axis as usize + 1..].iter().product();
                for (i, (x, y)) in reference.iter().zip(&got).enumerate() {
                    let s = sc[(i / inner) % shape[*axis as usize]];
                    assert!(
                        (x - y).abs() <= 0.5 * s * 1.0001,
                        "{} [{i}]: {x} vs {y}",
                        t.name
                    );
                }
            }
            Some(Quantization::Cast) => {
                n_f16 += 1;
                assert_eq!(qb.tensor(t.name).unwrap().dtype, bundle::DType::F16);
                for (x, y) in reference.iter().zip(&got) {
                    assert!((x - y).abs() <= x.abs() * 2f32.powi(-11) + 1e-7);
                }
            }
            other => panic!("{}: unexpected scheme {other:?}", t.name),
        }
    }
    assert!(n_int8 > 10 && n_f16 > 0, "{n_int8} int8, {n_f16} f16");
    assert_eq!(m.provenance.metrics["quant_calib_logit_rel_rms"], err8);
    assert_eq!(m.extra["quantization"]["mode"], "int8");
    assert!(m.provenance.commands.last().unwrap().contains("quantize"));
    // the calibrated activation ranges: one positive, finite scale per activation an
    // int8 weight multiplies, in both graphs, with a known method
    let ranges = m.extra["quantization"]["activation_ranges"]["tensors"]
        .as_object()
        .expect("activation ranges recorded");
    assert!(
        ranges.keys().any(|k| k.starts_with("encoder.onnx/"))
            && ranges.keys().any(|k| k.starts_with("decoder.onnx/")),
        "{:?}",
        ranges.keys().collect::<Vec<_>>()
    );
    for (name, r) in ranges {
        let scale = r["scale"].as_f64().expect("a scale");
        assert!(scale.is_finite() && scale > 0.0, "{name}: {r}");
        assert!(
            ["minmax", "percentile", "mse", "constant"]
                .contains(&r["method"].as_str().unwrap_or("")),
            "{name}: {r}"
        );
    }

    // the held-out frame: masks of the int8 bundle match the float bundle's
    let rf = held_out(&float, &held);
    let r8h = held_out(&q8, &held);
    for (a, b) in rf.masks.iter().zip(&r8h.masks) {
        assert!(
            a.iter().any(|&v| v != 0),
            "the float mask is empty: a vacuous comparison"
        );
        let i = iou(a, b);
        println!("held-out int8 IoU {i:.4}");
        assert!(i >= 0.95, "int8 IoU {i}");
    }
    let held_err8 = rel_rms(&rf.logits, &r8h.logits);
    println!("held-out int8 logit relative RMS error {held_err8:.4}");
    assert!(held_err8 > 0.0 && held_err8 < 0.1, "{held_err8}");

    // f16: nearly exact
    let q16 = tmp.join("f16.bundle");
    tools_ok(&args(&base(&calib, "f16", &q16)));
    let r16 = held_out(&q16, &held);
    let err16 = rel_rms(&rf.logits, &r16.logits);
    println!("held-out f16 logit relative RMS error {err16:.6}");
    assert!(err16 < 0.01 && err16 < held_err8, "{err16}");
    for (a, b) in rf.masks.iter().zip(&r16.masks) {
        assert!(iou(a, b) >= 0.99);
    }

    // the guard refuses (no file), --force writes and records it
    let refused = tmp.join("refused.bundle");
    let mut a = base(&calib, "int8", &refused);
    a.extend(["--max-logit-error".into(), "0".into()]);
    let e = tools_err(&args(&a));
    assert!(e.contains("refused") && e.contains("--force"), "{e}");
    assert!(!refused.exists());
    a.push("--force".into());
    tools_ok(&args(&a));
    let fm = Bundle::open(&refused, &VerifyPolicy::integrity_only()).unwrap();
    assert_eq!(
        fm.manifest().extra["quantization"]["calibration"]["forced"],
        true
    );

    // mixed: a logit guard between the f16 and the int8 error keeps some weights in f16
    let mixed = tmp.join("mixed.bundle");
    let rm = tmp.join("mixed.json");
    let limit = err8 * 0.6;
    let mut a = base(&calib, "mixed", &mixed);
    a.extend([
        "--max-logit-error".into(),
        format!("{limit}"),
        "--report".into(),
        s(&rm),
        "--sensitivity-images".into(),
        "1".into(),
    ]);
    let out = tools_ok(&args(&a));
    println!("{out}");
    let repm = report(&rm);
    let kept = repm["kept"].as_array().unwrap();
    assert!(!kept.is_empty(), "{repm}");
    let errm = repm["error"]["logit_rel_rms"].as_f64().unwrap();
    assert!(errm <= limit, "{errm} > {limit}");
    let n8 = repm["counts"]["int8"].as_u64().unwrap();
    assert!(n8 > 0 && (n8 as usize) < n_int8, "{repm}");
    let mb = Bundle::open(&mixed, &VerifyPolicy::integrity_only()).unwrap();
    for k in kept {
        let name = k["tensor"].as_str().unwrap();
        assert_eq!(
            mb.manifest().quantization.get(name),
            Some(&Quantization::Cast)
        );
    }
    // the size-aware step: what went back is int8 in the bundle, and not also "kept"
    for g in repm["given_back"].as_array().unwrap() {
        let name = g.as_str().unwrap();
        assert!(
            matches!(
                mb.manifest().quantization.get(name),
                Some(Quantization::PerChannel { .. })
            ),
            "{name} went back to int8 but is stored as {:?}",
            mb.manifest().quantization.get(name)
        );
        assert!(!kept.iter().any(|k| k["tensor"] == *g), "{name}");
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
