//! edgeseg's own tract ops on the shipped edge-s bundle, through `edgeseg bench`: the
//! patterns match the nodes they were written for (a changed exporter that silently
//! loses them fails here), and `EDGESEG_PLAIN_TRACT` turns them all off.

use std::path::Path;
use std::process::Command;

fn bench(plain: bool) -> String {
    let bundle = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/zoo/edge-s.bundle");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgeseg"));
    cmd.args(["bench", "--bundle"]).arg(&bundle).args([
        "--threads",
        "1",
        "--runs",
        "1",
        "--warmup",
        "0",
        "--device",
        "cpu",
    ]);
    if plain {
        cmd.env("EDGESEG_PLAIN_TRACT", "1");
    } else {
        cmd.env_remove("EDGESEG_PLAIN_TRACT");
    }
    let o = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{text}");
    text
}

#[test]
fn edge_s_plans_use_edgeseg_ops_unless_switched_off() {
    let fused = bench(false);
    assert!(
        fused.contains(
            "edgeseg tract ops: encoder 6 Conv3x3, 10 AxisLayerNorm; decoder 3 ConvTranspose2x2, \
             1 FewRowsMatMul, 14 AxisLayerNorm"
        ),
        "{fused}"
    );
    let plain = bench(true);
    assert!(
        plain.contains("edgeseg tract ops: encoder none; decoder none"),
        "{plain}"
    );
}
