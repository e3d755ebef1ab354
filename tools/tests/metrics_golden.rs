//! Our metrics against the MONAI 1.6.1 reference values in `fixtures/metrics-golden/`
//! (a copy of `../shared/golden/metrics/`; when `../shared` is present its copy is checked too).
//!
//! Tolerances: Dice/IoU 1e-6 absolute, HD95/HD/NSD 1e-3 relative (1e-6 absolute near 0).
//! Convention differences, asserted explicitly below:
//! * MONAI's `nan` (HD95 when one mask is empty, anything when both are) and `inf` (HD when
//!   one mask is empty) are `None` here (JSON `null`).
//! * Dice/IoU when exactly one mask is empty: MONAI's default `ignore_empty=True` gives `nan`
//!   for an empty ground truth; we report 0, MONAI's `ignore_empty=False` value.
//! * Dice/IoU when both are empty: `None` (MONAI: `nan` by default, 1 with `ignore_empty=False`).

use std::path::{Path, PathBuf};

use edgeseg_tools::dataset::{read_label_volume, read_mask2d, read_volume};
use edgeseg_tools::grid::BinaryMask;
use edgeseg_tools::metrics::MetricSet;
use serde_json::Value;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A golden value: a number, or the strings "nan" / "inf".
fn golden(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) if s == "nan" || s == "inf" => None,
        other => panic!("unexpected golden value {other}"),
    }
}

fn close(ours: Option<f64>, want: Option<f64>, rel: f64, what: &str) {
    match (ours, want) {
        (None, None) => {}
        (Some(a), Some(b)) => {
            let tol = (rel * b.abs()).max(1e-6);
            assert!(
                (a - b).abs() <= tol,
                "{what}: ours {a} vs golden {b} (tol {tol})"
            );
        }
        _ => panic!("{what}: ours {ours:?} vs golden {want:?}"),
    }
}

fn load(dir: &Path, rel: &str, dims: u64) -> BinaryMask {
    let p = dir.join(rel);
    let labels = if dims == 2 {
        read_mask2d(&p)
    } else {
        read_label_volume(&p)
    }
    .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    labels.foreground(None)
}

fn check_block(
    name: &str,
    pred: &BinaryMask,
    gt: &BinaryMask,
    spacing: Option<&[f64]>,
    block: &Value,
) {
    let nsd1 = MetricSet::compute(pred, gt, spacing, 1.0).unwrap();
    let nsd2 = MetricSet::compute(pred, gt, spacing, 2.0).unwrap();
    let both_empty = pred.count() == 0 && gt.count() == 0;
    let one_empty = !both_empty && (pred.count() == 0 || gt.count() == 0);
    let (want_dice, want_iou) = if both_empty {
        (None, None)
    } else {
        (
            golden(&block["dice_ignore_empty_false"]),
            golden(&block["iou_ignore_empty_false"]),
        )
    };
    if !both_empty && !one_empty {
        // the default MONAI value is the same number then
        close(
            want_dice,
            golden(&block["dice"]),
            1e-9,
            &format!("{name} dice default"),
        );
    }
    let tag = format!("{name} {}", if spacing.is_some() { "mm" } else { "px" });
    close(nsd1.dice, want_dice, 0.0, &format!("{tag} dice"));
    close(nsd1.iou, want_iou, 0.0, &format!("{tag} iou"));
    close(
        nsd1.hd95,
        golden(&block["hd95"]),
        1e-3,
        &format!("{tag} hd95"),
    );
    close(nsd1.hd, golden(&block["hd"]), 1e-3, &format!("{tag} hd"));
    close(
        nsd1.nsd,
        golden(&block["nsd_tol1"]),
        1e-3,
        &format!("{tag} nsd@1"),
    );
    close(
        nsd2.nsd,
        golden(&block["nsd_tol2"]),
        1e-3,
        &format!("{tag} nsd@2"),
    );
}

fn check_dir(dir: &Path) -> usize {
    let text = std::fs::read_to_string(dir.join("metrics_golden.json")).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    let cases = json["cases"].as_array().unwrap();
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let dims = c["dims"].as_u64().unwrap();
        let pred = load(dir, c["pred_file"].as_str().unwrap(), dims);
        let gt = load(dir, c["gt_file"].as_str().unwrap(), dims);
        let (px_key, count_key) = if dims == 2 {
            ("pixels", "pred_px")
        } else {
            ("voxels", "pred_vox")
        };
        assert_eq!(
            pred.count() as u64,
            c[count_key].as_u64().unwrap(),
            "{name} pred count"
        );
        check_block(name, &pred, &gt, None, &c[px_key]);
        if let Some(mm) = c.get("mm") {
            let spacing: Vec<f64> = if dims == 2 {
                c["spacing_mm_rowcol"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap())
                    .collect()
            } else {
                // our NIfTI reader must produce the header spacing exactly (f32 widened)
                let vol = read_volume(&dir.join(c["gt_file"].as_str().unwrap())).unwrap();
                let want: Vec<f64> = c["spacing_mm_ijk_from_header"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap())
                    .collect();
                assert_eq!(vol.spacing_mm.to_vec(), want, "{name} spacing from header");
                want
            };
            check_block(name, &pred, &gt, Some(&spacing), mm);
        }
    }
    cases.len()
}

#[test]
fn metrics_match_monai_golden_values() {
    let n = check_dir(&repo_root().join("fixtures/metrics-golden"));
    assert_eq!(n, 14, "all golden cases checked");
}

#[test]
fn metrics_match_shared_golden_values_when_present() {
    let dir = std::env::var_os("EDGESEG_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared"))
        .join("golden/metrics");
    if !dir.join("metrics_golden.json").is_file() {
        eprintln!(
            "skipped: {} not present (the committed copy is checked by the other test)",
            dir.display()
        );
        return;
    }
    assert_eq!(check_dir(&dir), 14);
}

#[test]
fn hd95_differs_from_pooled_medpy_convention_where_expected() {
    // Case 09 in pixels: MONAI (per-direction q95, then max) 37.5366 vs pooled 33.0845.
    let dir = repo_root().join("fixtures/metrics-golden");
    let pred = load(&dir, "pairs2d/09_boxfill_anisotropic_mm_pred.png", 2);
    let gt = load(&dir, "pairs2d/09_boxfill_anisotropic_mm_gt.png", 2);
    let m = MetricSet::compute(&pred, &gt, None, 2.0).unwrap();
    assert!((m.hd95.unwrap() - 37.5366).abs() < 1e-3);
}
