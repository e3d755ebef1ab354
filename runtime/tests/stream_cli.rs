//! The streaming commands end to end: `edgeseg run` on Y4M, raw-stdin, folder
//! and manifest inputs with the mock backend, `--ai-off`, a bundle that cannot
//! be opened (fallback to AI off), and `edgeseg demo` on the committed sequence.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use edgeseg_runtime::stream::source::{ImageListSource, Source, Y4mSource};
use edgeseg_runtime::stream::y4m::Y4mWriter;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_edgeseg"))
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("edgeseg-stream-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/stream")
}

fn records(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn y4m_frames(path: &Path) -> usize {
    let mut s = Y4mSource::open(path).unwrap();
    let mut n = 0;
    while let Some(f) = s.next_frame() {
        f.unwrap();
        n += 1;
    }
    n
}

fn run_ok(args: &[&str]) -> String {
    let out = bin().args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{args:?}: {text}");
    text
}

#[test]
fn run_on_a_y4m_file_writes_video_masks_and_one_log_line_per_frame() {
    let dir = tmp("y4m");
    let input = dir.join("in.y4m");
    let mut w = Y4mWriter::new(std::fs::File::create(&input).unwrap(), 50, 1);
    for i in 0..30usize {
        let rgb: Vec<u8> = (0..64 * 48)
            .flat_map(|p| {
                let (x, y) = (p % 64, p / 64);
                let d = (x as i64 - 20 - i as i64).pow(2) + (y as i64 - 24).pow(2);
                if d < 64 {
                    [240, 240, 240]
                } else {
                    [60, 60, 60]
                }
            })
            .collect();
        w.write_rgb(64, 48, &rgb).unwrap();
    }
    w.finish().unwrap();
    let out = dir.join("out");
    let text = run_ok(&[
        "run",
        "--mock",
        "delay=2",
        "--input",
        input.to_str().unwrap(),
        "--prompt",
        "track:8,12,36,36",
        "--out",
        out.to_str().unwrap(),
        "--png-frames",
    ]);
    assert!(text.contains("frames: in 30 out 30 errors 0"), "{text}");
    let recs = records(&out);
    assert_eq!(recs.len(), 30);
    assert!(recs.iter().any(|r| r["overlay"] == "drawn"), "{text}");
    assert_eq!(y4m_frames(&out.join("overlay.y4m")), 30);
    assert_eq!(std::fs::read_dir(out.join("frames")).unwrap().count(), 30);
    assert!(std::fs::read_dir(out.join("masks")).unwrap().count() > 0);
}

#[test]
fn raw_frames_on_stdin_with_a_truncated_tail() {
    let dir = tmp("raw");
    let mut child = bin()
        .args([
            "run",
            "--ai-off",
            "--input",
            "raw:8x4:nv12",
            "--prompt",
            "box:0,0,7,3",
            "--out",
        ])
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let frame = [100u8; 8 * 4 * 3 / 2];
    let mut stdin = child.stdin.take().unwrap();
    for _ in 0..5 {
        stdin.write_all(&frame).unwrap();
    }
    stdin.write_all(&frame[..10]).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("frames: in 6 out 5 errors 1"), "{text}");
    let recs = records(&dir);
    assert_eq!(recs.len(), 6);
    assert!(recs[5]["error"]
        .as_str()
        .unwrap()
        .contains("truncated raw nv12 frame: 10 of 48 bytes"));
    assert!(recs[..5].iter().all(|r| r["overlay"] == "off"));
}

#[test]
fn an_unopenable_bundle_falls_back_to_ai_off_and_the_video_goes_on() {
    let dir = tmp("nobundle");
    let text = run_ok(&[
        "run",
        "--bundle",
        "/nonexistent/model.bundle",
        "--input",
        fixtures().join("cvc_seq12").to_str().unwrap(),
        "--prompt",
        "box:164,66,266,242",
        "--out",
        dir.to_str().unwrap(),
        "--fps",
        "0",
    ]);
    assert!(
        text.contains("fallback: backend bundle model.bundle failed"),
        "{text}"
    );
    assert!(text.contains("frames: in 25 out 25 errors 0"), "{text}");
}

#[test]
fn bad_arguments_are_refused_with_a_message() {
    for args in [
        vec![
            "run",
            "--ai-off",
            "--input",
            "clip.mp4",
            "--prompt",
            "box:1,1,2,2",
            "--out",
            "/tmp/x",
        ],
        vec![
            "run",
            "--ai-off",
            "--input",
            "synthetic:8x8",
            "--prompt",
            "lasso:1",
            "--out",
            "/tmp/x",
        ],
        vec![
            "run",
            "--input",
            "synthetic:8x8",
            "--prompt",
            "box:1,1,2,2",
            "--out",
            "/tmp/x",
        ],
    ] {
        let out = bin().args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
}

#[test]
fn manifest_order_is_per_sequence_then_frame() {
    let dir = tmp("manifest");
    let png = std::fs::read(fixtures().join("cvc_seq12_mask228.png")).unwrap();
    for n in ["a", "b", "c", "d"] {
        std::fs::write(dir.join(format!("{n}.png")), &png).unwrap();
    }
    std::fs::write(
        dir.join("manifest.csv"),
        "image,mask,split,group,frame\nd.png,m,test,seq2,5\nc.png,m,test,seq10,1\nb.png,m,test,seq2,3\na.png,m,train,seq1,9\n",
    )
    .unwrap();
    let m = ImageListSource::manifest(&dir.join("manifest.csv"), None, 25.0).unwrap();
    let names: Vec<_> = m
        .files()
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["a.png", "b.png", "d.png", "c.png"]);
    let m = ImageListSource::manifest(&dir.join("manifest.csv"), Some("seq2"), 25.0).unwrap();
    assert_eq!(m.files().len(), 2);
    assert!(ImageListSource::manifest(&dir.join("manifest.csv"), Some("seq9"), 25.0).is_err());
    std::fs::write(dir.join("bad.csv"), "image,frame\na.png,x\n").unwrap();
    let e = ImageListSource::manifest(&dir.join("bad.csv"), None, 25.0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.csv:2"), "{e}");
}

#[test]
fn demo_runs_on_the_committed_sequence() {
    let dir = tmp("demo");
    let text = run_ok(&["demo", "--out", dir.to_str().unwrap(), "--fps", "100"]);
    assert!(text.contains("CVC-ClinicDB sequence 12"), "{text}");
    // Either a model is available, or the demo says plainly that it is not.
    assert!(
        text.contains("model: ") || text.contains("MODEL NOT AVAILABLE"),
        "{text}"
    );
    assert!(text.contains("frames: in 25 out 25 errors 0"), "{text}");
    assert_eq!(y4m_frames(&dir.join("overlay.y4m")), 25);
}
