//! Typed launchers: every kernel of `kernels/cu/` behind a checked Rust call.
//!
//! Launchers enqueue on [`Gpu::stream`] and return without waiting; buffers are
//! cudarc [`CudaSlice`]s whose lengths are checked against the shapes first, so a
//! wrong size is an error, never an out-of-bounds access on the GPU. f16 tensors
//! are `CudaSlice<u16>` holding IEEE binary16 bit patterns. Each launcher's
//! specification is the CPU reference named in its doc comment.
//!
//! Kernel launches are the remaining FFI. Before each launch the kinds of the
//! pushed arguments are compared with the kernel's C declaration, parsed from its
//! source (`sources::kernel_params`): a launcher that disagrees with its kernel
//! gets [`GpuError::Signature`] instead of a launch with a wrong argument list.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use cudarc::driver::{
    CudaFunction, CudaSlice, CudaView, CudaViewMut, DeviceRepr, LaunchArgs, LaunchConfig,
    PushKernelArg, ValidAsZeroBits,
};

use super::{to_i32, Gpu, GpuError};
use crate::launch_shapes::{self as shapes, Shape, TooLarge};
use crate::prepost::longest_side_size;
use crate::reference::nn::{Act, AttnShape, BoxPriorParams, ConvShape, NnError, Strides};
use crate::reference::{plan_resize, plan_upsample, OverlayStyle, PixelFormat};
use crate::sources::{kernel_params, source, ParamKind};

/// A null device pointer for optional kernel arguments.
static NULL_PTR: u64 = 0;

fn need(what: &'static str, got: usize, dims: &[usize]) -> Result<(), GpuError> {
    let expected = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| NnError::BadShape(format!("{what}: {dims:?} overflows")))?;
    if got == expected {
        Ok(())
    } else {
        Err(NnError::BadLength {
            what,
            got,
            expected,
        }
        .into())
    }
}

impl From<TooLarge> for GpuError {
    fn from(e: TooLarge) -> Self {
        GpuError::TooLarge {
            what: e.what,
            value: e.value,
            limit: e.limit,
        }
    }
}

fn cfg(sh: Shape) -> LaunchConfig {
    LaunchConfig {
        grid_dim: sh.grid,
        block_dim: sh.block,
        shared_mem_bytes: sh.smem,
    }
}

/// The [`ParamKind`] of a value pushed as a kernel argument.
trait ArgKind {
    const KIND: ParamKind;
}

impl ArgKind for &i32 {
    const KIND: ParamKind = ParamKind::I32;
}
impl ArgKind for &u32 {
    const KIND: ParamKind = ParamKind::U32;
}
impl ArgKind for &i64 {
    const KIND: ParamKind = ParamKind::I64;
}
impl ArgKind for &f32 {
    const KIND: ParamKind = ParamKind::F32;
}
/// Only [`NULL_PTR`] is pushed as a `u64`: a null pointer.
impl ArgKind for &u64 {
    const KIND: ParamKind = ParamKind::Ptr;
}
impl<T> ArgKind for &CudaSlice<T> {
    const KIND: ParamKind = ParamKind::Ptr;
}
impl<T> ArgKind for &mut CudaSlice<T> {
    const KIND: ParamKind = ParamKind::Ptr;
}
impl<T> ArgKind for &CudaView<'_, T> {
    const KIND: ParamKind = ParamKind::Ptr;
}
impl<T> ArgKind for &mut CudaViewMut<'_, T> {
    const KIND: ParamKind = ParamKind::Ptr;
}

/// A kernel's launch arguments, with the kind of each one recorded so that
/// [`KArgs::launch`] can compare them with the kernel's parsed C signature.
struct KArgs<'a> {
    inner: LaunchArgs<'a>,
    source: &'static str,
    kernel: &'static str,
    kinds: Vec<ParamKind>,
}

/// A loaded kernel and its names.
struct Kernel {
    f: CudaFunction,
    source: &'static str,
    kernel: &'static str,
}

impl<'a> KArgs<'a> {
    fn new(g: &'a Gpu, k: &'a Kernel) -> Self {
        KArgs {
            inner: g.stream().launch_builder(&k.f),
            source: k.source,
            kernel: k.kernel,
            kinds: Vec::new(),
        }
    }

    fn arg<A: ArgKind>(&mut self, a: A) -> &mut Self
    where
        LaunchArgs<'a>: PushKernelArg<A>,
    {
        self.inner.arg(a);
        self.kinds.push(A::KIND);
        self
    }

    /// Launches after checking the pushed arguments against the kernel's C
    /// parameter list (`sources::kernel_params`).
    fn launch(&mut self, c: LaunchConfig) -> Result<(), GpuError> {
        let expected = declared_params(self.source, self.kernel);
        if expected.as_deref() != Some(&self.kinds[..]) {
            return Err(GpuError::Signature {
                kernel: self.kernel,
                expected: format!("{expected:?}"),
                pushed: format!("{:?}", self.kinds),
            });
        }
        // SAFETY: the arguments match the kernel's parameters in number, order and
        // kind (checked just above against its C declaration), scalars have the C
        // types' sizes (i32 `int`, u32 `unsigned int`, i64 `long long`, f32 `float`),
        // pointers are live device buffers (or NULL where the kernel accepts it), and
        // every caller checked each buffer's length against the shape the kernel indexes.
        unsafe { self.inner.launch(c) }
            .map(|_| ())
            .map_err(GpuError::driver("cuLaunchKernel"))
    }
}

/// The parameter kinds of `kernel`'s C declaration in `source`, parsed once
/// per kernel (parsing the source on every launch cost more than many of the
/// launches themselves).
fn declared_params(source_name: &'static str, kernel: &'static str) -> Option<Vec<ParamKind>> {
    type Table = HashMap<(&'static str, &'static str), Option<Vec<ParamKind>>>;
    static PARAMS: OnceLock<Mutex<Table>> = OnceLock::new();
    let table = PARAMS.get_or_init(Default::default);
    let mut t = table
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    t.entry((source_name, kernel))
        .or_insert_with(|| source(source_name).and_then(|s| kernel_params(s, kernel)))
        .clone()
}

fn launch(args: &mut KArgs<'_>, c: LaunchConfig) -> Result<(), GpuError> {
    args.launch(c)
}

fn opt<'a, T>(args: &mut KArgs<'a>, s: Option<&'a CudaSlice<T>>) {
    match s {
        Some(s) => args.arg(s),
        None => args.arg(&NULL_PTR),
    };
}

impl Gpu {
    fn kernel(&self, source: &'static str, kernel: &'static str) -> Result<Kernel, GpuError> {
        Ok(Kernel {
            f: self.function(source, kernel)?,
            source,
            kernel,
        })
    }

    /// Copies a host slice to a new device buffer.
    pub fn upload<T: DeviceRepr>(&self, v: &[T]) -> Result<CudaSlice<T>, GpuError> {
        self.stream()
            .clone_htod(v)
            .map_err(GpuError::driver("cuMemcpyHtoD"))
    }

    /// Copies a device buffer back (waits for the stream).
    pub fn download<T: DeviceRepr>(&self, s: &CudaSlice<T>) -> Result<Vec<T>, GpuError> {
        self.stream()
            .clone_dtoh(s)
            .map_err(GpuError::driver("cuMemcpyDtoH"))
    }

    /// A zeroed device buffer of `n` elements.
    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        n: usize,
    ) -> Result<CudaSlice<T>, GpuError> {
        self.stream()
            .alloc_zeros(n.max(1))
            .map_err(GpuError::driver("cuMemAlloc"))
    }
}

/// Device-side tables and scratch of the fused pre-processing for one frame
/// geometry (build once, run per frame). Spec: `reference::preprocess_frame`.
#[derive(Debug)]
pub struct PreprocessPlan {
    format: PixelFormat,
    width: usize,
    height: usize,
    stride: usize,
    /// Model input side.
    pub size: usize,
    /// Height after the longest-side resize.
    pub new_h: usize,
    /// Width after the longest-side resize.
    pub new_w: usize,
    frame_len: usize,
    mode: i32,
    fsx: i32,
    fsy: i32,
    inv_area: f32,
    xi: CudaSlice<i32>,
    xf: CudaSlice<f32>,
    yi: CudaSlice<i32>,
    yf: CudaSlice<f32>,
    /// The resized u8 image (`new_h × new_w × 3`), valid after a run.
    pub resized: CudaSlice<u8>,
    minmax: CudaSlice<u32>,
}

/// Device-side tables of the fused post-processing for one geometry.
/// Spec: `reference::postprocess_overlay`.
#[derive(Debug)]
pub struct PostprocessPlan {
    lh: usize,
    lw: usize,
    /// Output height (the frame's).
    pub out_h: usize,
    /// Output width.
    pub out_w: usize,
    yi: CudaSlice<i32>,
    yw: CudaSlice<f32>,
    xi: CudaSlice<i32>,
    xw: CudaSlice<f32>,
}

fn pack_rgb(c: [u8; 3]) -> u32 {
    u32::from(c[0]) | (u32::from(c[1]) << 8) | (u32::from(c[2]) << 16)
}

impl Gpu {
    /// Plans the pre-processing of `format` frames of `width × height` (row pitch
    /// `stride` bytes) for a `size × size` model input.
    pub fn preprocess_plan(
        &self,
        format: PixelFormat,
        width: usize,
        height: usize,
        stride: usize,
        size: usize,
    ) -> Result<PreprocessPlan, GpuError> {
        let frame = crate::reference::Frame {
            format,
            width,
            height,
            stride,
            data: &[],
        };
        let frame_len = frame.required_len()?;
        to_i32("frame bytes", frame_len)?;
        let (new_h, new_w) = longest_side_size(height, width, size);
        let t = plan_resize(height, width, new_h, new_w)?;
        Ok(PreprocessPlan {
            format,
            width,
            height,
            stride,
            size,
            new_h,
            new_w,
            frame_len,
            mode: t.mode,
            fsx: t.fsx,
            fsy: t.fsy,
            inv_area: t.inv_area,
            xi: self.upload(&t.xi)?,
            xf: self.upload(&t.xf)?,
            yi: self.upload(&t.yi)?,
            yf: self.upload(&t.yf)?,
            resized: self.zeros(new_h * new_w * 3)?,
            minmax: self.zeros(2)?,
        })
    }

    fn preprocess_resize(
        &self,
        p: &mut PreprocessPlan,
        frame: &CudaSlice<u8>,
    ) -> Result<(), GpuError> {
        if frame.len() < p.frame_len {
            return Err(NnError::BadLength {
                what: "frame",
                got: frame.len(),
                expected: p.frame_len,
            }
            .into());
        }
        self.stream()
            .memcpy_htod(&[255u32, 0u32], &mut p.minmax)
            .map_err(GpuError::driver("cuMemcpyHtoD"))?;
        let f = self.kernel("preprocess.cu", "pre_resize")?;
        let (fmt, sh, sw, st) = (
            p.format.code(),
            to_i32("height", p.height)?,
            to_i32("width", p.width)?,
            to_i32("stride", p.stride)?,
        );
        let (dh, dw) = (to_i32("new_h", p.new_h)?, to_i32("new_w", p.new_w)?);
        let mut a = KArgs::new(self, &f);
        a.arg(frame)
            .arg(&fmt)
            .arg(&sh)
            .arg(&sw)
            .arg(&st)
            .arg(&p.mode);
        a.arg(&dh)
            .arg(&dw)
            .arg(&p.xi)
            .arg(&p.xf)
            .arg(&p.yi)
            .arg(&p.yf);
        a.arg(&p.fsx).arg(&p.fsy).arg(&p.inv_area);
        a.arg(&mut p.resized).arg(&mut p.minmax);
        launch(&mut a, cfg(shapes::pre_resize(p.new_h, p.new_w)?))
    }

    /// Fused pre-processing to f32 NCHW (`3 × size × size`).
    pub fn preprocess_f32(
        &self,
        p: &mut PreprocessPlan,
        frame: &CudaSlice<u8>,
        out: &mut CudaSlice<f32>,
    ) -> Result<(), GpuError> {
        need("preprocess output", out.len(), &[3, p.size, p.size])?;
        self.preprocess_resize(p, frame)?;
        let f = self.kernel("preprocess.cu", "pre_normalize_f32")?;
        let (nh, nw, s) = (
            to_i32("new_h", p.new_h)?,
            to_i32("new_w", p.new_w)?,
            to_i32("size", p.size)?,
        );
        let mut a = KArgs::new(self, &f);
        a.arg(&p.resized)
            .arg(&p.minmax)
            .arg(&nh)
            .arg(&nw)
            .arg(&s)
            .arg(out);
        launch(&mut a, cfg(shapes::pre_normalize(p.size)?))
    }

    /// Fused pre-processing to f16 NCHW (bit patterns).
    pub fn preprocess_f16(
        &self,
        p: &mut PreprocessPlan,
        frame: &CudaSlice<u8>,
        out: &mut CudaSlice<u16>,
    ) -> Result<(), GpuError> {
        need("preprocess output", out.len(), &[3, p.size, p.size])?;
        self.preprocess_resize(p, frame)?;
        let f = self.kernel("preprocess.cu", "pre_normalize_f16")?;
        let (nh, nw, s) = (
            to_i32("new_h", p.new_h)?,
            to_i32("new_w", p.new_w)?,
            to_i32("size", p.size)?,
        );
        let mut a = KArgs::new(self, &f);
        a.arg(&p.resized)
            .arg(&p.minmax)
            .arg(&nh)
            .arg(&nw)
            .arg(&s)
            .arg(out);
        launch(&mut a, cfg(shapes::pre_normalize(p.size)?))
    }

    /// Plans the post-processing of `lh × lw` logits whose top-left
    /// `new_h × new_w` is the image, to an `out_h × out_w` frame.
    pub fn postprocess_plan(
        &self,
        lh: usize,
        lw: usize,
        new_h: usize,
        new_w: usize,
        out_h: usize,
        out_w: usize,
    ) -> Result<PostprocessPlan, GpuError> {
        if new_h == 0 || new_w == 0 || new_h > lh || new_w > lw || out_h == 0 || out_w == 0 {
            return Err(crate::prepost::PrepError::BadSize(format!(
                "crop {new_h}x{new_w} of {lh}x{lw} to {out_h}x{out_w}"
            ))
            .into());
        }
        to_i32(
            "frame pixels",
            out_h.saturating_mul(out_w).saturating_mul(3),
        )?;
        let (yi, yw) = plan_upsample(new_h, out_h);
        let (xi, xw) = plan_upsample(new_w, out_w);
        Ok(PostprocessPlan {
            lh,
            lw,
            out_h,
            out_w,
            yi: self.upload(&yi)?,
            yw: self.upload(&yw)?,
            xi: self.upload(&xi)?,
            xw: self.upload(&xw)?,
        })
    }

    /// Fused post-processing: the 0/1 mask, and with `overlay = Some((rgb_in,
    /// rgb_out))` the overlaid frame in the same pass.
    pub fn postprocess(
        &self,
        p: &PostprocessPlan,
        logits: &CudaSlice<f32>,
        mask: &mut CudaSlice<u8>,
        overlay: Option<(&CudaSlice<u8>, &mut CudaSlice<u8>)>,
        style: &OverlayStyle,
    ) -> Result<(), GpuError> {
        need("logits", logits.len(), &[p.lh, p.lw])?;
        need("mask", mask.len(), &[p.out_h, p.out_w])?;
        if let Some((i, o)) = &overlay {
            need("overlay input", i.len(), &[p.out_h, p.out_w, 3])?;
            need("overlay output", o.len(), &[p.out_h, p.out_w, 3])?;
        }
        let f = self.kernel("postprocess.cu", "post_mask_overlay")?;
        let (lw, oh, ow) = (
            to_i32("lw", p.lw)?,
            to_i32("out_h", p.out_h)?,
            to_i32("out_w", p.out_w)?,
        );
        let (fill, contour) = (pack_rgb(style.fill), pack_rgb(style.contour));
        let oma = 1.0f32 - style.alpha;
        let mut a = KArgs::new(self, &f);
        a.arg(logits).arg(&lw).arg(&oh).arg(&ow);
        a.arg(&p.yi).arg(&p.yw).arg(&p.xi).arg(&p.xw).arg(mask);
        match overlay {
            Some((i, o)) => {
                a.arg(i).arg(o);
            }
            None => {
                a.arg(&NULL_PTR).arg(&NULL_PTR);
            }
        }
        a.arg(&fill).arg(&style.alpha).arg(&oma).arg(&contour);
        launch(&mut a, cfg(shapes::post_mask_overlay(p.out_h, p.out_w)?))
    }

    /// LayerNorm over rows of `c`. Spec: `reference::nn::layer_norm`.
    #[allow(clippy::too_many_arguments)]
    pub fn layer_norm(
        &self,
        x: &CudaSlice<f32>,
        gamma: &CudaSlice<f32>,
        beta: &CudaSlice<f32>,
        y: &mut CudaSlice<f32>,
        rows: usize,
        c: usize,
        eps: f32,
    ) -> Result<(), GpuError> {
        need("layer_norm x", x.len(), &[rows, c])?;
        need("layer_norm y", y.len(), &[rows, c])?;
        need("layer_norm gamma", gamma.len(), &[c])?;
        need("layer_norm beta", beta.len(), &[c])?;
        let f = self.kernel("layernorm.cu", "layernorm_f32")?;
        let (r, ci) = (to_i32("rows", rows)?, to_i32("c", c)?);
        let mut a = KArgs::new(self, &f);
        a.arg(x)
            .arg(gamma)
            .arg(beta)
            .arg(y)
            .arg(&r)
            .arg(&ci)
            .arg(&eps);
        launch(&mut a, cfg(shapes::layernorm(rows, c)?))
    }

    /// LayerNorm2d over the channels of `n × c × hw`. Spec: `reference::nn::layer_norm2d`.
    #[allow(clippy::too_many_arguments)]
    pub fn layer_norm2d(
        &self,
        x: &CudaSlice<f32>,
        gamma: &CudaSlice<f32>,
        beta: &CudaSlice<f32>,
        y: &mut CudaSlice<f32>,
        n: usize,
        c: usize,
        hw: usize,
        eps: f32,
    ) -> Result<(), GpuError> {
        need("layer_norm2d x", x.len(), &[n, c, hw])?;
        need("layer_norm2d y", y.len(), &[n, c, hw])?;
        need("layer_norm2d gamma", gamma.len(), &[c])?;
        need("layer_norm2d beta", beta.len(), &[c])?;
        let f = self.kernel("layernorm.cu", "layernorm2d_f32")?;
        let (ni, ci, hwi) = (to_i32("n", n)?, to_i32("c", c)?, to_i32("hw", hw)?);
        let mut a = KArgs::new(self, &f);
        a.arg(x)
            .arg(gamma)
            .arg(beta)
            .arg(y)
            .arg(&ni)
            .arg(&ci)
            .arg(&hwi)
            .arg(&eps);
        launch(&mut a, cfg(shapes::layernorm2d(n, hw)?))
    }

    /// Elementwise GELU, f32. Spec: `reference::nn::gelu`.
    pub fn gelu_f32(&self, x: &CudaSlice<f32>, y: &mut CudaSlice<f32>) -> Result<(), GpuError> {
        need("gelu y", y.len(), &[x.len()])?;
        let f = self.kernel("elementwise.cu", "gelu_f32")?;
        let n = x.len() as i64;
        let mut a = KArgs::new(self, &f);
        a.arg(x).arg(y).arg(&n);
        launch(&mut a, cfg(shapes::elementwise(x.len())?))
    }

    /// Elementwise GELU, f16 in and out, f32 math.
    pub fn gelu_f16(&self, x: &CudaSlice<u16>, y: &mut CudaSlice<u16>) -> Result<(), GpuError> {
        need("gelu y", y.len(), &[x.len()])?;
        let f = self.kernel("elementwise.cu", "gelu_f16")?;
        let n = x.len() as i64;
        let mut a = KArgs::new(self, &f);
        a.arg(x).arg(y).arg(&n);
        launch(&mut a, cfg(shapes::elementwise(x.len())?))
    }

    /// Softmax over rows. Spec: `reference::nn::softmax_rows`.
    pub fn softmax_rows(
        &self,
        x: &CudaSlice<f32>,
        y: &mut CudaSlice<f32>,
        rows: usize,
        cols: usize,
    ) -> Result<(), GpuError> {
        need("softmax x", x.len(), &[rows, cols])?;
        need("softmax y", y.len(), &[rows, cols])?;
        let f = self.kernel("softmax.cu", "softmax_rows_f32")?;
        let (r, c) = (to_i32("rows", rows)?, to_i32("cols", cols)?);
        let mut a = KArgs::new(self, &f);
        a.arg(x).arg(y).arg(&r).arg(&c);
        launch(&mut a, cfg(shapes::softmax_rows(rows)?))
    }

    /// Flash-style multi-head attention (f16, f32 accumulation), head dimension
    /// 16, 32 or 64. Spec: `reference::nn::attention_f16`.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_f16(
        &self,
        s: AttnShape,
        q: &CudaSlice<u16>,
        qs: Strides,
        k: &CudaSlice<u16>,
        ks: Strides,
        v: &CudaSlice<u16>,
        vs: Strides,
        bias: Option<&CudaSlice<f32>>,
        scale: f32,
        o: &mut CudaSlice<u16>,
        os: Strides,
    ) -> Result<(), GpuError> {
        let kernel = match s.dim {
            8 => "attention_f16_d8",
            12 => "attention_f16_d12",
            16 => "attention_f16_d16",
            24 => "attention_f16_d24",
            32 => "attention_f16_d32",
            48 => "attention_f16_d48",
            64 => "attention_f16_d64",
            d => {
                return Err(NnError::BadShape(format!(
                    "attention head dim {d} (the kernel is built for {:?})",
                    crate::reference::nn::ATTENTION_HEAD_DIMS
                ))
                .into())
            }
        };
        if s.nk == 0 || s.nq == 0 || s.batch == 0 || s.heads == 0 {
            return Err(NnError::BadShape(format!("{s:?}")).into());
        }
        let last = |st: Strides, n: usize| {
            (s.batch - 1) * st.batch + (s.heads - 1) * st.head + (n - 1) * st.token + s.dim
        };
        for (what, len, st, n) in [
            ("attention q", q.len(), qs, s.nq),
            ("attention k", k.len(), ks, s.nk),
            ("attention v", v.len(), vs, s.nk),
            ("attention o", o.len(), os, s.nq),
        ] {
            if len < last(st, n) {
                return Err(NnError::BadLength {
                    what,
                    got: len,
                    expected: last(st, n),
                }
                .into());
            }
        }
        if let Some(b) = bias {
            need("attention bias", b.len(), &[s.heads, s.nq, s.nk])?;
        }
        let f = self.kernel("attention.cu", kernel)?;
        let (nq, nk) = (to_i32("nq", s.nq)?, to_i32("nk", s.nk)?);
        let st = |x: Strides| [x.batch as i64, x.head as i64, x.token as i64];
        let (sq, sk, sv, so) = (st(qs), st(ks), st(vs), st(os));
        let mut a = KArgs::new(self, &f);
        a.arg(q).arg(k).arg(v).arg(o);
        opt(&mut a, bias);
        a.arg(&nq).arg(&nk).arg(&scale);
        for x in sq.iter().chain(&sk).chain(&sv).chain(&so) {
            a.arg(x);
        }
        launch(&mut a, cfg(shapes::attention(s.nq, s.heads, s.batch)?))
    }

    /// Window partition of `b × h × w × c` f16 tokens into `ws × ws` windows
    /// (zero padding). Spec: `reference::nn::window_partition`.
    #[allow(clippy::too_many_arguments)]
    pub fn window_partition_f16(
        &self,
        x: &CudaSlice<u16>,
        out: &mut CudaSlice<u16>,
        b: usize,
        h: usize,
        w: usize,
        c: usize,
        ws: usize,
    ) -> Result<(), GpuError> {
        self.windows("window_partition_f16", x, out, [b, h, w, c, ws], true)
    }

    /// Inverse of [`Gpu::window_partition_f16`]. Spec: `reference::nn::window_reverse`.
    #[allow(clippy::too_many_arguments)]
    pub fn window_reverse_f16(
        &self,
        win: &CudaSlice<u16>,
        x: &mut CudaSlice<u16>,
        b: usize,
        h: usize,
        w: usize,
        c: usize,
        ws: usize,
    ) -> Result<(), GpuError> {
        self.windows("window_reverse_f16", win, x, [b, h, w, c, ws], false)
    }

    /// [`Gpu::window_partition_f16`] for f32 tokens.
    #[allow(clippy::too_many_arguments)]
    pub fn window_partition_f32(
        &self,
        x: &CudaSlice<f32>,
        out: &mut CudaSlice<f32>,
        b: usize,
        h: usize,
        w: usize,
        c: usize,
        ws: usize,
    ) -> Result<(), GpuError> {
        self.windows("window_partition_f32", x, out, [b, h, w, c, ws], true)
    }

    /// [`Gpu::window_reverse_f16`] for f32 tokens.
    #[allow(clippy::too_many_arguments)]
    pub fn window_reverse_f32(
        &self,
        win: &CudaSlice<f32>,
        x: &mut CudaSlice<f32>,
        b: usize,
        h: usize,
        w: usize,
        c: usize,
        ws: usize,
    ) -> Result<(), GpuError> {
        self.windows("window_reverse_f32", win, x, [b, h, w, c, ws], false)
    }

    /// Window partition (`partition`) or reverse of `b × h × w × c` tokens.
    fn windows<T: DeviceRepr>(
        &self,
        kernel: &'static str,
        src: &CudaSlice<T>,
        dst: &mut CudaSlice<T>,
        [b, h, w, c, ws]: [usize; 5],
        partition: bool,
    ) -> Result<(), GpuError> {
        if ws == 0 {
            return Err(NnError::BadShape("window size 0".into()).into());
        }
        let tokens = [b, h, w, c];
        let windows = [b, h.div_ceil(ws), w.div_ceil(ws), ws, ws, c];
        let (src_dims, dst_dims): (&[usize], &[usize]) = if partition {
            (&tokens, &windows)
        } else {
            (&windows, &tokens)
        };
        need("window op input", src.len(), src_dims)?;
        need("window op output", dst.len(), dst_dims)?;
        let f = self.kernel("attention.cu", kernel)?;
        let d = [
            to_i32("b", b)?,
            to_i32("h", h)?,
            to_i32("w", w)?,
            to_i32("c", c)?,
            to_i32("ws", ws)?,
        ];
        let n = dst.len();
        let mut a = KArgs::new(self, &f);
        a.arg(src).arg(&mut *dst);
        for v in &d {
            a.arg(v);
        }
        launch(&mut a, cfg(shapes::elementwise(n)?))
    }

    /// `y = act(a + b)`. Spec: `reference::nn::add_act`.
    pub fn add_act_f32(
        &self,
        a: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
        y: &mut CudaSlice<f32>,
        act: Act,
    ) -> Result<(), GpuError> {
        need("add b", b.len(), &[a.len()])?;
        need("add y", y.len(), &[a.len()])?;
        let f = self.kernel("tensor.cu", "add_act_f32")?;
        let n = a.len() as i64;
        let code = act.code();
        let mut k = KArgs::new(self, &f);
        k.arg(a).arg(b).arg(&mut *y).arg(&n).arg(&code);
        launch(&mut k, cfg(shapes::elementwise(a.len())?))
    }

    /// `y[i] = x[i] + c[i mod len(c)]`. Spec: `reference::nn::add_broadcast`.
    pub fn add_broadcast_f32(
        &self,
        x: &CudaSlice<f32>,
        c: &CudaSlice<f32>,
        y: &mut CudaSlice<f32>,
    ) -> Result<(), GpuError> {
        if c.is_empty() || !x.len().is_multiple_of(c.len()) {
            return Err(NnError::BadShape(format!(
                "add of a {}-value constant to {} values",
                c.len(),
                x.len()
            ))
            .into());
        }
        need("add_broadcast y", y.len(), &[x.len()])?;
        let f = self.kernel("tensor.cu", "add_broadcast_f32")?;
        let (n, cn) = (x.len() as i64, to_i32("constant length", c.len())?);
        let mut k = KArgs::new(self, &f);
        k.arg(x).arg(c).arg(&mut *y).arg(&n).arg(&cn);
        launch(&mut k, cfg(shapes::elementwise(x.len())?))
    }

    /// `y` (`cols × rows`) = `x` (`rows × cols`) transposed. Spec:
    /// `reference::nn::transpose`.
    pub fn transpose_f32(
        &self,
        x: &CudaSlice<f32>,
        y: &mut CudaSlice<f32>,
        rows: usize,
        cols: usize,
    ) -> Result<(), GpuError> {
        need("transpose x", x.len(), &[rows, cols])?;
        need("transpose y", y.len(), &[cols, rows])?;
        let f = self.kernel("tensor.cu", "transpose_f32")?;
        let (r, c) = (to_i32("rows", rows)?, to_i32("cols", cols)?);
        let mut k = KArgs::new(self, &f);
        k.arg(x).arg(&mut *y).arg(&r).arg(&c);
        launch(&mut k, cfg(shapes::transpose(rows, cols)?))
    }

    /// Gathers an attention operand from f32 `x` into dense f16
    /// `batch × heads × n × dim`: element `(b, h, t, d)` is
    /// `x[offset + b·strides.batch + h·strides.head + t·strides.token + d]`.
    /// Spec: `reference::nn::gather_heads_f16`.
    #[allow(clippy::too_many_arguments)]
    pub fn gather_heads_f16(
        &self,
        x: &CudaSlice<f32>,
        y: &mut CudaSlice<u16>,
        offset: usize,
        strides: Strides,
        batch: usize,
        heads: usize,
        n: usize,
        dim: usize,
    ) -> Result<(), GpuError> {
        need("gather y", y.len(), &[batch, heads, n, dim])?;
        if !y.is_empty() {
            // the last element read must lie inside x
            let last = [
                (batch - 1, strides.batch),
                (heads - 1, strides.head),
                (n - 1, strides.token),
                (dim - 1, 1),
            ]
            .iter()
            .try_fold(offset, |acc, &(i, s)| i.checked_mul(s)?.checked_add(acc))
            .ok_or_else(|| NnError::BadShape("gather strides overflow".into()))?;
            if last >= x.len() {
                return Err(NnError::BadLength {
                    what: "gather x",
                    got: x.len(),
                    expected: last + 1,
                }
                .into());
            }
        }
        let f = self.kernel("tensor.cu", "gather_heads_f16")?;
        let l = |v: usize| v as i64;
        let (o, sb, sh, st) = (
            l(offset),
            l(strides.batch),
            l(strides.head),
            l(strides.token),
        );
        let d = [
            to_i32("batch", batch)?,
            to_i32("heads", heads)?,
            to_i32("n", n)?,
            to_i32("dim", dim)?,
        ];
        let total = y.len();
        let mut k = KArgs::new(self, &f);
        k.arg(x).arg(&mut *y).arg(&o).arg(&sb).arg(&sh).arg(&st);
        for v in &d {
            k.arg(v);
        }
        launch(&mut k, cfg(shapes::elementwise(total)?))
    }

    /// `y = f32(x)` for f16 `x`. Spec: `reference::from_f16_bits`.
    pub fn f16_to_f32(&self, x: &CudaSlice<u16>, y: &mut CudaSlice<f32>) -> Result<(), GpuError> {
        need("f16_to_f32 y", y.len(), &[x.len()])?;
        let f = self.kernel("tensor.cu", "f16_to_f32")?;
        let n = x.len() as i64;
        let mut k = KArgs::new(self, &f);
        k.arg(x).arg(&mut *y).arg(&n);
        launch(&mut k, cfg(shapes::elementwise(x.len())?))
    }

    /// 2×2 stride-2 transposed convolution of one `cin × h × w` image
    /// (weight `cin × cout × 2 × 2`). Spec: `reference::nn::conv_transpose2x2`.
    #[allow(clippy::too_many_arguments)]
    pub fn conv_transpose2x2_f32(
        &self,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        bias: &CudaSlice<f32>,
        y: &mut CudaSlice<f32>,
        cin: usize,
        cout: usize,
        h: usize,
        wd: usize,
    ) -> Result<(), GpuError> {
        need("conv_transpose x", x.len(), &[cin, h, wd])?;
        need("conv_transpose weight", w.len(), &[cin, cout, 2, 2])?;
        need("conv_transpose bias", bias.len(), &[cout])?;
        need("conv_transpose y", y.len(), &[cout, 2 * h, 2 * wd])?;
        let f = self.kernel("tensor.cu", "conv_transpose2x2_f32")?;
        let d = [
            to_i32("cin", cin)?,
            to_i32("cout", cout)?,
            to_i32("h", h)?,
            to_i32("w", wd)?,
        ];
        let total = y.len();
        let mut k = KArgs::new(self, &f);
        k.arg(x).arg(w).arg(bias).arg(&mut *y);
        for v in &d {
            k.arg(v);
        }
        launch(&mut k, cfg(shapes::elementwise(total)?))
    }

    /// Adds the box prior of `bx` to each of `masks` `side × side` logit maps.
    /// Spec: `reference::nn::box_prior_add`.
    #[allow(clippy::too_many_arguments)]
    pub fn box_prior_add_f32(
        &self,
        x: &CudaSlice<f32>,
        xs: &CudaSlice<f32>,
        ys: &CudaSlice<f32>,
        y: &mut CudaSlice<f32>,
        bx: BoxPriorParams,
        masks: usize,
        side: usize,
    ) -> Result<(), GpuError> {
        need("box prior x", x.len(), &[masks, side, side])?;
        need("box prior y", y.len(), &[masks, side, side])?;
        need("box prior xs", xs.len(), &[side])?;
        need("box prior ys", ys.len(), &[side])?;
        let f = self.kernel("tensor.cu", "box_prior_add_f32")?;
        let (m, sd) = (to_i32("masks", masks)?, to_i32("side", side)?);
        let total = y.len();
        let mut k = KArgs::new(self, &f);
        k.arg(x).arg(xs).arg(ys).arg(&mut *y);
        for v in [&bx.cx, &bx.cy, &bx.rx, &bx.ry, &bx.height, &bx.has_box] {
            k.arg(v);
        }
        k.arg(&m).arg(&sd);
        launch(&mut k, cfg(shapes::elementwise(total)?))
    }

    /// Copies `src` into `dst` starting at element `offset` (device to
    /// device; the plan's slice and concat).
    pub fn copy_into(
        &self,
        src: &CudaView<'_, f32>,
        dst: &mut CudaSlice<f32>,
        offset: usize,
    ) -> Result<(), GpuError> {
        let end = offset
            .checked_add(src.len())
            .filter(|&e| e <= dst.len())
            .ok_or(NnError::BadLength {
                what: "copy destination",
                got: dst.len(),
                expected: offset.saturating_add(src.len()),
            })?;
        let mut d = dst.slice_mut(offset..end);
        self.stream()
            .memcpy_dtod(src, &mut d)
            .map_err(GpuError::driver("cuMemcpyDtoD"))
    }

    /// Convolution with folded BatchNorm and activation: 1×1 (stride 1, no
    /// padding), 3×3 (padding 1, stride 1 or 2) or depthwise 3×3.
    /// Spec: `reference::nn::conv2d_bn_act`.
    #[allow(clippy::too_many_arguments)]
    pub fn conv2d_bn_act(
        &self,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        scale: &CudaSlice<f32>,
        shift: &CudaSlice<f32>,
        y: &mut CudaSlice<f32>,
        s: ConvShape,
        act: Act,
    ) -> Result<(), GpuError> {
        let (ho, wo) = s.out_hw();
        need("conv x", x.len(), &[s.n, s.cin, s.h, s.w])?;
        need("conv y", y.len(), &[s.n, s.cout, ho, wo])?;
        need("conv scale", scale.len(), &[s.cout])?;
        need("conv shift", shift.len(), &[s.cout])?;
        let actc = act.code();
        match (s.k, s.stride, s.pad, s.depthwise) {
            (1, 1, 0, false) => {
                need("conv weight", w.len(), &[s.cout, s.cin])?;
                let f = self.kernel("gemm.cu", "conv1x1_bn_act_f32")?;
                let (ci, co, hw) = (
                    to_i32("cin", s.cin)?,
                    to_i32("cout", s.cout)?,
                    to_i32("hw", s.h * s.w)?,
                );
                let mut a = KArgs::new(self, &f);
                a.arg(x)
                    .arg(w)
                    .arg(scale)
                    .arg(shift)
                    .arg(y)
                    .arg(&ci)
                    .arg(&co)
                    .arg(&hw)
                    .arg(&actc);
                launch(&mut a, cfg(shapes::conv1x1(s.n, s.cout, s.h * s.w)?))
            }
            (3, 1 | 2, 1, false) => {
                need("conv weight", w.len(), &[s.cout, s.cin, 9])?;
                let f = self.kernel("conv.cu", "conv3x3_bn_act_f32")?;
                let d = [
                    to_i32("cin", s.cin)?,
                    to_i32("h", s.h)?,
                    to_i32("w", s.w)?,
                    to_i32("cout", s.cout)?,
                    to_i32("stride", s.stride)?,
                    to_i32("ho", ho)?,
                    to_i32("wo", wo)?,
                    actc,
                ];
                let mut a = KArgs::new(self, &f);
                a.arg(x).arg(w).arg(scale).arg(shift).arg(y);
                for v in &d {
                    a.arg(v);
                }
                let shape = shapes::conv3x3(s.n, s.cout, ho, wo)?;
                launch(&mut a, cfg(shape))
            }
            (3, 1 | 2, 1, true) if s.cin == s.cout => {
                need("conv weight", w.len(), &[s.cout, 9])?;
                let f = self.kernel("conv.cu", "dwconv3x3_bn_act_f32")?;
                let d = [
                    to_i32("c", s.cin)?,
                    to_i32("h", s.h)?,
                    to_i32("w", s.w)?,
                    to_i32("stride", s.stride)?,
                    to_i32("ho", ho)?,
                    to_i32("wo", wo)?,
                    actc,
                ];
                let mut a = KArgs::new(self, &f);
                a.arg(x).arg(w).arg(scale).arg(shift).arg(y);
                for v in &d {
                    a.arg(v);
                }
                let shape = shapes::dwconv3x3(s.n, s.cout, ho, wo)?;
                launch(&mut a, cfg(shape))
            }
            _ => Err(NnError::BadShape(format!("no GPU kernel for {s:?}")).into()),
        }
    }

    /// `c = act(a·wᵀ + bias)`, f32. Spec: `reference::nn::gemm_bias_act`.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_bias_act_f32(
        &self,
        a: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        bias: Option<&CudaSlice<f32>>,
        c: &mut CudaSlice<f32>,
        m: usize,
        n: usize,
        k: usize,
        act: Act,
    ) -> Result<(), GpuError> {
        self.gemm_generic("gemm_bias_act_f32", a, w, bias, c, m, n, k, act)
    }

    /// `c = act(a·wᵀ + bias)`, f16 in/out, f32 accumulation.
    /// Spec: `reference::nn::gemm_bias_act_f16`.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_bias_act_f16(
        &self,
        a: &CudaSlice<u16>,
        w: &CudaSlice<u16>,
        bias: Option<&CudaSlice<f32>>,
        c: &mut CudaSlice<u16>,
        m: usize,
        n: usize,
        k: usize,
        act: Act,
    ) -> Result<(), GpuError> {
        self.gemm_generic("gemm_bias_act_f16", a, w, bias, c, m, n, k, act)
    }

    #[allow(clippy::too_many_arguments)]
    fn gemm_generic<T: DeviceRepr>(
        &self,
        kernel: &'static str,
        a: &CudaSlice<T>,
        w: &CudaSlice<T>,
        bias: Option<&CudaSlice<f32>>,
        c: &mut CudaSlice<T>,
        m: usize,
        n: usize,
        k: usize,
        act: Act,
    ) -> Result<(), GpuError> {
        need("gemm a", a.len(), &[m, k])?;
        need("gemm w", w.len(), &[n, k])?;
        need("gemm c", c.len(), &[m, n])?;
        if let Some(b) = bias {
            need("gemm bias", b.len(), &[n])?;
        }
        let f = self.kernel("gemm.cu", kernel)?;
        let (mi, ni, ki, ac) = (
            to_i32("m", m)?,
            to_i32("n", n)?,
            to_i32("k", k)?,
            act.code(),
        );
        let mut l = KArgs::new(self, &f);
        l.arg(a).arg(w);
        opt(&mut l, bias);
        l.arg(c).arg(&mi).arg(&ni).arg(&ki).arg(&ac);
        launch(&mut l, cfg(shapes::gemm(m, n)?))
    }

    /// int8 GEMM with per-channel dequantization (dp4a); `k` a multiple of 4.
    /// Bit-exact spec: `reference::nn::gemm_i8_dequant`.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_i8_dequant(
        &self,
        a: &CudaSlice<i8>,
        w: &CudaSlice<i8>,
        scale: &CudaSlice<f32>,
        bias: Option<&CudaSlice<f32>>,
        c: &mut CudaSlice<f32>,
        m: usize,
        n: usize,
        k: usize,
    ) -> Result<(), GpuError> {
        if !k.is_multiple_of(4) {
            return Err(NnError::BadShape(format!("int8 gemm k = {k} not a multiple of 4")).into());
        }
        need("gemm_i8 a", a.len(), &[m, k])?;
        need("gemm_i8 w", w.len(), &[n, k])?;
        need("gemm_i8 c", c.len(), &[m, n])?;
        need("gemm_i8 scale", scale.len(), &[n])?;
        if let Some(b) = bias {
            need("gemm_i8 bias", b.len(), &[n])?;
        }
        let f = self.kernel("gemm_i8.cu", "gemm_i8_dequant_f32")?;
        let (mi, ni, ki) = (to_i32("m", m)?, to_i32("n", n)?, to_i32("k", k)?);
        let mut l = KArgs::new(self, &f);
        l.arg(a).arg(w).arg(scale);
        opt(&mut l, bias);
        l.arg(c).arg(&mi).arg(&ni).arg(&ki);
        launch(&mut l, cfg(shapes::gemm(m, n)?))
    }

    /// Masked average pooling of `c × hw` features. Spec: `reference::fewshot::masked_avg_pool`.
    #[allow(clippy::too_many_arguments)]
    pub fn masked_avg_pool(
        &self,
        feat: &CudaSlice<f32>,
        mask: &CudaSlice<f32>,
        proto: &mut CudaSlice<f32>,
        c: usize,
        hw: usize,
        eps: f32,
    ) -> Result<(), GpuError> {
        need("masked_avg_pool feat", feat.len(), &[c, hw])?;
        need("masked_avg_pool mask", mask.len(), &[hw])?;
        need("masked_avg_pool proto", proto.len(), &[c])?;
        let f = self.kernel("fewshot.cu", "masked_avg_pool_f32")?;
        let (ci, hwi) = (to_i32("c", c)?, to_i32("hw", hw)?);
        let mut a = KArgs::new(self, &f);
        a.arg(feat)
            .arg(mask)
            .arg(proto)
            .arg(&ci)
            .arg(&hwi)
            .arg(&eps);
        launch(&mut a, cfg(shapes::masked_avg_pool(c)?))
    }

    /// Cosine similarity of `c × hw` features to `np × c` prototypes, output
    /// `np × hw` (launched in chunks of 8 prototypes). Spec: `reference::fewshot::cosine_sim`.
    #[allow(clippy::too_many_arguments)]
    pub fn cosine_sim(
        &self,
        feat: &CudaSlice<f32>,
        protos: &CudaSlice<f32>,
        out: &mut CudaSlice<f32>,
        c: usize,
        hw: usize,
        np: usize,
        eps: f32,
    ) -> Result<(), GpuError> {
        need("cosine_sim feat", feat.len(), &[c, hw])?;
        need("cosine_sim protos", protos.len(), &[np, c])?;
        need("cosine_sim out", out.len(), &[np, hw])?;
        let shape = shapes::cosine_sim(c, hw)?;
        let f = self.kernel("fewshot.cu", "cosine_sim_f32")?;
        let (ci, hwi) = (to_i32("c", c)?, to_i32("hw", hw)?);
        for j0 in (0..np).step_by(8) {
            let chunk = to_i32("prototypes", (np - j0).min(8))?;
            let pv = protos.slice(j0 * c..);
            let mut ov = out.slice_mut(j0 * hw..);
            let mut a = KArgs::new(self, &f);
            a.arg(feat)
                .arg(&pv)
                .arg(&mut ov)
                .arg(&ci)
                .arg(&hwi)
                .arg(&chunk)
                .arg(&eps);
            launch(&mut a, cfg(shape))?;
        }
        Ok(())
    }
}
