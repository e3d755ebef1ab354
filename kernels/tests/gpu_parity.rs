//! GPU parity tests: every kernel against its CPU reference (`reference::*`),
//! proptest over shapes and values, with the tolerance tiers of
//! `reference::tol` (f32 1e-5, f16-in/f32-accumulate 1e-3, int8 and pre/post-
//! processing bit-exact).
//!
//! Built with the `cuda` (or `cuda-13000`) feature. Without a usable GPU every
//! GPU test returns early and prints why (to stderr, uncaptured) — on such a
//! machine only the tests of the error paths run for real. Run them all on a GPU
//! machine with `kernels/bench/gpu-check.sh`.
#![cfg(any(feature = "cuda-12060", feature = "cuda-13000"))]

use std::io::Write;
use std::sync::OnceLock;

use edgeseg_kernels::gpu::{self, Gpu, GpuError};
use edgeseg_kernels::reference::nn::{self, Act, AttnShape, ConvShape, Strides};
use edgeseg_kernels::reference::tol::{self, check_close, max_abs};
use edgeseg_kernels::reference::{
    self, fewshot, from_f16_bits, to_f16_bits, Frame, OverlayStyle, PixelFormat,
};
use proptest::prelude::*;

/// The shared GPU, or `None` (reason printed once) when there is none.
fn gpu() -> Option<&'static Gpu> {
    static GPU: OnceLock<Result<Gpu, String>> = OnceLock::new();
    let g = GPU.get_or_init(|| Gpu::new(0).map_err(|e| e.to_string()));
    match g {
        Ok(g) => Some(g),
        Err(e) => {
            static ONCE: OnceLock<()> = OnceLock::new();
            ONCE.get_or_init(|| {
                let _ = writeln!(
                    std::io::stderr(),
                    "gpu_parity: SKIPPING GPU tests, no usable GPU: {e}"
                );
            });
            None
        }
    }
}

macro_rules! gpu_or_skip {
    () => {
        match gpu() {
            Some(g) => g,
            None => return Ok(()),
        }
    };
}

/// 24 cases per property, or `$PROPTEST_CASES` (fewer under compute-sanitizer).
fn cases() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(24),
        ..ProptestConfig::default()
    }
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

// ---- tests that run everywhere -------------------------------------------------------------

/// Without a driver, opening the GPU is an error naming what is missing, not a panic.
#[test]
fn opening_without_cuda_is_an_error_naming_the_library() {
    match Gpu::new(0) {
        Ok(g) => {
            let i = g.info();
            let _ = writeln!(
                std::io::stderr(),
                "gpu_parity: GPU {} ({}), driver {}, NVRTC {}.{}",
                i.name,
                i.arch.sm(),
                i.driver_version,
                i.nvrtc_version.0,
                i.nvrtc_version.1
            );
        }
        Err(e) => {
            let msg = e.to_string();
            match e {
                GpuError::DriverMissing { searched } => {
                    assert!(
                        searched.iter().any(|s| s.contains("libcuda")),
                        "{searched:?}"
                    );
                    assert!(msg.contains("libcuda"), "{msg}");
                }
                GpuError::NvrtcMissing { .. } => assert!(msg.contains("libnvrtc"), "{msg}"),
                GpuError::NoDevice { .. } | GpuError::ArchUnsupported { .. } => {}
                other => panic!("unexpected error kind: {other}"),
            }
        }
    }
}

/// Where NVRTC is loadable (e.g. under compile-check.sh), every source compiles
/// through the product path for Jetson Orin; elsewhere the error names libnvrtc.
#[test]
fn nvrtc_compiles_every_source_or_names_the_library() {
    if !gpu::nvrtc::nvrtc_present() {
        let e = gpu::nvrtc::require_nvrtc().unwrap_err();
        assert!(e.to_string().contains("libnvrtc"), "{e}");
        let _ = writeln!(
            std::io::stderr(),
            "gpu_parity: NVRTC not loadable here, compile test skipped ({e})"
        );
        return;
    }
    for s in edgeseg_kernels::sources::SOURCES {
        let c = gpu::nvrtc::compile(s, gpu::Arch::SM87, gpu::Output::Ptx)
            .unwrap_or_else(|e| panic!("{e}"));
        let ptx = String::from_utf8(c.image).unwrap();
        for k in s.kernels {
            assert!(
                ptx.contains(&format!(".entry {k}(")),
                "{}: no entry {k}",
                s.name
            );
        }
    }
    // a broken source is an error carrying NVRTC's log
    let bad = edgeseg_kernels::sources::KernelSource {
        name: "bad.cu",
        code: "extern \"C\" __global__ void k() { undefined_fn(); }",
        kernels: &["k"],
    };
    let e = gpu::nvrtc::compile(&bad, gpu::Arch::SM87, gpu::Output::Ptx).unwrap_err();
    assert!(e.to_string().contains("undefined_fn"), "{e}");
}

// ---- GPU parity ---------------------------------------------------------------------------

#[test]
fn wrong_buffer_sizes_are_errors_not_launches() -> R {
    let g = gpu_or_skip!();
    let x = g.upload(&[0f32; 10]).unwrap();
    let gm = g.upload(&[1f32; 5]).unwrap();
    let mut y = g.zeros::<f32>(10).unwrap();
    assert!(g.layer_norm(&x, &gm, &gm, &mut y, 3, 5, 1e-5).is_err());
    let mut c = g.zeros::<f32>(4).unwrap();
    assert!(g
        .gemm_bias_act_f32(&x, &x, None, &mut c, 2, 2, 4, Act::None)
        .is_err());
    Ok(())
}

proptest! {
    #![proptest_config(cases())]

    /// Fused pre-processing, bit-exact with `reference::preprocess_frame` (f32 and f16).
    #[test]
    fn preprocess_matches_reference(
        fmt in 0usize..4, hw in 1usize..200, ww in 1usize..200, pad in 0usize..8,
        size in prop::sample::select(vec![64usize, 256]), f16 in any::<bool>(), seed in any::<u64>(),
    ) {
        let g = gpu_or_skip!();
        let format = [PixelFormat::Rgb8, PixelFormat::Grey8, PixelFormat::Yuyv, PixelFormat::Nv12][fmt];
        let (w, h) = (2 * ww, 2 * hw);
        let stride = format.min_stride(w).unwrap() + pad;
        let rows = if format == PixelFormat::Nv12 { h * 3 / 2 } else { h };
        let data = bytes(seed, stride * rows);
        let frame = Frame { format, width: w, height: h, stride, data: &data };
        // Frames too thin to resize (one side rounds to 0) are refused by the
        // reference; they are not a parity case.
        let (nh, nw) = edgeseg_kernels::prepost::longest_side_size(h, w, size);
        prop_assume!(nh > 0 && nw > 0);
        let want = reference::preprocess_frame(&frame, size).unwrap();
        let mut plan = g.preprocess_plan(format, w, h, stride, size).unwrap();
        let dev = g.upload(&data).unwrap();
        if f16 {
            let mut out = g.zeros::<u16>(3 * size * size).unwrap();
            g.preprocess_f16(&mut plan, &dev, &mut out).unwrap();
            prop_assert_eq!(g.download(&out).unwrap(), to_f16_bits(&want.input));
        } else {
            let mut out = g.zeros::<f32>(3 * size * size).unwrap();
            g.preprocess_f32(&mut plan, &dev, &mut out).unwrap();
            let got = g.download(&out).unwrap();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&got), bits(&want.input));
        }
        prop_assert_eq!(g.download(&plan.resized).unwrap(), want.resized);
    }

    /// Fused post-processing + overlay, bit-exact with `reference::postprocess_overlay`.
    #[test]
    fn postprocess_matches_reference(
        lsz in prop::sample::select(vec![64usize, 256]), fh in 0.2f64..1.0, fw in 0.2f64..1.0,
        oh in 1usize..300, ow in 1usize..300, overlay in any::<bool>(), alpha in 0.0f32..1.0,
        seed in any::<u64>(),
    ) {
        let g = gpu_or_skip!();
        let nh = ((lsz as f64 * fh) as usize).clamp(1, lsz);
        let nw = ((lsz as f64 * fw) as usize).clamp(1, lsz);
        let logits = vals(seed, lsz * lsz, -4.0, 3.0);
        let rgb = bytes(seed ^ 5, oh * ow * 3);
        let style = OverlayStyle { alpha, ..OverlayStyle::default() };
        let want = reference::postprocess_overlay(
            &logits, lsz, lsz, nh, nw, oh, ow, overlay.then_some(&rgb[..]), &style,
        ).unwrap();
        let plan = g.postprocess_plan(lsz, lsz, nh, nw, oh, ow).unwrap();
        let dl = g.upload(&logits).unwrap();
        let mut mask = g.zeros::<u8>(oh * ow).unwrap();
        if overlay {
            let rin = g.upload(&rgb).unwrap();
            let mut rout = g.zeros::<u8>(oh * ow * 3).unwrap();
            g.postprocess(&plan, &dl, &mut mask, Some((&rin, &mut rout)), &style).unwrap();
            prop_assert_eq!(Some(g.download(&rout).unwrap()), want.overlay);
        } else {
            g.postprocess(&plan, &dl, &mut mask, None, &style).unwrap();
        }
        prop_assert_eq!(g.download(&mask).unwrap(), want.mask);
    }

    #[test]
    fn layer_norms_match_reference(rows in 1usize..40, c in 1usize..800, hw in 1usize..300, seed in any::<u64>()) {
        let g = gpu_or_skip!();
        let x = vals(seed, rows * c, -4.0, 4.0);
        let gamma = vals(seed ^ 1, c, 0.5, 1.5);
        let beta = vals(seed ^ 2, c, -0.5, 0.5);
        let want = nn::layer_norm(&x, rows, c, &gamma, &beta, 1e-6).unwrap();
        let (dx, dg, db) = (g.upload(&x).unwrap(), g.upload(&gamma).unwrap(), g.upload(&beta).unwrap());
        let mut y = g.zeros::<f32>(x.len()).unwrap();
        g.layer_norm(&dx, &dg, &db, &mut y, rows, c, 1e-6).unwrap();
        close(&g.download(&y).unwrap(), &want, tol::F32, 1.0)?;
        let n = 1 + rows % 2;
        let x2 = vals(seed ^ 3, n * c * hw, -4.0, 4.0);
        let want2 = nn::layer_norm2d(&x2, n, c, hw, &gamma, &beta, 1e-6).unwrap();
        let dx2 = g.upload(&x2).unwrap();
        let mut y2 = g.zeros::<f32>(x2.len()).unwrap();
        g.layer_norm2d(&dx2, &dg, &db, &mut y2, n, c, hw, 1e-6).unwrap();
        close(&g.download(&y2).unwrap(), &want2, tol::F32, 1.0)?;
    }

    #[test]
    fn gelu_and_softmax_match_reference(n in 1usize..5000, rows in 1usize..20, cols in 1usize..3000, seed in any::<u64>()) {
        let g = gpu_or_skip!();
        let x = vals(seed, n, -8.0, 8.0);
        let dx = g.upload(&x).unwrap();
        let mut y = g.zeros::<f32>(n).unwrap();
        g.gelu_f32(&dx, &mut y).unwrap();
        close(&g.download(&y).unwrap(), &nn::gelu(&x), tol::F32, 1e-6)?;
        let xh = to_f16_bits(&x);
        let dxh = g.upload(&xh).unwrap();
        let mut yh = g.zeros::<u16>(n).unwrap();
        g.gelu_f16(&dxh, &mut yh).unwrap();
        close(&from_f16_bits(&g.download(&yh).unwrap()), &nn::gelu(&from_f16_bits(&xh)), tol::F16, 1e-4)?;
        let s = vals(seed ^ 9, rows * cols, -20.0, 20.0);
        let ds = g.upload(&s).unwrap();
        let mut p = g.zeros::<f32>(s.len()).unwrap();
        g.softmax_rows(&ds, &mut p, rows, cols).unwrap();
        close(&g.download(&p).unwrap(), &nn::softmax_rows(&s, rows, cols).unwrap(), tol::F32, 1e-30)?;
    }

    /// Global attention (both layouts, with and without bias), f16 tier.
    #[test]
    fn attention_matches_reference(
        batch in 1usize..3, heads in 1usize..4, nq in 1usize..130, nk in 1usize..200,
        dim in prop::sample::select(nn::ATTENTION_HEAD_DIMS.to_vec()), bnhd in any::<bool>(),
        with_bias in any::<bool>(), seed in any::<u64>(),
    ) {
        let g = gpu_or_skip!();
        let s = AttnShape { batch, heads, nq, nk, dim };
        let st = |n| if bnhd { Strides::bnhd(heads, n, dim) } else { Strides::bhnd(heads, n, dim) };
        let q = to_f16_bits(&vals(seed, batch * heads * nq * dim, -2.0, 2.0));
        let k = to_f16_bits(&vals(seed ^ 1, batch * heads * nk * dim, -2.0, 2.0));
        let v = to_f16_bits(&vals(seed ^ 2, batch * heads * nk * dim, -3.0, 3.0));
        let bias = vals(seed ^ 3, heads * nq * nk, -1.0, 1.0);
        let scale = 1.0 / (dim as f32).sqrt();
        let mut want = vec![0u16; q.len()];
        nn::attention_f16(s, &q, st(nq), &k, st(nk), &v, st(nk), with_bias.then_some(&bias[..]), scale, &mut want, st(nq)).unwrap();
        let (dq, dk, dv) = (g.upload(&q).unwrap(), g.upload(&k).unwrap(), g.upload(&v).unwrap());
        let db = g.upload(&bias).unwrap();
        let mut o = g.zeros::<u16>(q.len()).unwrap();
        g.attention_f16(s, &dq, st(nq), &dk, st(nk), &dv, st(nk), with_bias.then_some(&db), scale, &mut o, st(nq)).unwrap();
        close(&from_f16_bits(&g.download(&o).unwrap()), &from_f16_bits(&want), tol::F16, 3.0)?;
    }

    /// Windowed attention: partition (bit-exact) -> attention -> reverse (bit-exact).
    #[test]
    fn windowed_attention_matches_reference(h in 1usize..20, w in 1usize..20, ws in prop::sample::select(vec![4usize, 7]), seed in any::<u64>()) {
        let g = gpu_or_skip!();
        let (b, heads, dim) = (1, 2, 16);
        let c = heads * dim;
        let x = to_f16_bits(&vals(seed, b * h * w * c, -2.0, 2.0));
        let win = nn::window_partition(&x, b, h, w, c, ws).unwrap();
        let dx = g.upload(&x).unwrap();
        let mut dwin = g.zeros::<u16>(win.len()).unwrap();
        g.window_partition_f16(&dx, &mut dwin, b, h, w, c, ws).unwrap();
        prop_assert_eq!(g.download(&dwin).unwrap(), win.clone());
        // self-attention inside each window, q = k = v = the window's tokens, [b, n, h, d]
        let nwin = win.len() / (ws * ws * c);
        let s = AttnShape { batch: nwin, heads, nq: ws * ws, nk: ws * ws, dim };
        let st = Strides::bnhd(heads, ws * ws, dim);
        let mut want = vec![0u16; win.len()];
        nn::attention_f16(s, &win, st, &win, st, &win, st, None, 0.25, &mut want, st).unwrap();
        let mut o = g.zeros::<u16>(win.len()).unwrap();
        g.attention_f16(s, &dwin, st, &dwin, st, &dwin, st, None, 0.25, &mut o, st).unwrap();
        close(&from_f16_bits(&g.download(&o).unwrap()), &from_f16_bits(&want), tol::F16, 2.0)?;
        let mut back = g.zeros::<u16>(x.len()).unwrap();
        g.window_reverse_f16(&dwin, &mut back, b, h, w, c, ws).unwrap();
        prop_assert_eq!(g.download(&back).unwrap(), x);
    }

    #[test]
    fn convolutions_match_reference(
        kind in 0usize..3, n in 1usize..3, cin in 1usize..40, cout in 1usize..70,
        h in 1usize..40, w in 1usize..40, stride2 in any::<bool>(), act in 0usize..3, seed in any::<u64>(),
    ) {
        let g = gpu_or_skip!();
        let act = [Act::None, Act::Relu, Act::Gelu][act];
        let (k, stride, pad, depthwise) = match kind {
            0 => (1, 1, 0, false),
            1 => (3, if stride2 { 2 } else { 1 }, 1, false),
            _ => (3, if stride2 { 2 } else { 1 }, 1, true),
        };
        let cout = if depthwise { cin } else { cout };
        let s = ConvShape { n, cin, h, w, cout, k, stride, pad, depthwise };
        let x = vals(seed, n * cin * h * w, -1.0, 1.0);
        let wt = vals(seed ^ 1, cout * if depthwise { 1 } else { cin } * k * k, -0.5, 0.5);
        let (scale, shift) = nn::fold_bn(
            &vals(seed ^ 2, cout, 0.5, 1.5), &vals(seed ^ 3, cout, -0.2, 0.2),
            &vals(seed ^ 4, cout, -0.1, 0.1), &vals(seed ^ 5, cout, 0.5, 2.0), None, 1e-5,
        );
        let want = nn::conv2d_bn_act(&x, &wt, &scale, &shift, s, act).unwrap();
        let (dx, dw) = (g.upload(&x).unwrap(), g.upload(&wt).unwrap());
        let (dsc, dsh) = (g.upload(&scale).unwrap(), g.upload(&shift).unwrap());
        let mut y = g.zeros::<f32>(want.len()).unwrap();
        g.conv2d_bn_act(&dx, &dw, &dsc, &dsh, &mut y, s, act).unwrap();
        close(&g.download(&y).unwrap(), &want, tol::F32, max_abs(&want).max(1e-3))?;
    }

    #[test]
    fn gemms_match_reference(m in 1usize..150, n in 1usize..150, k in 1usize..300, act in 0usize..3, bias in any::<bool>(), seed in any::<u64>()) {
        let g = gpu_or_skip!();
        let act = [Act::None, Act::Relu, Act::Gelu][act];
        let a = vals(seed, m * k, -1.0, 1.0);
        let w = vals(seed ^ 1, n * k, -1.0, 1.0);
        let b = vals(seed ^ 2, n, -1.0, 1.0);
        let want = nn::gemm_bias_act(&a, &w, bias.then_some(&b[..]), m, n, k, act).unwrap();
        let (da, dw, db) = (g.upload(&a).unwrap(), g.upload(&w).unwrap(), g.upload(&b).unwrap());
        let mut c = g.zeros::<f32>(m * n).unwrap();
        g.gemm_bias_act_f32(&da, &dw, bias.then_some(&db), &mut c, m, n, k, act).unwrap();
        close(&g.download(&c).unwrap(), &want, tol::F32, max_abs(&want).max(1e-3))?;
        let (ah, wh) = (to_f16_bits(&a), to_f16_bits(&w));
        let wanth = nn::gemm_bias_act_f16(&ah, &wh, bias.then_some(&b[..]), m, n, k, act).unwrap();
        let (dah, dwh) = (g.upload(&ah).unwrap(), g.upload(&wh).unwrap());
        let mut ch = g.zeros::<u16>(m * n).unwrap();
        g.gemm_bias_act_f16(&dah, &dwh, bias.then_some(&db), &mut ch, m, n, k, act).unwrap();
        let wf = from_f16_bits(&wanth);
        close(&from_f16_bits(&g.download(&ch).unwrap()), &wf, tol::F16, max_abs(&wf).max(1e-3))?;
    }

    /// int8 GEMM: bit-exact.
    #[test]
    fn int8_gemm_is_bit_exact(m in 1usize..150, n in 1usize..150, k4 in 1usize..128, bias in any::<bool>(), seed in any::<u64>()) {
        let g = gpu_or_skip!();
        let k = 4 * k4;
        let a: Vec<i8> = bytes(seed, m * k).into_iter().map(|b| b as i8).collect();
        let w: Vec<i8> = bytes(seed ^ 1, n * k).into_iter().map(|b| b as i8).collect();
        let scale = vals(seed ^ 2, n, 1e-4, 1e-2);
        let b = vals(seed ^ 3, n, -1.0, 1.0);
        let want = nn::gemm_i8_dequant(&a, &w, &scale, bias.then_some(&b[..]), m, n, k).unwrap();
        let (da, dw) = (g.upload(&a).unwrap(), g.upload(&w).unwrap());
        let (ds, db) = (g.upload(&scale).unwrap(), g.upload(&b).unwrap());
        let mut c = g.zeros::<f32>(m * n).unwrap();
        g.gemm_i8_dequant(&da, &dw, &ds, bias.then_some(&db), &mut c, m, n, k).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        prop_assert_eq!(bits(&g.download(&c).unwrap()), bits(&want));
    }

    #[test]
    fn fewshot_heads_match_reference(c in 1usize..300, hw in 1usize..2000, np in 1usize..20, seed in any::<u64>()) {
        let g = gpu_or_skip!();
        let feat = vals(seed, c * hw, -1.0, 1.0);
        let mask: Vec<f32> = vals(seed ^ 1, hw, 0.0, 1.0).into_iter().map(|v| if v > 0.6 { 1.0 } else { 0.0 }).collect();
        let want = fewshot::masked_avg_pool(&feat, &mask, c, hw, 1e-6).unwrap();
        let (df, dm) = (g.upload(&feat).unwrap(), g.upload(&mask).unwrap());
        let mut p = g.zeros::<f32>(c).unwrap();
        g.masked_avg_pool(&df, &dm, &mut p, c, hw, 1e-6).unwrap();
        close(&g.download(&p).unwrap(), &want, tol::F32, max_abs(&want).max(1e-3))?;
        let protos = vals(seed ^ 2, np * c, -1.0, 1.0);
        let want = fewshot::cosine_sim(&feat, &protos, c, hw, np, 1e-8).unwrap();
        let dp = g.upload(&protos).unwrap();
        let mut sim = g.zeros::<f32>(np * hw).unwrap();
        g.cosine_sim(&df, &dp, &mut sim, c, hw, np, 1e-8).unwrap();
        close(&g.download(&sim).unwrap(), &want, tol::F32, 1.0)?;
    }

    /// The plan's data-movement kernels (tensor.cu, f32 windows, device copies):
    /// copies bit-exact, arithmetic in the f32 tier.
    #[test]
    fn tensor_kernels_match_reference(
        rows in 1usize..300, cols in 1usize..300, act in 0usize..3, cn in 1usize..8,
        h in 1usize..40, w in 1usize..40, ws in prop::sample::select(vec![4usize, 7, 8]), seed in any::<u64>(),
    ) {
        let g = gpu_or_skip!();
        let act = [Act::None, Act::Relu, Act::Gelu][act];
        let n = rows * cols;
        let (x, z) = (vals(seed, n, -4.0, 4.0), vals(seed ^ 1, n, -4.0, 4.0));
        let (dx, dz) = (g.upload(&x).unwrap(), g.upload(&z).unwrap());
        let mut y = g.upload(&vec![f32::NAN; n]).unwrap();
        g.add_act_f32(&dx, &dz, &mut y, act).unwrap();
        close(&g.download(&y).unwrap(), &nn::add_act(&x, &z, act).unwrap(), tol::F32, 1e-6)?;
        let c = vals(seed ^ 2, cn, -1.0, 1.0);
        let xb = vals(seed ^ 3, cn * rows, -4.0, 4.0);
        let mut yb = g.upload(&vec![f32::NAN; xb.len()]).unwrap();
        g.add_broadcast_f32(&g.upload(&xb).unwrap(), &g.upload(&c).unwrap(), &mut yb).unwrap();
        prop_assert_eq!(g.download(&yb).unwrap(), nn::add_broadcast(&xb, &c).unwrap());
        let mut t = g.upload(&vec![f32::NAN; n]).unwrap();
        g.transpose_f32(&dx, &mut t, rows, cols).unwrap();
        prop_assert_eq!(g.download(&t).unwrap(), nn::transpose(&x, rows, cols).unwrap());
        // slice and concat through device copies
        let mut cat = g.upload(&vec![f32::NAN; 2 * n]).unwrap();
        g.copy_into(&dz.slice(..), &mut cat, 0).unwrap();
        g.copy_into(&dx.slice(..), &mut cat, n).unwrap();
        let mut want = z.clone();
        want.extend_from_slice(&x);
        prop_assert_eq!(g.download(&cat).unwrap(), want);
        prop_assert!(g.copy_into(&dx.slice(..), &mut cat, n + 1).is_err());

        let xt = vals(seed ^ 4, h * w * cn, -4.0, 4.0);
        let want = nn::window_partition(&xt, 1, h, w, cn, ws).unwrap();
        let mut win = g.upload(&vec![f32::NAN; want.len()]).unwrap();
        let dxt = g.upload(&xt).unwrap();
        g.window_partition_f32(&dxt, &mut win, 1, h, w, cn, ws).unwrap();
        prop_assert_eq!(g.download(&win).unwrap(), want);
        let mut back = g.upload(&vec![f32::NAN; xt.len()]).unwrap();
        g.window_reverse_f32(&win, &mut back, 1, h, w, cn, ws).unwrap();
        prop_assert_eq!(g.download(&back).unwrap(), xt);

        let (heads, dim, tok) = (cn, 16usize, rows);
        let st = Strides::bnhd(heads, tok, dim);
        let off = cols;
        let src = vals(seed ^ 5, off + tok * heads * dim, -3.0, 3.0);
        let want = nn::gather_heads_f16(&src, off, st, 1, heads, tok, dim).unwrap();
        let mut gh = g.upload(&vec![0xffffu16; want.len()]).unwrap();
        let dsrc = g.upload(&src).unwrap();
        g.gather_heads_f16(&dsrc, &mut gh, off, st, 1, heads, tok, dim).unwrap();
        prop_assert_eq!(g.download(&gh).unwrap(), want.clone());
        prop_assert!(g.gather_heads_f16(&dsrc, &mut gh, off + 1, st, 1, heads, tok, dim).is_err());
        let mut gf = g.upload(&vec![f32::NAN; want.len()]).unwrap();
        g.f16_to_f32(&gh, &mut gf).unwrap();
        prop_assert_eq!(g.download(&gf).unwrap(), from_f16_bits(&want));
    }

    /// The decoder's transposed convolution and the students' box prior.
    #[test]
    fn upscaling_kernels_match_reference(
        cin in 1usize..70, cout in 1usize..70, h in 1usize..40, w in 1usize..40,
        masks in 1usize..5, side in 1usize..300, has_box in any::<bool>(), seed in any::<u64>(),
    ) {
        let g = gpu_or_skip!();
        let x = vals(seed, cin * h * w, -2.0, 2.0);
        let wt = vals(seed ^ 1, cin * cout * 4, -1.0, 1.0);
        let bias = vals(seed ^ 2, cout, -1.0, 1.0);
        let mut y = g.upload(&vec![f32::NAN; cout * 4 * h * w]).unwrap();
        g.conv_transpose2x2_f32(&g.upload(&x).unwrap(), &g.upload(&wt).unwrap(), &g.upload(&bias).unwrap(), &mut y, cin, cout, h, w).unwrap();
        close(&g.download(&y).unwrap(), &nn::conv_transpose2x2(&x, &wt, &bias, 1, cin, cout, h, w).unwrap(), tol::F32, 1.0)?;

        let size = 4.0 * side as f32;
        let grid: Vec<f32> = (0..side).map(|j| (j as f32 + 0.5) * 4.0).collect();
        let corners = vals(seed ^ 3, 4, 0.0, size);
        let (coords, labels) = if has_box {
            (vec![corners[0].min(corners[2]), corners[1].min(corners[3]), corners[0].max(corners[2]), corners[1].max(corners[3])], vec![2.0, 3.0])
        } else {
            (corners[..2].to_vec(), vec![1.0])
        };
        let bx = nn::BoxPriorParams::from_points(&coords, &labels, 4.0).unwrap();
        let logits = vals(seed ^ 4, masks * side * side, -8.0, 8.0);
        let dgrid = g.upload(&grid).unwrap();
        let mut yp = g.upload(&vec![f32::NAN; logits.len()]).unwrap();
        g.box_prior_add_f32(&g.upload(&logits).unwrap(), &dgrid, &dgrid, &mut yp, bx, masks, side).unwrap();
        close(&g.download(&yp).unwrap(), &nn::box_prior_add(&logits, &grid, &grid, bx, masks, side).unwrap(), tol::F32, 1.0)?;
    }
}
