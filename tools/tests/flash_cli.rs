//! `keygen`, `device-sim`, `device info` and `flash` end to end over a pseudo-terminal.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_edgeseg-tools")
}

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

struct Sim(Child);

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `device-sim` and returns it with the pty path it prints.
fn start_sim(dir: &Path) -> (Sim, String) {
    let mut child = Command::new(bin())
        .current_dir(dir)
        .args([
            "device-sim",
            "--flash",
            "sim.flash",
            "--pubkey",
            "dev.pub",
            "--seconds",
            "60",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pty = line
        .split_whitespace()
        .find(|w| w.starts_with("/dev/"))
        .unwrap_or_else(|| panic!("no pty in {line:?}"))
        .to_string();
    (Sim(child), pty)
}

#[test]
fn flash_a_signed_image_into_the_simulator() {
    let dir: PathBuf = std::env::temp_dir().join(format!("edgeseg-flash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    assert!(run(&dir, &["keygen", "--out", "dev"]).status.success());
    assert!(run(&dir, &["keygen", "--out", "other"]).status.success());
    let image: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(dir.join("model.bin"), &image).unwrap();
    std::fs::write(dir.join("older.bin"), &image[..5000]).unwrap();

    let (_sim, pty) = start_sim(&dir);
    let info = run(&dir, &["device", "info", "--port", &pty]);
    assert!(
        info.status.success(),
        "{}",
        String::from_utf8_lossy(&info.stderr)
    );
    assert!(String::from_utf8_lossy(&info.stdout).contains("model            none"));

    // an image signed with a key the device does not pin is refused
    let o = run(
        &dir,
        &[
            "flash",
            "--port",
            &pty,
            "--bundle",
            "model.bin",
            "--version",
            "2",
            "--key",
            "other.key",
        ],
    );
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("BadSignature"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    let o = run(
        &dir,
        &[
            "flash",
            "--port",
            &pty,
            "--bundle",
            "model.bin",
            "--version",
            "2",
            "--key",
            "dev.key",
            "--pubkey",
            "dev.pub",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("device confirmed version 2"));

    // a lower version is refused, the running model stays
    let o = run(
        &dir,
        &[
            "flash",
            "--port",
            &pty,
            "--bundle",
            "older.bin",
            "--version",
            "1",
            "--key",
            "dev.key",
        ],
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("VersionRollback"));
    let info =
        String::from_utf8_lossy(&run(&dir, &["device", "info", "--port", &pty]).stdout).to_string();
    assert!(info.contains("model            version 2"), "{info}");

    // the same image again: nothing to send
    let o = run(
        &dir,
        &[
            "flash",
            "--port",
            &pty,
            "--bundle",
            "model.bin",
            "--version",
            "2",
            "--key",
            "dev.key",
        ],
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("already runs this image"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn flash_errors_are_clear() {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("edgeseg-flash-err-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    assert!(run(&dir, &["keygen", "--out", "k"]).status.success());
    let o = run(&dir, &["keygen", "--out", "k"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("refusing to overwrite"));
    std::fs::write(dir.join("m.bin"), b"abc").unwrap();
    let o = run(
        &dir,
        &[
            "flash",
            "--port",
            "/dev/does-not-exist",
            "--bundle",
            "m.bin",
            "--version",
            "1",
            "--key",
            "k.key",
        ],
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("/dev/does-not-exist"));
    let o = run(
        &dir,
        &[
            "flash",
            "--port",
            "/dev/null",
            "--bundle",
            "missing.bin",
            "--version",
            "1",
            "--key",
            "k.key",
        ],
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing.bin"));
    let _ = std::fs::remove_dir_all(&dir);
}
