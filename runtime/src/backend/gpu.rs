//! The CUDA backend (features `cuda` / `cuda-13000`): a bundle's
//! [kernel plan](super::kplan) run on the kernels of `edgeseg_kernels::gpu`.
//!
//! **Verified once, on an H100** (2026-11-28, `docs/perf/cuda.md`): edge-s on
//! this backend matched tract on every fixture frame (mask IoU ≥ 0.9996), and
//! every kernel passed its parity test and `compute-sanitizer`. Not yet run on
//! a Jetson. The attention head dimensions 8/12/24/48 were added after that
//! run and are checked by the CPU emulation and the compile check only.
//!
//! * Opening checks the CUDA libraries before calling cudarc (which panics
//!   without them), creates the context, compiles every kernel source
//!   (`Gpu::warm_up`, cached on disk), builds the plan and uploads every
//!   weight once. Each failure is a [`GpuUnavailable`] naming its cause, so
//!   `backend::open_bundle` can fall back to tract with one log line.
//! * Every op has a kernel: `Conv` (1×1, 3×3 stride 1/2, depthwise 3×3),
//!   `Gemm` and `MatMulBt` (the GEMM kernel), `LayerNorm`, `LayerNorm2d`,
//!   `Gelu`, `Attention` (operands gathered to f16 on the device; head
//!   dimensions `ATTENTION_HEAD_DIMS`), `Add`, `AddWeight`, `Transpose`,
//!   `WindowPartition` / `WindowReverse`, `ConvTranspose2x2`, `BoxPrior`
//!   (the box comes from the prompt points, read back first), and `Slice` /
//!   `Concat` as device-to-device copies.
//! * On the host, between a download and an upload: `PromptTokens` (a few
//!   dozen values), and convolutions or attention of shapes without a kernel.
//! * TODO: CUDA graphs for the per-frame launch sequence (the programs are
//!   static per point count); f16 activations; on Jetson (integrated memory)
//!   the weights could be mapped instead of copied (`DeviceInfo::integrated`).

use std::sync::Arc;

use edgeseg_kernels::gpu::cudarc::driver::CudaSlice;
use edgeseg_kernels::gpu::{nvrtc, Gpu, GpuError};
use edgeseg_kernels::reference::nn::{
    Act, AttnShape, BoxPriorParams, Strides, ATTENTION_HEAD_DIMS,
};

use super::kplan::{
    self, check_inputs, run_op_host, BufId, Executor, Op, PlanError, PlanSegmenter, Program, View,
    Weights,
};
use super::{BackendOptions, GpuUnavailable};
use crate::bundle::Bundle;

/// Sorts a kernel-layer error into the reason `open_bundle` logs.
pub fn classify(e: GpuError) -> GpuUnavailable {
    let m = e.to_string();
    match e {
        GpuError::DriverMissing { .. }
        | GpuError::NvrtcMissing { .. }
        | GpuError::LoaderPanic { .. } => GpuUnavailable::NoCudaLibrary(m),
        GpuError::NoDevice { .. } => GpuUnavailable::NoDevice(m),
        GpuError::Compile { .. } | GpuError::ArchUnsupported { .. } => {
            GpuUnavailable::KernelCompile(m)
        }
        _ => GpuUnavailable::Failed(m),
    }
}

/// Whether the CUDA driver library and NVRTC can be loaded (no cudarc call,
/// so no panic). The device itself is checked when the backend opens.
pub fn probe(_ordinal: usize) -> Result<(), GpuUnavailable> {
    if !edgeseg_kernels::gpu::driver_present() {
        return Err(classify(GpuError::DriverMissing {
            searched: edgeseg_kernels::gpu::driver_lib_candidates(),
        }));
    }
    nvrtc::require_nvrtc().map_err(classify)
}

fn device(e: GpuError) -> PlanError {
    PlanError::Device(e.to_string())
}

/// Runs kernel programs on one GPU; the weights are uploaded once, in
/// [`CudaExecutor::new`].
pub struct CudaExecutor {
    gpu: Arc<Gpu>,
    weights: Vec<CudaSlice<f32>>,
    host_weights: Arc<Weights>,
    name: String,
    /// The profile, when profiling is on.
    profile: Option<StepProfile>,
}

/// Step times recorded while profiling ([`CudaExecutor::set_profiling`]).
#[derive(Debug, Default)]
struct StepProfile {
    /// Per op kind: steps run, seconds.
    by_kind: std::collections::BTreeMap<&'static str, (usize, f64)>,
    /// Every step: label, kind, seconds (at most [`StepProfile::MAX_STEPS`]).
    steps: Vec<(String, &'static str, f64)>,
}

impl StepProfile {
    /// Steps kept individually (a few frames' worth).
    const MAX_STEPS: usize = 4096;
}

impl std::fmt::Debug for CudaExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaExecutor")
            .field("name", &self.name)
            .field("weights", &self.weights.len())
            .finish()
    }
}

impl CudaExecutor {
    /// Uploads every weight to `gpu` once. The host copy is kept for the ops
    /// that still run on the host.
    pub fn new(gpu: Arc<Gpu>, weights: Arc<Weights>) -> Result<Self, GpuError> {
        let dev = weights
            .tensors
            .iter()
            .map(|w| gpu.upload(&w.data))
            .collect::<Result<Vec<_>, _>>()?;
        let name = format!("cuda/{}/{}", gpu.info().name, gpu.info().arch.sm());
        Ok(Self {
            gpu,
            weights: dev,
            host_weights: weights,
            name,
            profile: None,
        })
    }

    /// Turns the per-op-kind profile on (clearing it) or off. While it is on,
    /// every step is followed by a device synchronisation, so the runs are
    /// slower than unprofiled ones: use it to see where the time goes, and time
    /// with it off.
    pub fn set_profiling(&mut self, on: bool) {
        self.profile = on.then(Default::default);
    }

    /// The profile since profiling was turned on: per op kind (`Op::kind`;
    /// the module docs say which kinds run on the host), steps run and
    /// milliseconds including the host round trips, slowest first.
    pub fn profile(&self) -> Vec<(&'static str, usize, f64)> {
        let mut v: Vec<_> = self
            .profile
            .iter()
            .flat_map(|p| &p.by_kind)
            .map(|(&k, &(n, s))| (k, n, s * 1e3))
            .collect();
        v.sort_by(|a, b| b.2.total_cmp(&a.2));
        v
    }

    /// The `n` slowest single steps since profiling was turned on: model
    /// label, op kind, milliseconds.
    pub fn slowest_steps(&self, n: usize) -> Vec<(String, &'static str, f64)> {
        let mut v: Vec<_> = self
            .profile
            .iter()
            .flat_map(|p| &p.steps)
            .map(|(l, k, s)| (l.clone(), *k, s * 1e3))
            .collect();
        v.sort_by(|a, b| b.2.total_cmp(&a.2));
        v.truncate(n);
        v
    }

    fn get(bufs: &[Option<CudaSlice<f32>>], b: BufId) -> Result<&CudaSlice<f32>, PlanError> {
        bufs.get(b)
            .and_then(Option::as_ref)
            .ok_or_else(|| PlanError::Input(format!("buffer {b} read before it was written")))
    }

    /// Downloads the op's inputs, runs the CPU reference, uploads the result.
    fn host_op(
        &self,
        op: &Op,
        bufs: &[Option<CudaSlice<f32>>],
    ) -> Result<CudaSlice<f32>, PlanError> {
        let mut host = vec![Vec::new(); bufs.len()];
        for b in op.inputs() {
            host[b] = self.gpu.download(Self::get(bufs, b)?).map_err(device)?;
        }
        let y = run_op_host(op, &host, &self.host_weights)
            .map_err(|e| PlanError::Device(e.to_string()))?;
        self.gpu.upload(&y).map_err(device)
    }

    /// Gathers an attention operand (f32, heads side by side) into dense
    /// f16 `batch × heads × n × dim` on the device.
    fn gather_f16(
        &self,
        x: &CudaSlice<f32>,
        v: View,
        s: AttnShape,
        n: usize,
    ) -> Result<CudaSlice<u16>, PlanError> {
        let mut out = self
            .gpu
            .zeros::<u16>(s.batch * s.heads * n * s.dim)
            .map_err(device)?;
        self.gpu
            .gather_heads_f16(x, &mut out, v.offset, v.strides, s.batch, s.heads, n, s.dim)
            .map_err(device)?;
        Ok(out)
    }

    fn step(
        &self,
        op: &Op,
        bufs: &[Option<CudaSlice<f32>>],
        len: usize,
    ) -> Result<CudaSlice<f32>, PlanError> {
        let g = &self.gpu;
        let w = |id: usize| &self.weights[id];
        let out = || g.zeros::<f32>(len).map_err(device);
        match op {
            Op::Conv {
                x,
                w: cw,
                scale,
                shift,
                shape,
                act,
                ..
            } if matches!(
                (shape.k, shape.stride, shape.pad, shape.depthwise),
                (1, 1, 0, false) | (3, 1 | 2, 1, _)
            ) =>
            {
                let mut y = out()?;
                g.conv2d_bn_act(
                    Self::get(bufs, *x)?,
                    w(*cw),
                    w(*scale),
                    w(*shift),
                    &mut y,
                    *shape,
                    *act,
                )
                .map_err(device)?;
                Ok(y)
            }
            Op::Gemm {
                a,
                w: gw,
                bias,
                m,
                n,
                k,
                act,
                ..
            } => {
                let mut y = out()?;
                g.gemm_bias_act_f32(
                    Self::get(bufs, *a)?,
                    w(*gw),
                    bias.map(w),
                    &mut y,
                    *m,
                    *n,
                    *k,
                    *act,
                )
                .map_err(device)?;
                Ok(y)
            }
            Op::MatMulBt { a, b, m, n, k, .. } => {
                let mut y = out()?;
                g.gemm_bias_act_f32(
                    Self::get(bufs, *a)?,
                    Self::get(bufs, *b)?,
                    None,
                    &mut y,
                    *m,
                    *n,
                    *k,
                    Act::None,
                )
                .map_err(device)?;
                Ok(y)
            }
            Op::LayerNorm {
                x,
                gamma,
                beta,
                rows,
                c,
                eps,
                ..
            } => {
                let mut y = out()?;
                g.layer_norm(
                    Self::get(bufs, *x)?,
                    w(*gamma),
                    w(*beta),
                    &mut y,
                    *rows,
                    *c,
                    *eps,
                )
                .map_err(device)?;
                Ok(y)
            }
            Op::LayerNorm2d {
                x,
                gamma,
                beta,
                c,
                hw,
                eps,
                ..
            } => {
                let mut y = out()?;
                g.layer_norm2d(
                    Self::get(bufs, *x)?,
                    w(*gamma),
                    w(*beta),
                    &mut y,
                    1,
                    *c,
                    *hw,
                    *eps,
                )
                .map_err(device)?;
                Ok(y)
            }
            Op::Gelu { x, .. } => {
                let mut y = out()?;
                g.gelu_f32(Self::get(bufs, *x)?, &mut y).map_err(device)?;
                Ok(y)
            }
            Op::Attention {
                q,
                qv,
                k,
                kv,
                v,
                vv,
                shape,
                bias,
                ..
            } if ATTENTION_HEAD_DIMS.contains(&shape.dim) => {
                let s = *shape;
                let qh = self.gather_f16(Self::get(bufs, *q)?, *qv, s, s.nq)?;
                let kh = self.gather_f16(Self::get(bufs, *k)?, *kv, s, s.nk)?;
                let vh = self.gather_f16(Self::get(bufs, *v)?, *vv, s, s.nk)?;
                let mut o = g.zeros::<u16>(len).map_err(device)?;
                g.attention_f16(
                    s,
                    &qh,
                    Strides::bhnd(s.heads, s.nq, s.dim),
                    &kh,
                    Strides::bhnd(s.heads, s.nk, s.dim),
                    &vh,
                    Strides::bhnd(s.heads, s.nk, s.dim),
                    bias.map(w),
                    1.0,
                    &mut o,
                    Strides::bnhd(s.heads, s.nq, s.dim),
                )
                .map_err(device)?;
                let mut y = out()?;
                g.f16_to_f32(&o, &mut y).map_err(device)?;
                Ok(y)
            }
            Op::Add { a, b, act, .. } => {
                let mut y = out()?;
                g.add_act_f32(Self::get(bufs, *a)?, Self::get(bufs, *b)?, &mut y, *act)
                    .map_err(device)?;
                Ok(y)
            }
            Op::AddWeight { x, w: aw, .. } => {
                let mut y = out()?;
                g.add_broadcast_f32(Self::get(bufs, *x)?, w(*aw), &mut y)
                    .map_err(device)?;
                Ok(y)
            }
            Op::Transpose { x, rows, cols, .. } => {
                let mut y = out()?;
                g.transpose_f32(Self::get(bufs, *x)?, &mut y, *rows, *cols)
                    .map_err(device)?;
                Ok(y)
            }
            Op::WindowPartition {
                x, h, w: wd, c, ws, ..
            } => {
                let mut y = out()?;
                g.window_partition_f32(Self::get(bufs, *x)?, &mut y, 1, *h, *wd, *c, *ws)
                    .map_err(device)?;
                Ok(y)
            }
            Op::WindowReverse {
                x, h, w: wd, c, ws, ..
            } => {
                let mut y = out()?;
                g.window_reverse_f32(Self::get(bufs, *x)?, &mut y, 1, *h, *wd, *c, *ws)
                    .map_err(device)?;
                Ok(y)
            }
            Op::ConvTranspose2x2 {
                x,
                w: cw,
                bias,
                cin,
                cout,
                h,
                wd,
                ..
            } => {
                let mut y = out()?;
                g.conv_transpose2x2_f32(
                    Self::get(bufs, *x)?,
                    w(*cw),
                    w(*bias),
                    &mut y,
                    *cin,
                    *cout,
                    *h,
                    *wd,
                )
                .map_err(device)?;
                Ok(y)
            }
            Op::Slice { x, offset, len, .. } => {
                let x = Self::get(bufs, *x)?;
                let end = offset
                    .checked_add(*len)
                    .filter(|&e| e <= x.len())
                    .ok_or_else(|| {
                        PlanError::Input(format!(
                            "slice {offset}..+{len} of a {}-value buffer",
                            x.len()
                        ))
                    })?;
                let mut y = out()?;
                g.copy_into(&x.slice(*offset..end), &mut y, 0)
                    .map_err(device)?;
                Ok(y)
            }
            Op::Concat { xs, .. } => {
                let mut y = out()?;
                let mut at = 0;
                for &b in xs {
                    let x = Self::get(bufs, b)?;
                    g.copy_into(&x.slice(..), &mut y, at).map_err(device)?;
                    at += x.len();
                }
                if at != len {
                    return Err(PlanError::Input(format!(
                        "concat of {at} values into {len}"
                    )));
                }
                Ok(y)
            }
            Op::BoxPrior {
                x,
                coords,
                labels,
                xs,
                ys,
                height,
                masks,
                side,
                ..
            } => {
                // the box from the prompt points (a few values), then the prior on the device
                let c = g.download(Self::get(bufs, *coords)?).map_err(device)?;
                let l = g.download(Self::get(bufs, *labels)?).map_err(device)?;
                let params = BoxPriorParams::from_points(&c, &l, *height)
                    .map_err(|e| PlanError::Input(e.to_string()))?;
                let mut y = out()?;
                g.box_prior_add_f32(
                    Self::get(bufs, *x)?,
                    w(*xs),
                    w(*ys),
                    &mut y,
                    params,
                    *masks,
                    *side,
                )
                .map_err(device)?;
                Ok(y)
            }
            _ => self.host_op(op, bufs),
        }
    }
}

impl Executor for CudaExecutor {
    fn name(&self) -> &str {
        &self.name
    }

    fn run(&mut self, program: &Program, inputs: &[&[f32]]) -> Result<Vec<Vec<f32>>, PlanError> {
        check_inputs(program, inputs)?;
        let mut bufs: Vec<Option<CudaSlice<f32>>> =
            (0..program.buf_len.len()).map(|_| None).collect();
        for (&b, x) in program.inputs.iter().zip(inputs) {
            bufs[b] = Some(self.gpu.upload(x).map_err(device)?);
        }
        for (i, (st, frees)) in program.steps.iter().zip(&program.frees).enumerate() {
            let out = st.op.output();
            let started = self.profile.is_some().then(std::time::Instant::now);
            let y = self
                .step(&st.op, &bufs, program.buf_len[out])
                .map_err(|e| {
                    PlanError::Device(format!("step {i} ({}, {}): {e}", st.op.kind(), st.label))
                })?;
            if let Some(t0) = started {
                self.gpu.synchronize().map_err(device)?;
                let secs = t0.elapsed().as_secs_f64();
                if let Some(p) = self.profile.as_mut() {
                    let e = p.by_kind.entry(st.op.kind()).or_insert((0, 0.0));
                    e.0 += 1;
                    e.1 += secs;
                    if p.steps.len() < StepProfile::MAX_STEPS {
                        p.steps.push((st.label.clone(), st.op.kind(), secs));
                    }
                }
            }
            bufs[out] = Some(y);
            for &b in frees {
                bufs[b] = None;
            }
        }
        let mut outs = Vec::with_capacity(program.outputs.len());
        for &b in &program.outputs {
            outs.push(self.gpu.download(Self::get(&bufs, b)?).map_err(device)?);
        }
        Ok(outs)
    }
}

/// Opens the bundle at `path` on GPU `options.gpu_ordinal`: libraries,
/// device, kernel compilation, bundle, plan, weight upload, in that order.
pub fn open(
    path: &std::path::Path,
    options: &BackendOptions,
) -> Result<PlanSegmenter<CudaExecutor>, GpuUnavailable> {
    probe(options.gpu_ordinal)?;
    let gpu = Gpu::new(options.gpu_ordinal).map_err(classify)?;
    gpu.warm_up().map_err(classify)?;
    let bundle = Bundle::open(path, &options.verify)
        .map_err(|e| GpuUnavailable::Bundle(format!("{}: {e}", path.display())))?;
    let size =
        kplan::input_size(&bundle).map_err(|e| GpuUnavailable::UnsupportedModel(e.to_string()))?;
    let plan =
        kplan::build(&bundle, size).map_err(|e| GpuUnavailable::UnsupportedModel(e.to_string()))?;
    let exec = CudaExecutor::new(Arc::new(gpu), Arc::clone(&plan.weights)).map_err(classify)?;
    PlanSegmenter::new(&bundle, plan, exec).map_err(|e| GpuUnavailable::Failed(e.to_string()))
}
