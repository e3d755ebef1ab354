//! Times every kernel on the GPU present, at LiteMedSAM-sized shapes, and prints
//! a table with the floor each one is measured against (run by
//! `kernels/bench/gpu-check.sh`; needs a GPU, exits with a message otherwise).
//!
//! Floors: memory-bound kernels against the minimum bytes they must move at the
//! peak DRAM bandwidth (from the driver's memory clock and bus width); compute-
//! bound ones against the larger of that and their FLOPs at the peak f32 FMA rate
//! (128 FP32 lanes per SM for sm_8x/sm_90; the int8 GEMM at 4× that for dp4a).
//! Both peaks can be overridden with `EDGESEG_PEAK_GBS` / `EDGESEG_PEAK_GFLOPS`
//! (e.g. when the driver reports no memory clock, as on some Jetsons). Times are
//! the median of 20 launches after 3 warm-ups, measured with CUDA events.

use cudarc::driver::sys::{CUdevice_attribute as A, CUevent_flags};
use edgeseg_kernels::gpu::{Gpu, GpuError};
use edgeseg_kernels::reference::nn::{Act, AttnShape, ConvShape, Strides};
use edgeseg_kernels::reference::{OverlayStyle, PixelFormat};

struct Peaks {
    gbs: f64,
    gflops: f64,
}

fn peaks(g: &Gpu) -> Result<Peaks, GpuError> {
    let attr = |a| {
        g.context()
            .attribute(a)
            .map_err(GpuError::driver("cuDeviceGetAttribute"))
    };
    let mem_khz = f64::from(attr(A::CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE)?);
    let bus_bits = f64::from(attr(A::CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH)?);
    let clk_khz = f64::from(attr(A::CU_DEVICE_ATTRIBUTE_CLOCK_RATE)?);
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<f64>().ok());
    Ok(Peaks {
        gbs: env("EDGESEG_PEAK_GBS").unwrap_or(2.0 * mem_khz * 1e3 * bus_bits / 8.0 / 1e9),
        gflops: env("EDGESEG_PEAK_GFLOPS")
            .unwrap_or(f64::from(g.info().sm_count) * 128.0 * 2.0 * clk_khz * 1e3 / 1e9),
    })
}

/// Median time in microseconds of `f` (20 runs after 3 warm-ups).
fn time(g: &Gpu, mut f: impl FnMut() -> Result<(), GpuError>) -> Result<f64, GpuError> {
    let ev = || {
        g.context()
            .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(GpuError::driver("cuEventCreate"))
    };
    for _ in 0..3 {
        f()?;
    }
    g.synchronize()?;
    let mut ts = Vec::new();
    for _ in 0..20 {
        let (a, b) = (ev()?, ev()?);
        a.record(g.stream())
            .map_err(GpuError::driver("cuEventRecord"))?;
        f()?;
        b.record(g.stream())
            .map_err(GpuError::driver("cuEventRecord"))?;
        b.synchronize()
            .map_err(GpuError::driver("cuEventSynchronize"))?;
        ts.push(
            f64::from(
                a.elapsed_ms(&b)
                    .map_err(GpuError::driver("cuEventElapsedTime"))?,
            ) * 1e3,
        );
    }
    ts.sort_by(f64::total_cmp);
    Ok(ts[ts.len() / 2])
}

struct Row {
    name: &'static str,
    shape: String,
    us: f64,
    bytes: f64,
    flops: f64,
    flop_scale: f64,
}

fn run() -> Result<(), GpuError> {
    let g = Gpu::new(0)?;
    g.warm_up()?;
    let p = peaks(&g)?;
    let i = g.info();
    println!(
        "GPU: {} ({}), {} SMs, driver {}, NVRTC {}.{}; peaks used: {:.0} GB/s, {:.0} GFLOP/s f32",
        i.name,
        i.arch.sm(),
        i.sm_count,
        i.driver_version,
        i.nvrtc_version.0,
        i.nvrtc_version.1,
        p.gbs,
        p.gflops
    );
    let mut rows: Vec<Row> = Vec::new();
    let mut add = |name, shape: String, us, bytes: f64, flops: f64, flop_scale| {
        rows.push(Row {
            name,
            shape,
            us,
            bytes,
            flops,
            flop_scale,
        })
    };

    // pre-processing: 1080p NV12 and 720p YUYV to 256x256 f16
    for (fmt, w, h, bpp) in [
        (PixelFormat::Nv12, 1920, 1080, 1.5),
        (PixelFormat::Yuyv, 1280, 720, 2.0),
    ] {
        let stride = fmt.min_stride(w).unwrap();
        let len = (w as f64 * h as f64 * bpp) as usize;
        let frame = g.upload(&vec![77u8; len])?;
        let mut plan = g.preprocess_plan(fmt, w, h, stride, 256)?;
        let mut out = g.zeros::<u16>(3 * 256 * 256)?;
        let us = time(&g, || g.preprocess_f16(&mut plan, &frame, &mut out))?;
        add(
            "preprocess f16",
            format!("{fmt:?} {w}x{h} -> 256"),
            us,
            len as f64 + 3.0 * 65536.0 * 2.0,
            0.0,
            1.0,
        );
    }
    // post-processing with overlay: 256x256 logits -> 1080p
    {
        let plan = g.postprocess_plan(256, 256, 144, 256, 1080, 1920)?;
        let logits = g.upload(&vec![-1.0f32; 65536])?;
        let rgb = g.upload(&vec![9u8; 1920 * 1080 * 3])?;
        let mut out = g.zeros::<u8>(1920 * 1080 * 3)?;
        let mut mask = g.zeros::<u8>(1920 * 1080)?;
        let st = OverlayStyle::default();
        let us = time(&g, || {
            g.postprocess(&plan, &logits, &mut mask, Some((&rgb, &mut out)), &st)
        })?;
        add(
            "postprocess+overlay",
            "256² -> 1920x1080".into(),
            us,
            65536.0 * 4.0 + 1920.0 * 1080.0 * 7.0,
            0.0,
            1.0,
        );
    }
    // norms, GELU, softmax
    {
        let (rows_, c) = (4096, 256);
        let x = g.upload(&vec![0.5f32; rows_ * c])?;
        let gm = g.upload(&vec![1.0f32; c])?;
        let mut y = g.zeros::<f32>(rows_ * c)?;
        let us = time(&g, || g.layer_norm(&x, &gm, &gm, &mut y, rows_, c, 1e-5))?;
        add(
            "layernorm",
            format!("{rows_}x{c}"),
            us,
            8.0 * (rows_ * c) as f64,
            0.0,
            1.0,
        );
        let us = time(&g, || {
            g.layer_norm2d(&x, &gm, &gm, &mut y, 1, c, rows_, 1e-6)
        })?;
        add(
            "layernorm2d",
            format!("1x{c}x64x64"),
            us,
            8.0 * (rows_ * c) as f64,
            0.0,
            1.0,
        );
        let n = 4096 * 1024;
        let a = g.upload(&vec![0.3f32; n])?;
        let mut b = g.zeros::<f32>(n)?;
        let us = time(&g, || g.gelu_f32(&a, &mut b))?;
        add("gelu f32", format!("{n}"), us, 8.0 * n as f64, 0.0, 1.0);
        let (r, cols) = (56, 4096);
        let s = g.upload(&vec![0.1f32; r * cols])?;
        let mut o = g.zeros::<f32>(r * cols)?;
        let us = time(&g, || g.softmax_rows(&s, &mut o, r, cols))?;
        add(
            "softmax",
            format!("{r}x{cols}"),
            us,
            8.0 * (r * cols) as f64,
            0.0,
            1.0,
        );
    }
    // attention: TinyViT window (5x5 windows of 7x7, 5 heads of 32), decoder cross-attention,
    // and a global 4096-token self-attention
    for (label, s) in [
        (
            "attention window",
            AttnShape {
                batch: 25,
                heads: 5,
                nq: 49,
                nk: 49,
                dim: 32,
            },
        ),
        (
            "attention cross",
            AttnShape {
                batch: 1,
                heads: 8,
                nq: 7,
                nk: 4096,
                dim: 16,
            },
        ),
        (
            "attention global",
            AttnShape {
                batch: 1,
                heads: 8,
                nq: 4096,
                nk: 4096,
                dim: 32,
            },
        ),
    ] {
        let st = |n| Strides::bhnd(s.heads, n, s.dim);
        let q = g.upload(&vec![0x3000u16; s.batch * s.heads * s.nq * s.dim])?;
        let kv = g.upload(&vec![0x3000u16; s.batch * s.heads * s.nk * s.dim])?;
        let mut o = g.zeros::<u16>(s.batch * s.heads * s.nq * s.dim)?;
        let scale = 1.0 / (s.dim as f32).sqrt();
        let us = time(&g, || {
            g.attention_f16(
                s,
                &q,
                st(s.nq),
                &kv,
                st(s.nk),
                &kv,
                st(s.nk),
                None,
                scale,
                &mut o,
                st(s.nq),
            )
        })?;
        let bh = (s.batch * s.heads) as f64;
        let bytes =
            bh * 2.0 * (2.0 * s.nq as f64 * s.dim as f64 + 2.0 * s.nk as f64 * s.dim as f64);
        let flops = bh * 4.0 * s.nq as f64 * s.nk as f64 * s.dim as f64;
        add(
            label,
            format!("{}x{}x{}x{} d{}", s.batch, s.heads, s.nq, s.nk, s.dim),
            us,
            bytes,
            flops,
            1.0,
        );
    }
    // convolutions (TinyViT patch embedding and MBConv)
    for (label, s) in [
        (
            "conv3x3 s2",
            ConvShape {
                n: 1,
                cin: 3,
                h: 256,
                w: 256,
                cout: 32,
                k: 3,
                stride: 2,
                pad: 1,
                depthwise: false,
            },
        ),
        (
            "conv3x3 s2",
            ConvShape {
                n: 1,
                cin: 32,
                h: 128,
                w: 128,
                cout: 64,
                k: 3,
                stride: 2,
                pad: 1,
                depthwise: false,
            },
        ),
        (
            "dwconv3x3",
            ConvShape {
                n: 1,
                cin: 256,
                h: 64,
                w: 64,
                cout: 256,
                k: 3,
                stride: 1,
                pad: 1,
                depthwise: true,
            },
        ),
        (
            "conv1x1",
            ConvShape {
                n: 1,
                cin: 64,
                h: 64,
                w: 64,
                cout: 256,
                k: 1,
                stride: 1,
                pad: 0,
                depthwise: false,
            },
        ),
    ] {
        let (ho, wo) = s.out_hw();
        let wlen = s.cout * if s.depthwise { 1 } else { s.cin } * s.k * s.k;
        let x = g.upload(&vec![0.1f32; s.n * s.cin * s.h * s.w])?;
        let w = g.upload(&vec![0.01f32; wlen])?;
        let sc = g.upload(&vec![1.0f32; s.cout])?;
        let mut y = g.zeros::<f32>(s.n * s.cout * ho * wo)?;
        let us = time(&g, || {
            g.conv2d_bn_act(&x, &w, &sc, &sc, &mut y, s, Act::Gelu)
        })?;
        let bytes = 4.0 * (x.len() + wlen + y.len()) as f64;
        let flops = 2.0 * (y.len() * s.k * s.k * if s.depthwise { 1 } else { s.cin }) as f64;
        add(
            label,
            format!("{}->{} {}x{} k{}", s.cin, s.cout, s.h, s.w, s.k),
            us,
            bytes,
            flops,
            1.0,
        );
    }
    // GEMMs (MLP of the 64x64 stage: 4096 tokens, 256 -> 1024)
    {
        let (m, n, k) = (4096, 1024, 256);
        let a = g.upload(&vec![0.1f32; m * k])?;
        let w = g.upload(&vec![0.1f32; n * k])?;
        let b = g.upload(&vec![0.0f32; n])?;
        let mut c = g.zeros::<f32>(m * n)?;
        let us = time(&g, || {
            g.gemm_bias_act_f32(&a, &w, Some(&b), &mut c, m, n, k, Act::Gelu)
        })?;
        let fl = 2.0 * (m * n * k) as f64;
        add(
            "gemm f32 +bias+gelu",
            format!("{m}x{n}x{k}"),
            us,
            4.0 * (m * k + n * k + m * n) as f64,
            fl,
            1.0,
        );
        let ah = g.upload(&vec![0x2e66u16; m * k])?;
        let wh = g.upload(&vec![0x2e66u16; n * k])?;
        let mut ch = g.zeros::<u16>(m * n)?;
        let us = time(&g, || {
            g.gemm_bias_act_f16(&ah, &wh, Some(&b), &mut ch, m, n, k, Act::Gelu)
        })?;
        add(
            "gemm f16 +bias+gelu",
            format!("{m}x{n}x{k}"),
            us,
            2.0 * (m * k + n * k + m * n) as f64,
            fl,
            1.0,
        );
        let ai = g.upload(&vec![3i8; m * k])?;
        let wi = g.upload(&vec![-2i8; n * k])?;
        let us = time(&g, || {
            g.gemm_i8_dequant(&ai, &wi, &b, Some(&b), &mut c, m, n, k)
        })?;
        add(
            "gemm int8 dequant",
            format!("{m}x{n}x{k}"),
            us,
            (m * k + n * k) as f64 + 4.0 * (m * n) as f64,
            fl,
            4.0,
        );
    }
    // few-shot heads
    {
        let (c, hw, np) = (256, 4096, 4);
        let f = g.upload(&vec![0.2f32; c * hw])?;
        let m = g.upload(&vec![1.0f32; hw])?;
        let mut pr = g.zeros::<f32>(c)?;
        let us = time(&g, || g.masked_avg_pool(&f, &m, &mut pr, c, hw, 1e-6))?;
        add(
            "masked avg pool",
            format!("{c}x{hw}"),
            us,
            4.0 * (c * hw + hw) as f64,
            0.0,
            1.0,
        );
        let ps = g.upload(&vec![0.5f32; np * c])?;
        let mut sim = g.zeros::<f32>(np * hw)?;
        let us = time(&g, || g.cosine_sim(&f, &ps, &mut sim, c, hw, np, 1e-8))?;
        add(
            "cosine sim",
            format!("{c}x{hw} vs {np}"),
            us,
            4.0 * (c * hw + np * hw) as f64,
            2.0 * (c * hw * np) as f64,
            1.0,
        );
    }

    println!("\n| kernel | shape | time (µs) | floor (µs) | bound | × floor |");
    println!("|---|---|---:|---:|---|---:|");
    for r in &rows {
        let t_mem = r.bytes / (p.gbs * 1e9) * 1e6;
        let t_fl = r.flops / (p.gflops * r.flop_scale * 1e9) * 1e6;
        let (floor, bound) = if t_fl > t_mem {
            (t_fl, "FLOP")
        } else {
            (t_mem, "memory")
        };
        println!(
            "| {} | {} | {:.1} | {:.1} | {} | {:.2} |",
            r.name,
            r.shape,
            r.us,
            floor,
            bound,
            r.us / floor.max(1e-9)
        );
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gpu_bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
