//! The CUDA kernels' own source, run on the CPU and checked against the CPU
//! references, so that the kernels are tested on machines without a GPU (CI).
//!
//! `tests/cpu_emu/` holds a small emulation of the CUDA C subset the kernels use
//! (one OS thread per CUDA thread, blocks in sequence, barriers for
//! `__syncthreads` and warp shuffles). Each `kernels/cu/*.cu` is compiled
//! unchanged, with its prelude, by the host C++ compiler (`$CXX`, else `c++`),
//! and launched with the GPU launchers' own grid and block shapes
//! (`launch_shapes`). Pre/post-processing and the int8 GEMM must match bit for
//! bit; the rest within the tolerance tiers (`reference::tol`). What this cannot
//! show: GPU-only behaviour (memory model, warp scheduling, PTX `cvt`/`ex2`
//! rounding, performance); the GPU parity tests (`gpu_parity.rs`) cover that
//! where a GPU exists. Without a C++ compiler the tests print why and pass.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

use edgeseg_kernels::launch_shapes::{self as shapes, Shape, TooLarge};
use edgeseg_kernels::prepost::longest_side_size;
use edgeseg_kernels::reference::nn::{self, Act, AttnShape, ConvShape, Strides};
use edgeseg_kernels::reference::tol::{self, check_close, max_abs};
use edgeseg_kernels::reference::{
    self, fewshot, from_f16_bits, plan_resize, plan_upsample, to_f16_bits, Frame, OverlayStyle,
    PixelFormat,
};
use edgeseg_kernels::sources::{full_source, SOURCES};
use proptest::prelude::*;

const SHIM_H: &str = include_str!("cpu_emu/cuda_cpu.h");
const SHIM_CPP: &str = include_str!("cpu_emu/runtime.cpp");

/// `extern __shared__ T name[];` (dynamic shared memory) has no macro spelling on
/// the CPU: it becomes a pointer into the launch's dynamic buffer.
fn cpu_source(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(i) = rest.find("extern __shared__ ") {
        out.push_str(&rest[..i]);
        let decl = &rest[i + "extern __shared__ ".len()..];
        let end = decl.find("[];").expect("extern __shared__ T name[];");
        let (ty, name) = decl[..end].trim().rsplit_once(' ').expect("type and name");
        out.push_str(&format!("{ty}* {name} = ({ty}*)emu_dyn_smem;"));
        rest = &decl[end + 3..];
    }
    out.push_str(rest);
    out
}

struct Emu {
    lib: libloading::Library,
}

fn say(msg: &str) {
    let _ = writeln!(std::io::stderr(), "cpu_emulated: {msg}");
}

fn build() -> Result<Emu, String> {
    let mut hasher_input = String::from(SHIM_H);
    hasher_input.push_str(SHIM_CPP);
    let mut files = vec![("cuda_cpu.h".to_string(), SHIM_H.to_string())];
    files.push(("runtime.cpp".into(), SHIM_CPP.to_string()));
    for s in SOURCES {
        let src = format!("#include \"cuda_cpu.h\"\n{}", cpu_source(&full_source(s)));
        hasher_input.push_str(&src);
        files.push((format!("{}.cpp", s.name.trim_end_matches(".cu")), src));
    }
    let key = edgeseg_kernels::sources::source_hash(&edgeseg_kernels::sources::KernelSource {
        name: "emu",
        code: Box::leak(hasher_input.into_boxed_str()),
        kernels: &[],
    });
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cpu_emu-{}", &key[..16]));
    let so = dir.join("libedgeseg_cpu_emu.so");
    if !so.exists() {
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mut cpps = Vec::new();
        for (name, text) in &files {
            std::fs::write(dir.join(name), text).map_err(|e| e.to_string())?;
            if name.ends_with(".cpp") {
                cpps.push(dir.join(name));
            }
        }
        let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
        let tmp = dir.join(format!("lib.{}.so", std::process::id()));
        let out = std::process::Command::new(&cxx)
            .args(["-std=c++20", "-O1", "-fPIC", "-shared", "-pthread"])
            .args(["-ffp-contract=off", "-fno-fast-math", "-w", "-I"])
            .arg(&dir)
            .args(&cpps)
            .arg("-o")
            .arg(&tmp)
            .output()
            .map_err(|e| format!("no C++ compiler ({cxx}: {e})"))?;
        if !out.status.success() {
            return Err(format!(
                "{cxx} failed on the kernels:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        std::fs::rename(&tmp, &so).map_err(|e| e.to_string())?;
    }
    // SAFETY: the library was just built from the shim and the kernel sources; loading it
    // runs only the C++ runtime's static initializers.
    let lib = unsafe { libloading::Library::new(&so) }.map_err(|e| e.to_string())?;
    Ok(Emu { lib })
}

fn emu() -> Option<&'static Emu> {
    static E: OnceLock<Result<Emu, String>> = OnceLock::new();
    match E.get_or_init(build) {
        Ok(e) => Some(e),
        Err(e) if e.starts_with("no C++ compiler") => {
            static ONCE: OnceLock<()> = OnceLock::new();
            ONCE.get_or_init(|| say(&format!("SKIPPING: {e}")));
            None
        }
        // A compiler that rejects the kernels is a failure, not a skip.
        Err(e) => panic!("{e}"),
    }
}

type EmuRun = unsafe extern "C" fn(
    u32,
    u32,
    u32,
    u32,
    u32,
    u32,
    usize,
    extern "C" fn(*mut c_void),
    *mut c_void,
);

extern "C" fn trampoline<F: Fn() + Sync>(user: *mut c_void) {
    // SAFETY: `user` is the `&F` that `launch` passes and keeps alive for the whole call.
    let f = unsafe { &*(user as *const F) };
    f();
}

impl Emu {
    /// The kernel `name` as a typed function pointer.
    fn kernel<T: Copy>(&self, name: &str) -> T {
        // SAFETY: every call site names the kernel's C signature (`T`), mirroring its
        // declaration in kernels/cu; the symbol lives as long as the library (static).
        unsafe {
            *self
                .lib
                .get::<T>(name.as_bytes())
                .unwrap_or_else(|e| panic!("{name}: {e}"))
        }
    }

    /// Runs `body` (one kernel call) as every thread of the launch `shape` (the
    /// GPU launchers' own, from `launch_shapes`).
    fn launch<F: Fn() + Sync>(&self, shape: Result<Shape, TooLarge>, body: F) {
        let Shape { grid, block, smem } = shape.expect("launch shape");
        let run: EmuRun = self.kernel("emu_run");
        // SAFETY: emu_run calls `trampoline::<F>(&body)` from its fibers and returns only
        // when all have finished, so `body` outlives every use.
        unsafe {
            run(
                grid.0,
                grid.1,
                grid.2,
                block.0,
                block.1,
                block.2,
                smem as usize,
                trampoline::<F>,
                &body as *const F as *mut c_void,
            )
        };
    }
}

macro_rules! emu_or_skip {
    () => {
        match emu() {
            Some(e) => e,
            None => return Ok(()),
        }
    };
}

fn vals(seed: u64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            lo + (hi - lo) * ((s >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect()
}

fn bytes(seed: u64, n: usize) -> Vec<u8> {
    vals(seed, n, 0.0, 256.0)
        .into_iter()
        .map(|v| v.min(255.0) as u8)
        .collect()
}

type R = Result<(), TestCaseError>;

fn close(got: &[f32], want: &[f32], tier: tol::Tier, floor: f64) -> R {
    check_close(got, want, tier, floor).map_err(TestCaseError::fail)
}

/// Addresses travel into the (Sync) kernel closures as integers.
fn a<T>(p: *const T) -> usize {
    p as usize
}

// Kernel signatures (kernels/cu), pointers as usize.
type PreResize = unsafe extern "C" fn(
    usize,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    usize,
    usize,
    usize,
    usize,
    i32,
    i32,
    f32,
    usize,
    usize,
);
type PreNorm = unsafe extern "C" fn(usize, usize, i32, i32, i32, usize);
type PostK = unsafe extern "C" fn(
    usize,
    i32,
    i32,
    i32,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    u32,
    f32,
    f32,
    u32,
);
type LnK = unsafe extern "C" fn(usize, usize, usize, usize, i32, i32, f32);
type Ln2dK = unsafe extern "C" fn(usize, usize, usize, usize, i32, i32, i32, f32);
type EltK = unsafe extern "C" fn(usize, usize, i64);
type SoftK = unsafe extern "C" fn(usize, usize, i32, i32);
#[rustfmt::skip]
type AttnK = unsafe extern "C" fn(usize, usize, usize, usize, usize, i32, i32, f32, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64);
type WinK = unsafe extern "C" fn(usize, usize, i32, i32, i32, i32, i32);
type Conv3K =
    unsafe extern "C" fn(usize, usize, usize, usize, usize, i32, i32, i32, i32, i32, i32, i32, i32);
type DwK =
    unsafe extern "C" fn(usize, usize, usize, usize, usize, i32, i32, i32, i32, i32, i32, i32);
type Conv1K = unsafe extern "C" fn(usize, usize, usize, usize, usize, i32, i32, i32, i32);
type GemmK = unsafe extern "C" fn(usize, usize, usize, usize, i32, i32, i32, i32);
type GemmI8K = unsafe extern "C" fn(usize, usize, usize, usize, usize, i32, i32, i32);
type PoolK = unsafe extern "C" fn(usize, usize, usize, i32, i32, f32);
type CosK = unsafe extern "C" fn(usize, usize, usize, i32, i32, i32, f32);
type AddK = unsafe extern "C" fn(usize, usize, usize, i64, i32);
type BcastK = unsafe extern "C" fn(usize, usize, usize, i64, i32);
type TransK = unsafe extern "C" fn(usize, usize, i32, i32);
type GatherK = unsafe extern "C" fn(usize, usize, i64, i64, i64, i64, i32, i32, i32, i32);
type ConvTK = unsafe extern "C" fn(usize, usize, usize, usize, i32, i32, i32, i32);
type PriorK =
    unsafe extern "C" fn(usize, usize, usize, usize, f32, f32, f32, f32, f32, f32, i32, i32);

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(cases(24))]

    /// pre_resize + pre_normalize_{f32,f16}: bit-exact with `reference::preprocess_frame`.
    #[test]
    fn preprocess_kernels_match_reference(
        fmt in 0usize..4, hw in 1usize..90, ww in 1usize..90, pad in 0usize..5,
        size in prop::sample::select(vec![32usize, 64]), f16 in any::<bool>(), seed in any::<u64>(),
    ) {
        let e = emu_or_skip!();
        let format = [PixelFormat::Rgb8, PixelFormat::Grey8, PixelFormat::Yuyv, PixelFormat::Nv12][fmt];
        let (w, h) = (2 * ww, 2 * hw);
        let stride = format.min_stride(w).unwrap() + pad;
        let rows = if format == PixelFormat::Nv12 { h * 3 / 2 } else { h };
        let data = bytes(seed, stride * rows);
        let frame = Frame { format, width: w, height: h, stride, data: &data };
        let (nh, nw) = longest_side_size(h, w, size);
        if nh == 0 || nw == 0 {
            // Too thin to resize (e.g. 138x2 to 32 wide): the reference and the
            // kernels' launch plan must both refuse it.
            prop_assert!(reference::preprocess_frame(&frame, size).is_err());
            prop_assert!(plan_resize(h, w, nh, nw).is_err());
            return Ok(());
        }
        let want = reference::preprocess_frame(&frame, size).unwrap();
        let t = plan_resize(h, w, nh, nw).unwrap();
        let mut resized = vec![0u8; nh * nw * 3];
        let mut minmax = [255u32, 0u32];
        let k: PreResize = e.kernel("pre_resize");
        let (pf, pr, pm) = (a(data.as_ptr()), a(resized.as_mut_ptr()), a(minmax.as_mut_ptr()));
        let (xi, xf, yi, yf) = (a(t.xi.as_ptr()), a(t.xf.as_ptr()), a(t.yi.as_ptr()), a(t.yf.as_ptr()));
        // SAFETY: the kernel's C signature; every pointer is a live buffer sized for this launch.
        e.launch(shapes::pre_resize(nh, nw), || unsafe {
            k(pf, format.code(), h as i32, w as i32, stride as i32, t.mode, nh as i32, nw as i32,
              xi, xf, yi, yf, t.fsx, t.fsy, t.inv_area, pr, pm)
        });
        prop_assert_eq!(&resized, &want.resized);
        let n = 3 * size * size;
        if f16 {
            let mut out = vec![0u16; n];
            let (po, k) = (a(out.as_mut_ptr()), e.kernel::<PreNorm>("pre_normalize_f16"));
            // SAFETY: the kernel's C signature; every pointer is a live buffer sized for this launch.
            e.launch(shapes::pre_normalize(size), || unsafe { k(pr, pm, nh as i32, nw as i32, size as i32, po) });
            prop_assert_eq!(out, to_f16_bits(&want.input));
        } else {
            let mut out = vec![0f32; n];
            let (po, k) = (a(out.as_mut_ptr()), e.kernel::<PreNorm>("pre_normalize_f32"));
            // SAFETY: the kernel's C signature; every pointer is a live buffer sized for this launch.
            e.launch(shapes::pre_normalize(size), || unsafe { k(pr, pm, nh as i32, nw as i32, size as i32, po) });
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&out), bits(&want.input));
        }
    }

    /// post_mask_overlay: bit-exact with `reference::postprocess_overlay`.
    #[test]
    fn postprocess_kernel_matches_reference(
        lsz in prop::sample::select(vec![16usize, 64]), fh in 0.2f64..1.0, fw in 0.2f64..1.0,
        oh in 1usize..90, ow in 1usize..90, overlay in any::<bool>(), alpha in 0.0f32..1.0, seed in any::<u64>(),
    ) {
        let e = emu_or_skip!();
        let nh = ((lsz as f64 * fh) as usize).clamp(1, lsz);
        let nw = ((lsz as f64 * fw) as usize).clamp(1, lsz);
        let logits = vals(seed, lsz * lsz, -4.0, 3.0);
        let rgb = bytes(seed ^ 5, oh * ow * 3);
        let style = OverlayStyle { alpha, ..OverlayStyle::default() };
        let want = reference::postprocess_overlay(&logits, lsz, lsz, nh, nw, oh, ow, overlay.then_some(&rgb[..]), &style).unwrap();
        let (yi, yw) = plan_upsample(nh, oh);
        let (xi, xw) = plan_upsample(nw, ow);
        let mut mask = vec![0u8; oh * ow];
        let mut out = vec![0u8; oh * ow * 3];
        let (pin, pout) = if overlay { (a(rgb.as_ptr()), a(out.as_mut_ptr())) } else { (0, 0) };
        let pack = |c: [u8; 3]| u32::from(c[0]) | (u32::from(c[1]) << 8) | (u32::from(c[2]) << 16);
        let (fill, contour, oma) = (pack(style.fill), pack(style.contour), 1.0f32 - alpha);
        let k: PostK = e.kernel("post_mask_overlay");
        let p = (a(logits.as_ptr()), a(yi.as_ptr()), a(yw.as_ptr()), a(xi.as_ptr()), a(xw.as_ptr()), a(mask.as_mut_ptr()));
        // SAFETY: the kernel's C signature; every pointer is a live buffer sized for this launch.
        e.launch(shapes::post_mask_overlay(oh, ow), || unsafe {
            k(p.0, lsz as i32, oh as i32, ow as i32, p.1, p.2, p.3, p.4, p.5, pin, pout, fill, alpha, oma, contour)
        });
        prop_assert_eq!(&mask, &want.mask);
        if overlay {
            prop_assert_eq!(Some(out), want.overlay);
        }
    }

    #[test]
    fn norm_gelu_softmax_kernels_match_reference(rows in 1usize..12, c in 1usize..700, hw in 1usize..100, seed in any::<u64>()) {
        let e = emu_or_skip!();
        let x = vals(seed, rows * c, -4.0, 4.0);
        let g = vals(seed ^ 1, c, 0.5, 1.5);
        let b = vals(seed ^ 2, c, -0.5, 0.5);
        let mut y = vec![0f32; x.len()];
        let k: LnK = e.kernel("layernorm_f32");
        let p = (a(x.as_ptr()), a(g.as_ptr()), a(b.as_ptr()), a(y.as_mut_ptr()));
        // SAFETY: the kernel's C signature; every pointer is a live buffer sized for this launch.
        e.launch(shapes::layernorm(rows, c), || unsafe { k(p.0, p.1, p.2, p.3, rows as i32, c as i32, 1e-6) });
        close(&y, &nn::layer_norm(&x, rows, c, &g, &b, 1e-6).unwrap(), tol::F32, 1.0)?;

        let n = 1 + rows % 2;
        let x2 = vals(seed ^ 3, n * c * hw, -4.0, 4.0);
        let mut y2 = vec![0f32; x2.len()];
        let k: Ln2dK = e.kernel("layernorm2d_f32");
        let p = (a(x2.as_ptr()), a(g.as_ptr()), a(b.as_ptr()), a(y2.as_mut_ptr()));
        // SAFETY: the kernel's C signature; every pointer is a live buffer sized for this launch.
        e.launch(shapes::layernorm2d(n, hw), || unsafe { k(p.0, p.1, p.2, p.3, n as i32, c as i32, hw as i32, 1e-6) });
        close(&y2, &nn::layer_norm2d(&x2, n, c, hw, &g, &b, 1e-6).unwrap(), tol::F32, 1.0)?;

        let xs = vals(seed ^ 4, rows * c, -8.0, 8.0);
        let mut gy = vec![0f32; xs.len()];
        let k: EltK = e.kernel("gelu_f32");
        let p = (a(xs.as_ptr()), a(gy.as_mut_ptr()));
        // SAFETY: the kernel's C signature; every pointer is a live buffer sized for this launch.
        e.launch(shapes::elementwise(xs.len()), || unsafe { k(p.0, p.1, xs.len() as i64) });
        close(&gy, &nn::gelu(&xs), tol::F32, 1e-6)?;
        let xh = to_f16_bits(&xs);
        let mut yh = vec![0u16; xh.len()];
        let k: EltK = e.kernel("gelu_f16");
        let p = (a(xh.as_ptr()), a(yh.as_mut_ptr()));
        // SAFETY: the kernel's C signature; every pointer is a live buffer sized for this launch.
        e.launch(shapes::elementwise(xh.len()), || unsafe { k(p.0, p.1, xh.len() as i64) });
        close(&from_f16_bits(&yh), &nn::gelu(&from_f16_bits(&xh)), tol::F16, 1e-4)?;

        let s = vals(seed ^ 5, rows * c, -20.0, 20.0);
        let mut sp = vec![0f32; s.len()];
        let k: SoftK = e.kernel("softmax_rows_f32");
        let p = (a(s.as_ptr()), a(sp.as_mut_ptr()));
        // SAFETY: the kernel's C signature; every pointer is a live buffer sized for this launch.
        e.launch(shapes::softmax_rows(rows), || unsafe { k(p.0, p.1, rows as i32, c as i32) });
        close(&sp, &nn::softmax_rows(&s, rows, c).unwrap(), tol::F32, 1e-30)?;
    }
}

proptest! {
    #![proptest_config(cases(12))]

    /// Flash attention (online softmax across 64-key tiles, chunked scores), both layouts, bias.
    #[test]
    fn attention_kernel_matches_reference(
        batch in 1usize..3, heads in 1usize..3, nq in 1usize..80, nk in 1usize..150,
        dim in prop::sample::select(nn::ATTENTION_HEAD_DIMS.to_vec()), bnhd in any::<bool>(), with_bias in any::<bool>(), seed in any::<u64>(),
    ) {
        let e = emu_or_skip!();
        let s = AttnShape { batch, heads, nq, nk, dim };
        let st = |n| if bnhd { Strides::bnhd(heads, n, dim) } else { Strides::bhnd(heads, n, dim) };
        let q = to_f16_bits(&vals(seed, batch * heads * nq * dim, -2.0, 2.0));
        let k = to_f16_bits(&vals(seed ^ 1, batch * heads * nk * dim, -2.0, 2.0));
        let v = to_f16_bits(&vals(seed ^ 2, batch * heads * nk * dim, -3.0, 3.0));
        let bias = vals(seed ^ 3, heads * nq * nk, -1.0, 1.0);
        let scale = 1.0 / (dim as f32).sqrt();
        let mut want = vec![0u16; q.len()];
        nn::attention_f16(s, &q, st(nq), &k, st(nk), &v, st(nk), with_bias.then_some(&bias[..]), scale, &mut want, st(nq)).unwrap();
        let mut o = vec![0u16; q.len()];
        let kern: AttnK = e.kernel(&format!("attention_f16_d{dim}"));
        let pb = if with_bias { a(bias.as_ptr()) } else { 0 };
        let p = (a(q.as_ptr()), a(k.as_ptr()), a(v.as_ptr()), a(o.as_mut_ptr()));
        let (sq, sk, so) = (st(nq), st(nk), st(nq));
        let i = |x: usize| x as i64;
        // SAFETY: the kernel's C signature; every pointer is a live buffer sized for this launch.
        e.launch(shapes::attention(nq, heads, batch), || unsafe {
            kern(p.0, p.1, p.2, p.3, pb, nq as i32, nk as i32, scale,
                 i(sq.batch), i(sq.head), i(sq.token), i(sk.batch), i(sk.head), i(sk.token),
                 i(sk.batch), i(sk.head), i(sk.token), i(so.batch), i(so.head), i(so.token))
        });
        close(&from_f16_bits(&o), &from_f16_bits(&want), tol::F16, 3.0)?;
    }

    #[test]
    fn window_kernels_match_reference(b in 1usize..3, h in 1usize..20, w in 1usize..20, c in 1usize..9, ws in prop::sample::select(vec![4usize, 7]), seed in any::<u64>()) {
        let e = emu_or_skip!();
        let x: Vec<u16> = bytes(seed, b * h * w * c).into_iter().map(u16::from).collect();
        let want = nn::window_partition(&x, b, h, w, c, ws).unwrap();
        let mut win = vec![0u16; want.len()];
        let k: WinK = e.kernel("window_partition_f16");
        let p = (a(x.as_ptr()), a(win.as_mut_ptr()));
        let d = (b as i32, h as i32, w as i32, c as i32, ws as i32);
        // SAFETY: the kernel's C signature; every pointer is a live buffer sized for this launch.
        e.launch(shapes::elementwise(want.len()), || unsafe { k(p.0, p.1, d.0, d.1, d.2, d.3, d.4) });
        prop_assert_eq!(&win, &want);
        let mut back = vec![0u16; x.len()];
        let k: WinK = e.kernel("window_reverse_f16");
        let p = (a(win.as_ptr()), a(back.as_mut_ptr()));
        // SAFETY: the kernel's C signature; every pointer is a live buffer sized for this launch.
        e.launch(shapes::elementwise(x.len()), || unsafe { k(p.0, p.1, d.0, d.1, d.2, d.3, d.4) });
        prop_assert_eq!(back, x);
    }

    #[test]
    fn conv_kernels_match_reference(
        kind in 0usize..3, n in 1usize..3, cin in 1usize..20, cout in 1usize..70,
        h in 1usize..24, w in 1usize..24, stride2 in any::<bool>(), act in 0usize..3, seed in any::<u64>(),
    ) {
        let e = emu_or_skip!();
        let act = [Act::None, Act::Relu, Act::Gelu][act];
        let (k, stride, pad, depthwise) = match kind {
            0 => (1, 1, 0, false),
            1 => (3, if stride2 { 2 } else { 1 }, 1, false),
            _ => (3, if stride2 { 2 } else { 1 }, 1, true),
        };
        let cout = if depthwise { cin } else { cout };
        let s = ConvShape { n, cin, h, w, cout, k, stride, pad, depthwise };
        let (ho, wo) = s.out_hw();
        let x = vals(seed, n * cin * h * w, -1.0, 1.0);
        let wt = vals(seed ^ 1, cout * if depthwise { 1 } else { cin } * k * k, -0.5, 0.5);
        let (scale, shift) = nn::fold_bn(&vals(seed ^ 2, cout, 0.5, 1.5), &vals(seed ^ 3, cout, -0.2, 0.2),
            &vals(seed ^ 4, cout, -0.1, 0.1), &vals(seed ^ 5, cout, 0.5, 2.0), None, 1e-5);
        let want = nn::conv2d_bn_act(&x, &wt, &scale, &shift, s, act).unwrap();
        let mut y = vec![0f32; want.len()];
        let p = (a(x.as_ptr()), a(wt.as_ptr()), a(scale.as_ptr()), a(shift.as_ptr()), a(y.as_mut_ptr()));
        let ac = act.code();
        match kind {
            0 => {
                let kk: Conv1K = e.kernel("conv1x1_bn_act_f32");
                // SAFETY: the kernel's C signature; every pointer is a live buffer sized for this launch.
                e.launch(shapes::conv1x1(n, cout, h * w), || unsafe {
                    kk(p.0, p.1, p.2, p.3, p.4, cin as i32, cout as i32, (h * w) as i32, ac)
                });
            }
            1 => {
                let kk: Conv3K = e.kernel("conv3x3_bn_act_f32");
                // SAFETY: the kernel's C signature; every pointer is a live buffer sized for this launch.
                e.launch(shapes::conv3x3(n, cout, ho, wo), || unsafe {
                    kk(p.0, p.1, p.2, p.3, p.4, cin as i32, h as i32, w as i32, cout as i32, stride as i32, ho as i32, wo as i32, ac)
                });
            }
            _ => {
                let kk: DwK = e.kernel("dwconv3x3_bn_act_f32");
                // SAFETY: the kernel's C signature; every pointer is a live buffer sized for this launch.
                e.launch(shapes::dwconv3x3(n, cout, ho, wo), || unsafe {
                    kk(p.0, p.1, p.2, p.3, p.4, cin as i32, h as i32, w as i32, stride as i32, ho as i32, wo as i32, ac)
                });
            }
        }
        close(&y, &want, tol::F32, max_abs(&want).max(1e-3))?;
    }

    #[test]
    fn gemm_kernels_match_reference(m in 1usize..100, n in 1usize..100, k in 1usize..100, act in 0usize..3, bias in any::<bool>(), seed in any::<u64>()) {
        let e = emu_or_skip!();
        let act = [Act::None, Act::Relu, Act::Gelu][act];
        let am = vals(seed, m * k, -1.0, 1.0);
        let w = vals(seed ^ 1, n * k, -1.0, 1.0);
        let b = vals(seed ^ 2, n, -1.0, 1.0);
        let pb = if bias { a(b.as_ptr()) } else { 0 };
        let want = nn::gemm_bias_act(&am, &w, bias.then_some(&b[..]), m, n, k, act).unwrap();
        let mut c = vec![0f32; m * n];
        let kk: GemmK = e.kernel("gemm_bias_act_f32");
        let p = (a(am.as_ptr()), a(w.as_ptr()), a(c.as_mut_ptr()));
        // SAFETY: the kernel's C signature; every pointer is a live buffer sized for this launch.
        e.launch(shapes::gemm(m, n), || unsafe { kk(p.0, p.1, pb, p.2, m as i32, n as i32, k as i32, act.code()) });
        close(&c, &want, tol::F32, max_abs(&want).max(1e-3))?;
        let (ah, wh) = (to_f16_bits(&am), to_f16_bits(&w));
        let wanth = from_f16_bits(&nn::gemm_bias_act_f16(&ah, &wh, bias.then_some(&b[..]), m, n, k, act).unwrap());
        let mut ch = vec![0u16; m * n];
        let kk: GemmK = e.kernel("gemm_bias_act_f16");
        let p = (a(ah.as_ptr()), a(wh.as_ptr()), a(ch.as_mut_ptr()));
        // SAFETY: the kernel's C signature; every pointer is a live buffer sized for this launch.
        e.launch(shapes::gemm(m, n), || unsafe { kk(p.0, p.1, pb, p.2, m as i32, n as i32, k as i32, act.code()) });
        close(&from_f16_bits(&ch), &wanth, tol::F16, max_abs(&wanth).max(1e-3))?;
    }

    /// int8 GEMM (dp4a): bit-exact.
    #[test]
    fn int8_gemm_kernel_is_bit_exact(m in 1usize..100, n in 1usize..100, k4 in 1usize..40, bias in any::<bool>(), seed in any::<u64>()) {
        let e = emu_or_skip!();
        let k = 4 * k4;
        // i32 storage keeps the rows 4-byte aligned, as the GPU allocation does.
        let pack = |v: Vec<u8>| v.chunks(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect::<Vec<i32>>();
        let (ab, wb) = (bytes(seed, m * k), bytes(seed ^ 1, n * k));
        let (ai, wi): (Vec<i8>, Vec<i8>) = (ab.iter().map(|&x| x as i8).collect(), wb.iter().map(|&x| x as i8).collect());
        let (ap, wp) = (pack(ab), pack(wb));
        let scale = vals(seed ^ 2, n, 1e-4, 1e-2);
        let b = vals(seed ^ 3, n, -1.0, 1.0);
        let want = nn::gemm_i8_dequant(&ai, &wi, &scale, bias.then_some(&b[..]), m, n, k).unwrap();
        let mut c = vec![0f32; m * n];
        let kk: GemmI8K = e.kernel("gemm_i8_dequant_f32");
        let pb = if bias { a(b.as_ptr()) } else { 0 };
        let p = (a(ap.as_ptr()), a(wp.as_ptr()), a(scale.as_ptr()), a(c.as_mut_ptr()));
        // SAFETY: the kernel's C signature; every pointer is a live buffer sized for this launch.
        e.launch(shapes::gemm(m, n), || unsafe { kk(p.0, p.1, p.2, pb, p.3, m as i32, n as i32, k as i32) });
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        prop_assert_eq!(bits(&c), bits(&want));
    }

    #[test]
    fn fewshot_kernels_match_reference(c in 1usize..200, hw in 1usize..600, np in 1usize..20, seed in any::<u64>()) {
        let e = emu_or_skip!();
        let feat = vals(seed, c * hw, -1.0, 1.0);
        let mask: Vec<f32> = vals(seed ^ 1, hw, 0.0, 1.0).into_iter().map(|v| if v > 0.6 { 1.0 } else { 0.0 }).collect();
        let want = fewshot::masked_avg_pool(&feat, &mask, c, hw, 1e-6).unwrap();
        let mut pr = vec![0f32; c];
        let kk: PoolK = e.kernel("masked_avg_pool_f32");
        let p = (a(feat.as_ptr()), a(mask.as_ptr()), a(pr.as_mut_ptr()));
        // SAFETY: the kernel's C signature; every pointer is a live buffer sized for this launch.
        e.launch(shapes::masked_avg_pool(c), || unsafe { kk(p.0, p.1, p.2, c as i32, hw as i32, 1e-6) });
        close(&pr, &want, tol::F32, max_abs(&want).max(1e-3))?;
        let protos = vals(seed ^ 2, np * c, -1.0, 1.0);
        let want = fewshot::cosine_sim(&feat, &protos, c, hw, np, 1e-8).unwrap();
        let mut sim = vec![0f32; np * hw];
        let kk: CosK = e.kernel("cosine_sim_f32");
        for j0 in (0..np).step_by(8) {
            let chunk = (np - j0).min(8) as i32;
            let p = (a(feat.as_ptr()), a(protos[j0 * c..].as_ptr()), a(sim[j0 * hw..].as_mut_ptr()));
            // SAFETY: the kernel's C signature; every pointer is a live buffer sized for this launch.
            e.launch(shapes::cosine_sim(c, hw), || unsafe { kk(p.0, p.1, p.2, c as i32, hw as i32, chunk, 1e-8) });
        }
        close(&sim, &want, tol::F32, 1.0)?;
    }
}

#[test]
fn dynamic_shared_memory_declarations_are_rewritten() {
    assert_eq!(
        cpu_source("a; extern __shared__ float s_p[]; b"),
        "a; float* s_p = (float*)emu_dyn_smem; b"
    );
}

proptest! {
    #![proptest_config(cases(12))]

    /// The plan's data-movement kernels (tensor.cu and the f32 window kernels):
    /// copies bit-exact, arithmetic in the f32 tier.
    #[test]
    fn tensor_kernels_match_reference(
        rows in 1usize..70, cols in 1usize..70, act in 0usize..3, cn in 1usize..8,
        h in 1usize..20, w in 1usize..20, ws in prop::sample::select(vec![4usize, 7]), seed in any::<u64>(),
    ) {
        let e = emu_or_skip!();
        let act = [Act::None, Act::Relu, Act::Gelu][act];
        let n = rows * cols;
        let (x, z) = (vals(seed, n, -4.0, 4.0), vals(seed ^ 1, n, -4.0, 4.0));
        let mut y = vec![f32::NAN; n];
        let k: AddK = e.kernel("add_act_f32");
        let p = (a(x.as_ptr()), a(z.as_ptr()), a(y.as_mut_ptr()));
        // SAFETY: the kernel's C signature; every pointer is a live buffer sized for this launch.
        e.launch(shapes::elementwise(n), || unsafe { k(p.0, p.1, p.2, n as i64, act.code()) });
        close(&y, &nn::add_act(&x, &z, act).unwrap(), tol::F32, 1e-6)?;

        let c = vals(seed ^ 2, cn, -1.0, 1.0);
        let xb = vals(seed ^ 3, cn * rows, -4.0, 4.0);
        let mut yb = vec![f32::NAN; xb.len()];
        let k: BcastK = e.kernel("add_broadcast_f32");
        let p = (a(xb.as_ptr()), a(c.as_ptr()), a(yb.as_mut_ptr()));
        // SAFETY: the kernel's C signature; every pointer is a live buffer sized for this launch.
        e.launch(shapes::elementwise(xb.len()), || unsafe { k(p.0, p.1, p.2, xb.len() as i64, cn as i32) });
        prop_assert_eq!(&yb, &nn::add_broadcast(&xb, &c).unwrap());

        let mut t = vec![f32::NAN; n];
        let k: TransK = e.kernel("transpose_f32");
        let p = (a(x.as_ptr()), a(t.as_mut_ptr()));
        // SAFETY: the kernel's C signature; every pointer is a live buffer sized for this launch.
        e.launch(shapes::transpose(rows, cols), || unsafe { k(p.0, p.1, rows as i32, cols as i32) });
        prop_assert_eq!(&t, &nn::transpose(&x, rows, cols).unwrap());

        // f32 windows, bit-exact both ways
        let ch = cn;
        let xt = vals(seed ^ 4, h * w * ch, -4.0, 4.0);
        let want = nn::window_partition(&xt, 1, h, w, ch, ws).unwrap();
        let mut win = vec![f32::NAN; want.len()];
        let k: WinK = e.kernel("window_partition_f32");
        let p = (a(xt.as_ptr()), a(win.as_mut_ptr()));
        let d = (1, h as i32, w as i32, ch as i32, ws as i32);
        // SAFETY: the kernel's C signature; every pointer is a live buffer sized for this launch.
        e.launch(shapes::elementwise(want.len()), || unsafe { k(p.0, p.1, d.0, d.1, d.2, d.3, d.4) });
        prop_assert_eq!(&win, &want);
        let mut back = vec![f32::NAN; xt.len()];
        let k: WinK = e.kernel("window_reverse_f32");
        let p = (a(win.as_ptr()), a(back.as_mut_ptr()));
        // SAFETY: the kernel's C signature; every pointer is a live buffer sized for this launch.
        e.launch(shapes::elementwise(xt.len()), || unsafe { k(p.0, p.1, d.0, d.1, d.2, d.3, d.4) });
        prop_assert_eq!(&back, &xt);

        // attention operand gather ([b, n, h, d] of a linear output, at an offset) and f16 -> f32
        let (heads, dim, tok) = (cn, 4usize, rows);
        let st = Strides::bnhd(heads, tok, dim);
        let off = cols;
        let src = vals(seed ^ 5, off + tok * heads * dim, -3.0, 3.0);
        let want = nn::gather_heads_f16(&src, off, st, 1, heads, tok, dim).unwrap();
        let mut gh = vec![0xffffu16; want.len()];
        let k: GatherK = e.kernel("gather_heads_f16");
        let p = (a(src.as_ptr()), a(gh.as_mut_ptr()));
        let i = |v: usize| v as i64;
        // SAFETY: the kernel's C signature; every pointer is a live buffer sized for this launch.
        e.launch(shapes::elementwise(want.len()), || unsafe {
            k(p.0, p.1, i(off), i(st.batch), i(st.head), i(st.token), 1, heads as i32, tok as i32, dim as i32)
        });
        prop_assert_eq!(&gh, &want);
        let mut gf = vec![f32::NAN; gh.len()];
        let k: EltK = e.kernel("f16_to_f32");
        let p = (a(gh.as_ptr()), a(gf.as_mut_ptr()));
        // SAFETY: the kernel's C signature; every pointer is a live buffer sized for this launch.
        e.launch(shapes::elementwise(gh.len()), || unsafe { k(p.0, p.1, gh.len() as i64) });
        prop_assert_eq!(&gf, &from_f16_bits(&gh));
    }

    /// The decoder's transposed convolution and the students' box prior.
    #[test]
    fn upscaling_kernels_match_reference(
        cin in 1usize..24, cout in 1usize..24, h in 1usize..16, w in 1usize..16,
        masks in 1usize..5, side in 1usize..40, has_box in any::<bool>(), seed in any::<u64>(),
    ) {
        let e = emu_or_skip!();
        let x = vals(seed, cin * h * w, -2.0, 2.0);
        let wt = vals(seed ^ 1, cin * cout * 4, -1.0, 1.0);
        let bias = vals(seed ^ 2, cout, -1.0, 1.0);
        let mut y = vec![f32::NAN; cout * 4 * h * w];
        let k: ConvTK = e.kernel("conv_transpose2x2_f32");
        let p = (a(x.as_ptr()), a(wt.as_ptr()), a(bias.as_ptr()), a(y.as_mut_ptr()));
        // SAFETY: the kernel's C signature; every pointer is a live buffer sized for this launch.
        e.launch(shapes::elementwise(y.len()), || unsafe { k(p.0, p.1, p.2, p.3, cin as i32, cout as i32, h as i32, w as i32) });
        close(&y, &nn::conv_transpose2x2(&x, &wt, &bias, 1, cin, cout, h, w).unwrap(), tol::F32, 1.0)?;

        let size = 4.0 * side as f32;
        let grid: Vec<f32> = (0..side).map(|j| (j as f32 + 0.5) * 4.0).collect();
        let corners = vals(seed ^ 3, 4, 0.0, size);
        let (coords, labels) = if has_box {
            (vec![corners[0].min(corners[2]), corners[1].min(corners[3]), corners[0].max(corners[2]), corners[1].max(corners[3])], vec![2.0, 3.0])
        } else {
            (corners[..2].to_vec(), vec![1.0])
        };
        let bx = nn::BoxPriorParams::from_points(&coords, &labels, 4.0).unwrap();
        prop_assert_eq!(bx.has_box, if has_box { 1.0 } else { 0.0 });
        let logits = vals(seed ^ 4, masks * side * side, -8.0, 8.0);
        let mut yp = vec![f32::NAN; logits.len()];
        let k: PriorK = e.kernel("box_prior_add_f32");
        let p = (a(logits.as_ptr()), a(grid.as_ptr()), a(grid.as_ptr()), a(yp.as_mut_ptr()));
        // SAFETY: the kernel's C signature; every pointer is a live buffer sized for this launch.
        e.launch(shapes::elementwise(yp.len()), || unsafe {
            k(p.0, p.1, p.2, p.3, bx.cx, bx.cy, bx.rx, bx.ry, bx.height, bx.has_box, masks as i32, side as i32)
        });
        close(&yp, &nn::box_prior_add(&logits, &grid, &grid, bx, masks, side).unwrap(), tol::F32, 1.0)?;
    }
}
