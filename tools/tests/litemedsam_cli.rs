//! `edgeseg-tools segment` and the `litemedsam` eval segmenter against the reference masks.
//!
//! The MONAI golden pairs 01, 08 and 12 (`fixtures/metrics-golden/pairs2d/*_pred.png`) are the
//! masks the original PyTorch LiteMedSAM produced on fixture frames with the ground-truth box:
//! ours must agree with IoU >= 0.995. Needs the teacher weights (`../shared/teacher/` or
//! `$EDGESEG_TEACHER`); skipped with a printed reason otherwise.

use std::path::PathBuf;
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn weights() -> Option<PathBuf> {
    let p = std::env::var_os("EDGESEG_TEACHER")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/teacher/lite_medsam.pth"));
    p.is_file().then_some(p)
}

fn grey(path: &std::path::Path) -> Vec<bool> {
    image::open(path)
        .unwrap()
        .to_luma8()
        .into_raw()
        .into_iter()
        .map(|v| v > 127)
        .collect()
}

fn iou(a: &[bool], b: &[bool]) -> f64 {
    let inter = a.iter().zip(b).filter(|(x, y)| **x && **y).count();
    let union = a.iter().zip(b).filter(|(x, y)| **x || **y).count();
    inter as f64 / union as f64
}

#[test]
fn segment_matches_reference_masks() {
    let Some(w) = weights() else {
        eprintln!("skipped: LiteMedSAM weights not found (../shared/teacher/lite_medsam.pth or $EDGESEG_TEACHER)");
        return;
    };
    let dir = std::env::temp_dir().join(format!("edgeseg-seg-{}", std::process::id()));
    // (fixture image, GT box x0,y0,x1,y1 from the golden README, reference mask)
    let cases = [
        (
            "cvc_490.png",
            "76,26,349,280",
            "01_normal_overlap_lms_cvc490_pred.png",
        ),
        (
            "cvc_375.png",
            "166,139,208,167",
            "12_small_lms_cvc375_pred.png",
        ),
        (
            "hc18_276_HC.png",
            "83,43,570,422",
            "08_nonsquare_lms_hc18_mm_pred.png",
        ),
    ];
    for (img, bx, reference) in cases {
        let out = dir.join(format!("{img}.mask.png"));
        let overlay = dir.join(format!("{img}.overlay.png"));
        let o = Command::new(env!("CARGO_BIN_EXE_edgeseg-tools"))
            .args(["segment", "--weights"])
            .arg(&w)
            .arg("--image")
            .arg(repo().join("fixtures/sample2d/images").join(img))
            .args(["--box", bx, "--out"])
            .arg(&out)
            .arg("--overlay")
            .arg(&overlay)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let ours = grey(&out);
        let want = grey(
            &repo()
                .join("fixtures/metrics-golden/pairs2d")
                .join(reference),
        );
        let j = iou(&ours, &want);
        assert!(j >= 0.995, "{img}: IoU {j} vs the reference mask");
        assert!(overlay.is_file());
    }
}

#[test]
fn segment_refuses_bad_prompts_clearly() {
    let img = repo().join("fixtures/sample2d/images/cvc_375.png");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_edgeseg-tools"))
            .arg("segment")
            .arg("--image")
            .arg(&img)
            .args(["--out", "/dev/null"])
            .args(args)
            .output()
            .unwrap()
    };
    let o = run(&["--box", "10,10,5,20"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("x0 <= x1"));
    let o = run(&["--box", "1,2,3"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("4 comma-separated"));
    let o = run(&["--box", "0,0,384,100"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("outside"));
    let o = run(&["--point", "5,5,2"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("label must be"));
    let o = run(&[]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("give a prompt"));
    let o = run(&["--box", "1,1,5,5", "--weights", "/nonexistent/w.pth"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/w.pth"));
}
