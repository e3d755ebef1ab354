//! `edgeseg-tools int8-sim` and `int8-compute` on the committed `edge-s-int8` bundle.
//!
//! * `int8-sim` inserts one per-tensor QDQ pair per calibrated activation (36 in the
//!   encoder, 47 in the decoder); the simulation bundle verifies and runs on tract, its
//!   masks stay close to the int8 bundle's on the fixture frames while its outputs do
//!   change (the QDQ pairs are active).
//! * `int8-compute` rewrites every Conv and MatMul to ConvInteger/MatMulInteger; its
//!   encoder computes what the simulation's does (the same 36 activations in int8, int32
//!   accumulation), so the embeddings agree to float rounding, and its masks match.
//! * Bundles without activation ranges are refused with a clear error.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use edgeseg_runtime::backend::{BackendOptions, PromptableSegmenter, RgbFrame, TractSegmenter};
use edgeseg_runtime::bundle::{Bundle, VerifyPolicy};
use edgeseg_runtime::prompt::{BoxPrompt, Prompt};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

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

fn read_rgb(p: &Path) -> (usize, usize, Vec<u8>) {
    let img = image::open(p).unwrap().to_rgb8();
    (img.width() as usize, img.height() as usize, img.into_raw())
}

/// The tight box of the fixture's ground-truth mask.
fn mask_box(p: &Path) -> BoxPrompt {
    let m = image::open(p).unwrap().to_luma8();
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
    for (x, y, v) in m.enumerate_pixels() {
        if v[0] > 0 {
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
        }
    }
    assert!(x0 <= x1, "empty fixture mask {}", p.display());
    BoxPrompt {
        x0: x0 as f32,
        y0: y0 as f32,
        x1: x1 as f32 + 1.0,
        y1: y1 as f32 + 1.0,
    }
}

/// A fresh scratch folder for one test.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("edgeseg-int8sim-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn iou(a: &[u8], b: &[u8]) -> f64 {
    let (mut inter, mut union) = (0usize, 0usize);
    for (&x, &y) in a.iter().zip(b) {
        inter += usize::from(x != 0 && y != 0);
        union += usize::from(x != 0 || y != 0);
    }
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

#[test]
fn simulation_bundle_of_edge_s_int8() {
    let dir = scratch("sim");
    let int8 = repo().join("models/zoo/edge-s-int8.bundle");
    let sim = dir.join("sim.bundle");
    let o = run(&[
        "int8-sim",
        "--bundle",
        int8.to_str().unwrap(),
        "--out",
        sim.to_str().unwrap(),
    ]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("encoder.onnx: 36 activations"), "{out}");
    assert!(out.contains("decoder.onnx: 47 activations"), "{out}");

    let b = Bundle::open(&sim, &VerifyPolicy::default()).unwrap();
    assert!(b.manifest().extra.contains_key("int8_simulation"));
    assert!(b.manifest().model.name.ends_with("-int8sim"));
    let opts = BackendOptions {
        threads: 1,
        ..Default::default()
    };
    let mut plain = TractSegmenter::open(&int8, &opts).unwrap();
    let mut simulated = TractSegmenter::open(&sim, &opts).unwrap();
    let mut changed = false;
    for image in ["cvc_375.png", "hc18_082_2HC.png"] {
        let (w, h, rgb) = read_rgb(&repo().join("fixtures/sample2d/images").join(image));
        let bx = mask_box(&repo().join("fixtures/sample2d/masks").join(image));
        let frame = RgbFrame::new(w, h, &rgb).unwrap();
        plain.set_frame(frame).unwrap();
        simulated.set_frame(frame).unwrap();
        let emb_a = plain.embedding().unwrap().data.to_vec();
        let emb_b = simulated.embedding().unwrap().data;
        let (mut num, mut den) = (0f64, 0f64);
        for (a, b) in emb_a.iter().zip(emb_b) {
            num += f64::from(a - b).powi(2);
            den += f64::from(*a).powi(2);
        }
        let rel_rms = (num / den.max(f64::MIN_POSITIVE)).sqrt();
        let (a, b) = (
            plain.segment(&Prompt::from_box(bx)).unwrap(),
            simulated.segment(&Prompt::from_box(bx)).unwrap(),
        );
        let m = iou(&a.mask, &b.mask);
        eprintln!(
            "{image}: embedding relative RMS error {rel_rms:.2e}, mask IoU {m:.4} ({} vs {} px)",
            a.area(),
            b.area()
        );
        assert!(a.area() > 0);
        assert!(m >= 0.9, "{image}: simulated int8 mask IoU {m}");
        // int8 activations move the embedding a little, never wildly
        assert!(
            rel_rms < 0.15,
            "{image}: embedding relative RMS error {rel_rms}"
        );
        changed |= num > 0.0;
    }
    assert!(changed, "the QDQ pairs changed nothing: are they wired?");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The embedding and box-prompt mask of `bundle` on a fixture frame.
fn outputs(seg: &mut TractSegmenter, image: &str) -> (Vec<f32>, Vec<u8>) {
    let (w, h, rgb) = read_rgb(&repo().join("fixtures/sample2d/images").join(image));
    let bx = mask_box(&repo().join("fixtures/sample2d/masks").join(image));
    seg.set_frame(RgbFrame::new(w, h, &rgb).unwrap()).unwrap();
    let emb = seg.embedding().unwrap().data.to_vec();
    let mask = seg.segment(&Prompt::from_box(bx)).unwrap().mask;
    (emb, mask)
}

fn rel_rms(a: &[f32], b: &[f32]) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        num += f64::from(x - y).powi(2);
        den += f64::from(*y).powi(2);
    }
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

#[test]
fn int8_compute_equals_the_simulation() {
    let dir = scratch("compute");
    let int8 = repo().join("models/zoo/edge-s-int8.bundle");
    let (sim, compute) = (dir.join("sim.bundle"), dir.join("int8c.bundle"));
    for (cmd, out) in [("int8-sim", &sim), ("int8-compute", &compute)] {
        let o = run(&[
            cmd,
            "--bundle",
            int8.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{cmd}: {}", text(&o));
        if cmd == "int8-compute" {
            let t = text(&o);
            assert!(
                t.contains("encoder.onnx: int8 compute for 20 Conv, 16 MatMul"),
                "{t}"
            );
            assert!(
                t.contains("decoder.onnx: int8 compute for 48 MatMul"),
                "{t}"
            );
        }
    }
    let b = Bundle::open(&compute, &VerifyPolicy::default()).unwrap();
    assert!(b.manifest().extra.contains_key("int8_compute"));
    let opts = BackendOptions {
        threads: 1,
        ..Default::default()
    };
    let mut a = TractSegmenter::open(&sim, &opts).unwrap();
    let mut c = TractSegmenter::open(&compute, &opts).unwrap();
    let mut f = TractSegmenter::open(&int8, &opts).unwrap();
    for image in ["cvc_375.png", "hc18_082_2HC.png"] {
        let (emb_sim, mask_sim) = outputs(&mut a, image);
        let (emb_c, mask_c) = outputs(&mut c, image);
        let (emb_f, _) = outputs(&mut f, image);
        let (e_sim, e_float) = (rel_rms(&emb_c, &emb_sim), rel_rms(&emb_c, &emb_f));
        let m = iou(&mask_c, &mask_sim);
        eprintln!(
            "{image}: int8 compute vs simulation: embedding relative RMS {e_sim:.2e} \
             (vs the weight-only bundle {e_float:.2e}), mask IoU {m:.4}"
        );
        // the same integer arithmetic; float rounding moves the odd activation across
        // a rounding boundary, and that difference travels through 36 layers
        assert!(e_sim < 0.2 * e_float, "{image}: {e_sim} vs {e_float}");
        assert!(m >= 0.98, "{image}: mask IoU {m}");
    }
    // one layer, same input: the int8 form equals the simulation to float rounding
    let (w, h, rgb) = read_rgb(&repo().join("fixtures/sample2d/images/cvc_375.png"));
    let input = edgeseg_kernels::prepost::preprocess_rgb(&rgb, h, w)
        .unwrap()
        .input;
    let first_conv = |path: &Path| -> (String, Vec<f32>) {
        use tract_onnx::prelude::*;
        let b = Bundle::open(path, &VerifyPolicy::default()).unwrap();
        let proto = edgeseg_runtime::onnx_weights::load_graph(&b, "encoder.onnx").unwrap();
        let g = proto.graph.as_ref().unwrap();
        // the first quantized product's output: the sim's first Conv, whose output name
        // the int8 form keeps on its rescaled result
        let name = g
            .node
            .iter()
            .find(|n| n.op_type == "Conv")
            .map(|n| n.output[0].clone())
            .unwrap_or_else(|| {
                // int8 form: the output of the first bias Add
                g.node
                    .iter()
                    .find(|n| n.name.ends_with(".bias_add"))
                    .unwrap()
                    .output[0]
                    .clone()
            });
        let plan = tract_onnx::onnx()
            .model_for_proto_model(&proto)
            .unwrap()
            .with_input_fact(0, f32::fact([1, 3, 256, 256]).into())
            .unwrap()
            .with_outputs_by_name([name.as_str()])
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap();
        let x = Tensor::from_shape(&[1, 3, 256, 256], &input).unwrap();
        let out = plan.run(tvec!(x.into())).unwrap();
        let v = out[0]
            .try_as_plain_ram()
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .to_vec();
        (name, v)
    };
    let (name_sim, a) = first_conv(&sim);
    let (name_c, c) = first_conv(&compute);
    assert_eq!(name_sim, name_c);
    let max = a.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = a
        .iter()
        .zip(&c)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    eprintln!(
        "first conv `{name_sim}`: int8 form vs simulation max|Δ|/max|x| {:.2e}",
        worst / max
    );
    assert!(worst <= 1e-5 * max, "first conv: {worst} of {max}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bundles_without_activation_ranges_are_refused() {
    let dir = scratch("refused");
    let float = repo().join("models/zoo/edge-s.bundle");
    let out = dir.join("x.bundle");
    for cmd in ["int8-sim", "int8-compute"] {
        let o = run(&[
            cmd,
            "--bundle",
            float.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(!o.status.success());
        let t = text(&o);
        assert!(t.contains("no activation ranges"), "{cmd}: {t}");
        assert!(!t.contains("panicked"), "{cmd}: {t}");
        assert!(!out.exists());
    }
    let o = run(&[
        "int8-sim",
        "--bundle",
        float.to_str().unwrap(),
        "--out",
        float.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("must differ"), "{}", text(&o));
    let _ = std::fs::remove_dir_all(&dir);
}
