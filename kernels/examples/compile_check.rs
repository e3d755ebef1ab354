//! Compile check of every CUDA kernel, without a GPU: each source in
//! `kernels/cu/` goes through the product's own NVRTC path
//! (`edgeseg_kernels::gpu::nvrtc::compile`, PTX for `compute_XY` and CUBIN for
//! `sm_XY`), then `ptxas -v --gpu-name sm_XY` assembles the PTX and reports
//! registers, shared memory, stack frame and spills per kernel.
//!
//! Fails (exit 1) on a compile error, on any spill, when the kernels ptxas
//! reports differ from the ones `sources::SOURCES` lists, or when the committed
//! table (`--table`, default `kernels/RESOURCES.md`) differs from the fresh one;
//! `--write` rewrites the table instead of comparing.
//!
//! Run it through `kernels/check/compile-check.sh`, which installs NVRTC and
//! ptxas from PyPI into a virtual environment and points `LD_LIBRARY_PATH` at
//! them. Usage: `compile_check --ptxas PATH [--arch sm_87,sm_90] [--table FILE]
//! [--ptx-dir DIR] [--write]`.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use edgeseg_kernels::gpu::nvrtc::{self, Arch, Output};
use edgeseg_kernels::sources::SOURCES;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Resources {
    kernel: String,
    registers: u32,
    smem: u32,
    stack: u32,
    spill_stores: u32,
    spill_loads: u32,
}

/// The number right before `unit` in `line` ("40 registers" -> 40).
fn number_before(line: &str, unit: &str) -> Option<u32> {
    let i = line.find(unit)?;
    line[..i].split_whitespace().last()?.parse().ok()
}

/// Parses `ptxas -v` output into per-kernel resources, in output order.
fn parse_ptxas(out: &str) -> Result<Vec<Resources>, String> {
    let mut res: Vec<Resources> = Vec::new();
    let mut cur: Option<Resources> = None;
    for line in out.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            if let Some(r) = cur.take() {
                res.push(r);
            }
            let name = rest.split('\'').next().unwrap_or_default().to_string();
            cur = Some(Resources {
                kernel: name,
                ..Default::default()
            });
        } else if let Some(r) = cur.as_mut() {
            if line.contains("bytes stack frame") {
                r.stack = number_before(line, "bytes stack frame").ok_or(line.to_string())?;
                r.spill_stores =
                    number_before(line, "bytes spill stores").ok_or(line.to_string())?;
                r.spill_loads = number_before(line, "bytes spill loads").ok_or(line.to_string())?;
            } else if line.contains("Used ") && line.contains(" registers") {
                r.registers = number_before(line, "registers").ok_or(line.to_string())?;
                r.smem = number_before(line, "bytes smem").unwrap_or(0);
            }
        }
    }
    res.extend(cur);
    if res.is_empty() {
        return Err("ptxas reported no entry function".into());
    }
    Ok(res)
}

struct Args {
    ptxas: PathBuf,
    archs: Vec<Arch>,
    table: PathBuf,
    ptx_dir: Option<PathBuf>,
    write: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        ptxas: std::env::var_os("PTXAS").map_or_else(|| "ptxas".into(), PathBuf::from),
        archs: vec![Arch::SM87, Arch::SM90],
        table: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("RESOURCES.md"),
        ptx_dir: None,
        write: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        let mut val = || it.next().ok_or(format!("{x} needs a value"));
        match x.as_str() {
            "--ptxas" => a.ptxas = val()?.into(),
            "--table" => a.table = val()?.into(),
            "--ptx-dir" => a.ptx_dir = Some(val()?.into()),
            "--arch" => {
                a.archs = val()?
                    .split(',')
                    .map(|s| Arch::parse(s).ok_or(format!("bad architecture {s:?}")))
                    .collect::<Result<_, _>>()?
            }
            "--write" => a.write = true,
            _ => return Err(format!("unknown argument {x:?}")),
        }
    }
    Ok(a)
}

fn ptxas_version(ptxas: &PathBuf) -> Result<String, String> {
    let out = Command::new(ptxas)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", ptxas.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .find(|l| l.starts_with("Cuda compilation tools"))
        .unwrap_or("unknown")
        .trim()
        .to_string())
}

/// The outcome of compiling and assembling one source for one architecture.
struct Job {
    ok: bool,
    messages: Vec<String>,
    rows: Vec<Resources>,
}

fn check_one(
    src: &edgeseg_kernels::sources::KernelSource,
    arch: Arch,
    ptxas: &PathBuf,
    dir: &std::path::Path,
) -> Job {
    let mut job = Job {
        ok: false,
        messages: Vec::new(),
        rows: Vec::new(),
    };
    let what = format!("{} for {}", src.name, arch.sm());
    let t0 = std::time::Instant::now();
    // The product path: CUBIN for the real architecture (what Gpu::module loads) ...
    if let Err(e) = nvrtc::compile(src, arch, Output::Cubin) {
        job.messages.push(format!("FAIL {what} (cubin): {e}"));
        return job;
    }
    // ... and PTX for the virtual one, which ptxas reports on.
    let ptx = match nvrtc::compile(src, arch, Output::Ptx) {
        Ok(c) => {
            if !c.log.trim().is_empty() {
                job.messages
                    .push(format!("NVRTC log for {what}:\n{}", c.log.trim()));
            }
            c.image
        }
        Err(e) => {
            job.messages.push(format!("FAIL {what}: {e}"));
            return job;
        }
    };
    let path = dir.join(format!(
        "{}.{}.ptx",
        src.name.trim_end_matches(".cu"),
        arch.sm()
    ));
    if let Err(e) = std::fs::write(&path, &ptx) {
        job.messages.push(format!("FAIL {}: {e}", path.display()));
        return job;
    }
    let out = match Command::new(ptxas)
        .args(["-v", "--gpu-name", &arch.sm(), "-o"])
        .arg(path.with_extension("cubin"))
        .arg(&path)
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            job.messages
                .push(format!("FAIL cannot run {}: {e}", ptxas.display()));
            return job;
        }
    };
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        job.messages.push(format!("FAIL ptxas {what}:\n{text}"));
        return job;
    }
    let res = match parse_ptxas(&text) {
        Ok(r) => r,
        Err(e) => {
            job.messages
                .push(format!("FAIL parsing ptxas output for {what}: {e}\n{text}"));
            return job;
        }
    };
    job.ok = true;
    let mut got: Vec<&str> = res.iter().map(|r| r.kernel.as_str()).collect();
    let mut want: Vec<&str> = src.kernels.to_vec();
    got.sort_unstable();
    want.sort_unstable();
    if got != want {
        job.messages.push(format!(
            "FAIL {what}: ptxas built kernels {got:?}, SOURCES lists {want:?}"
        ));
        job.ok = false;
    }
    for r in &res {
        if r.spill_stores > 0 || r.spill_loads > 0 {
            job.messages.push(format!(
                "FAIL {} on {}: spills ({} bytes stored, {} loaded)",
                r.kernel,
                arch.sm(),
                r.spill_stores,
                r.spill_loads
            ));
            job.ok = false;
        }
    }
    job.messages.push(format!(
        "{} {what} ({:.1} s)",
        if job.ok { "ok  " } else { "FAIL" },
        t0.elapsed().as_secs_f64()
    ));
    job.rows = res;
    job
}

fn run() -> Result<bool, String> {
    let args = parse_args()?;
    nvrtc::require_nvrtc().map_err(|e| e.to_string())?;
    let (ma, mi) = nvrtc::nvrtc_version().map_err(|e| e.to_string())?;
    let ptxas_ver = ptxas_version(&args.ptxas)?;
    println!("NVRTC {ma}.{mi}; ptxas: {ptxas_ver}");
    let tmp = std::env::temp_dir().join(format!("edgeseg-compile-check-{}", std::process::id()));
    let dir = args.ptx_dir.clone().unwrap_or(tmp.clone());
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // One job per (source, architecture), run on all cores (NVRTC is thread-safe
    // for distinct programs); results are reported in a fixed order.
    let jobs: Vec<_> = SOURCES
        .iter()
        .flat_map(|s| args.archs.iter().map(move |&a| (s, a)))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: std::sync::Mutex<Vec<Option<Job>>> =
        std::sync::Mutex::new((0..jobs.len()).map(|_| None).collect());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|sc| {
        for _ in 0..workers {
            sc.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&(src, arch)) = jobs.get(i) else {
                    break;
                };
                let r = check_one(src, arch, &args.ptxas, &dir);
                results.lock().unwrap()[i] = Some(r);
            });
        }
    });
    let mut ok = true;
    let mut rows = Vec::new();
    for (i, r) in results.into_inner().unwrap().into_iter().enumerate() {
        let r = r.expect("every job ran");
        for m in &r.messages {
            println!("{m}");
        }
        ok &= r.ok;
        rows.extend(r.rows.into_iter().map(|x| (jobs[i].0.name, jobs[i].1, x)));
    }
    if args.ptx_dir.is_none() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    rows.sort_by(|a, b| (a.0, &a.2.kernel, a.1).cmp(&(b.0, &b.2.kernel, b.1)));
    let mut table = String::new();
    table.push_str("# Kernel resources\n\n");
    table.push_str(
        "Generated by `kernels/check/compile-check.sh` (do not edit): every kernel compiled with \
         NVRTC through `edgeseg_kernels::gpu::nvrtc` and assembled with `ptxas -v`. CI fails on \
         any spill and when this table is stale.\n\n",
    );
    table.push_str(&format!("NVRTC {ma}.{mi}; ptxas: {ptxas_ver}.\n\n"));
    table.push_str(
        "| source | kernel | arch | registers | static smem (B) | stack (B) | spill st/ld (B) |\n\
         |---|---|---|---:|---:|---:|---:|\n",
    );
    for (s, arch, r) in &rows {
        table.push_str(&format!(
            "| {s} | `{}` | {} | {} | {} | {} | {}/{} |\n",
            r.kernel,
            arch.sm(),
            r.registers,
            r.smem,
            r.stack,
            r.spill_stores,
            r.spill_loads
        ));
    }
    print!("\n{table}");
    if args.write {
        std::fs::write(&args.table, &table)
            .map_err(|e| format!("{}: {e}", args.table.display()))?;
        println!("\nwrote {}", args.table.display());
    } else {
        let committed = std::fs::read_to_string(&args.table).unwrap_or_default();
        if committed != table {
            println!(
                "\nFAIL {} is stale: it differs from the table above (rerun with --write and commit)",
                args.table.display()
            );
            ok = false;
        }
    }
    Ok(ok)
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => {
            println!("\ncompile check: all kernels compile for every architecture, no spills");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!("\ncompile check FAILED");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("compile check error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ptxas_12_output() {
        let out = "ptxas info    : 0 bytes gmem\n\
ptxas info    : Compiling entry function 'pre_resize' for 'sm_87'\n\
ptxas info    : Function properties for pre_resize\n\
    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n\
ptxas info    : Used 40 registers, used 1 barriers, 8 bytes smem, 464 bytes cmem[0]\n\
ptxas info    : Compiling entry function 'k2' for 'sm_87'\n\
ptxas info    : Function properties for k2\n\
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
ptxas info    : Used 8 registers, 380 bytes cmem[0]\n";
        let r = parse_ptxas(out).unwrap();
        assert_eq!(
            r[0],
            Resources {
                kernel: "pre_resize".into(),
                registers: 40,
                smem: 8,
                stack: 8,
                spill_stores: 4,
                spill_loads: 12
            }
        );
        assert_eq!((r[1].registers, r[1].smem), (8, 0));
        assert!(parse_ptxas("nothing").is_err());
    }
}
