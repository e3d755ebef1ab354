//! Parity of the candle LiteMedSAM with the PyTorch reference
//! (`shared/golden/litemedsam/`, see its README). Needs the checkpoint in
//! `shared/teacher/`; skipped with a message when the shared folder is absent
//! (set `EDGESEG_SHARED` to point elsewhere).
//!
//! Every case: preprocessed input and image embedding within 1e-3 relative L2,
//! sparse prompt embeddings and low-res logits within 1e-3 relative L2, IoU
//! prediction within 1e-3, final mask IoU ≥ 0.995 against `mask.npy`. The
//! encoder runs once per image (6 runs).

use std::path::{Path, PathBuf};

use candle_core::Tensor;
use edgeseg_kernels::npy::read_npy;
use edgeseg_models::litemedsam::{LiteMedSam, PointPrompt, Prompt};

/// (folder, image path relative to shared/, GT box x0,y0,x1,y1 inclusive)
const CASES: [(&str, &str, [f64; 4]); 6] = [
    (
        "cvc_clinicdb__375",
        "data/cvc_clinicdb/images/375.png",
        [166.0, 139.0, 208.0, 167.0],
    ),
    (
        "cvc_clinicdb__490",
        "data/cvc_clinicdb/images/490.png",
        [76.0, 26.0, 349.0, 280.0],
    ),
    (
        "ddti_thyroid_us__259_1_2",
        "data/ddti_thyroid_us/images/259_1(2).png",
        [100.0, 99.0, 202.0, 203.0],
    ),
    (
        "ddti_thyroid_us__329_1",
        "data/ddti_thyroid_us/images/329_1.png",
        [13.0, 31.0, 299.0, 278.0],
    ),
    (
        "hc18_fetal_us__082_2HC",
        "data/hc18_fetal_us/images/082_2HC.png",
        [260.0, 317.0, 454.0, 483.0],
    ),
    (
        "hc18_fetal_us__276_HC",
        "data/hc18_fetal_us/images/276_HC.png",
        [83.0, 43.0, 570.0, 422.0],
    ),
];

const TOL: f64 = 1e-3;

fn shared_dir() -> Option<PathBuf> {
    let p = std::env::var_os("EDGESEG_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    if p.join("golden/litemedsam").is_dir() && p.join("teacher/lite_medsam.pth").is_file() {
        Some(p)
    } else {
        eprintln!(
            "SKIP: {} lacks golden/litemedsam or teacher/lite_medsam.pth (set EDGESEG_SHARED)",
            p.display()
        );
        None
    }
}

fn load_rgb(path: &Path) -> (Vec<u8>, usize, usize) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (w, h) = (img.width() as usize, img.height() as usize);
    let rgb = match img {
        image::DynamicImage::ImageLuma8(g) => {
            g.into_raw().iter().flat_map(|&v| [v, v, v]).collect()
        }
        other => other.to_rgb8().into_raw(),
    };
    (rgb, h, w)
}

fn npy_f32(p: PathBuf) -> Vec<f32> {
    read_npy(&p).unwrap_or_else(|e| panic!("{e}")).to_f32()
}

/// (relative L2 error, max abs error)
fn errs(ours: &[f32], gold: &[f32]) -> (f64, f64) {
    assert_eq!(ours.len(), gold.len(), "length mismatch");
    let mut num = 0f64;
    let mut den = 0f64;
    let mut mx = 0f64;
    for (&a, &b) in ours.iter().zip(gold) {
        let d = f64::from(a) - f64::from(b);
        num += d * d;
        den += f64::from(b) * f64::from(b);
        mx = mx.max(d.abs());
    }
    ((num / den.max(1e-30)).sqrt(), mx)
}

fn vec_of(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn mask_iou(a: &[u8], b: &[u8]) -> (f64, usize) {
    let inter = a
        .iter()
        .zip(b)
        .filter(|(x, y)| **x == 1 && **y == 1)
        .count();
    let uni = a
        .iter()
        .zip(b)
        .filter(|(x, y)| **x == 1 || **y == 1)
        .count();
    let diff = a.iter().zip(b).filter(|(x, y)| x != y).count();
    (
        if uni == 0 {
            1.0
        } else {
            inter as f64 / uni as f64
        },
        diff,
    )
}

#[test]
fn litemedsam_matches_pytorch_reference() {
    let Some(shared) = shared_dir() else { return };
    let model = LiteMedSam::load(shared.join("teacher/lite_medsam.pth")).unwrap();
    let g = shared.join("golden/litemedsam");
    for (folder, image, bbox) in CASES {
        let dir = g.join(folder);
        let (rgb, h, w) = load_rgb(&shared.join(image));
        let prepared = model.preprocess(&rgb, h, w).unwrap();
        let (e_in, _) = errs(
            &vec_of(&prepared.input),
            &npy_f32(dir.join("input_256.npy")),
        );
        assert!(e_in <= TOL, "{folder}: input rel L2 {e_in}");

        let t0 = std::time::Instant::now();
        let emb = model.encode(&prepared.input).unwrap();
        let enc_ms = t0.elapsed().as_secs_f64() * 1e3;
        let (e_emb, m_emb) = errs(&vec_of(&emb), &npy_f32(dir.join("image_embedding.npy")));

        let prompt = Prompt::from_original(Some(bbox), &[], h, w);
        assert_eq!(
            prompt.bbox.unwrap().to_vec(),
            npy_f32(dir.join("box_256.npy")),
            "{folder}: box_256"
        );
        let (sparse, _) = model.embed_prompt(&prompt).unwrap();
        let (e_sp, _) = errs(
            &vec_of(&sparse),
            &npy_f32(dir.join("sparse_embeddings.npy")),
        );
        let t1 = std::time::Instant::now();
        let dec = model.decode(&emb, &prompt, false).unwrap();
        let dec_ms = t1.elapsed().as_secs_f64() * 1e3;
        let (e_lr, m_lr) = errs(
            &vec_of(&dec.low_res),
            &npy_f32(dir.join("low_res_logits.npy")),
        );
        let iou_gold = npy_f32(dir.join("iou_pred.npy"))[0];
        let d_iou = (dec.iou[0] - iou_gold).abs();
        let mask = model.postprocess(&dec, 0, &prepared.prep).unwrap();
        let gm = read_npy(dir.join("mask.npy")).unwrap();
        let (miou, ndiff) = mask_iou(&mask, gm.as_u8().unwrap());
        eprintln!(
            "{folder}: input relL2 {e_in:.1e} | embedding relL2 {e_emb:.2e} max {m_emb:.2e} | sparse relL2 {e_sp:.1e} | logits relL2 {e_lr:.2e} max {m_lr:.2e} | iou {:.5} vs {iou_gold:.5} (|d| {d_iou:.1e}) | mask IoU {miou:.5}, {ndiff} px differ | enc {enc_ms:.0} ms dec {dec_ms:.0} ms",
            dec.iou[0]
        );
        assert!(e_emb <= TOL, "{folder}: embedding rel L2 {e_emb}");
        assert!(e_sp <= TOL, "{folder}: sparse rel L2 {e_sp}");
        assert!(e_lr <= TOL, "{folder}: logits rel L2 {e_lr}");
        assert!(f64::from(d_iou) <= TOL, "{folder}: iou {d_iou}");
        assert!(miou >= 0.995, "{folder}: mask IoU {miou}");

        if folder == "hc18_fetal_us__082_2HC" {
            // the one-call API gives the same mask as the steps above
            let seg = model.segment(&rgb, h, w, Some(bbox), &[]).unwrap();
            assert_eq!((seg.height, seg.width), (h, w));
            assert_eq!(
                seg.mask, mask,
                "{folder}: segment() differs from the step-by-step pipeline"
            );
            assert!((seg.iou - dec.iou[0]).abs() < 1e-6);
        }

        if folder == "hc18_fetal_us__276_HC" {
            // point prompt (label 1, padding point appended) on the same embedding
            let p = npy_f32(dir.join("point_256.npy"));
            let label = npy_f32(dir.join("point_label.npy"))[0] as i32;
            let prompt = Prompt {
                bbox: None,
                points: vec![PointPrompt {
                    xy: [p[0], p[1]],
                    label,
                }],
            };
            let (sparse, _) = model.embed_prompt(&prompt).unwrap();
            let (e_sp, _) = errs(
                &vec_of(&sparse),
                &npy_f32(dir.join("point_sparse_embeddings.npy")),
            );
            let dec = model.decode(&emb, &prompt, false).unwrap();
            let (e_lr, m_lr) = errs(
                &vec_of(&dec.low_res),
                &npy_f32(dir.join("point_low_res_logits.npy")),
            );
            let iou_gold = npy_f32(dir.join("point_iou_pred.npy"))[0];
            let d_iou = (dec.iou[0] - iou_gold).abs();
            let mask = model.postprocess(&dec, 0, &prepared.prep).unwrap();
            let gm = read_npy(dir.join("point_mask.npy")).unwrap();
            let (miou, ndiff) = mask_iou(&mask, gm.as_u8().unwrap());
            eprintln!(
                "{folder} (point): sparse relL2 {e_sp:.1e} | logits relL2 {e_lr:.2e} max {m_lr:.2e} | iou {:.5} vs {iou_gold:.5} | mask IoU {miou:.5}, {ndiff} px differ",
                dec.iou[0]
            );
            assert!(e_sp <= TOL, "point sparse rel L2 {e_sp}");
            assert!(e_lr <= TOL, "point logits rel L2 {e_lr}");
            assert!(f64::from(d_iou) <= TOL, "point iou {d_iou}");
            assert!(
                miou >= 0.995 && ndiff == 0,
                "point mask IoU {miou}, {ndiff} px"
            );
        }
    }
}
