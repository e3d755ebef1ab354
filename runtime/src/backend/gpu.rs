//! The CUDA backend (feature `cuda`): a bundle's [kernel plan](super::kplan)
//! run on the kernels of `edgeseg_kernels::gpu`.
//!
//! **Unverified on hardware.** This code compiles and is clippy-clean, but no
//! GPU has been available to the project so far: it has never run. What *is*
//! verified is the plan it executes (`kplan::CpuExecutor` runs the same
//! programs with the kernels' CPU references and is tested against tract) and
//! the kernels themselves (CPU emulation tests, NVRTC/ptxas compile checks).
//!
//! * Opening checks the CUDA libraries before calling cudarc (which panics
//!   without them), creates the context, compiles every kernel source
//!   (`Gpu::warm_up`, cached on disk), builds the plan and uploads every
//!   weight once. Each failure is a [`GpuUnavailable`] naming its cause, so
//!   `backend::open_bundle` can fall back to tract with one log line.
//! * Ops with a kernel run on the GPU: `Conv` (1×1, 3×3 stride 1/2, depthwise
//!   3×3), `Gemm` and `MatMulBt` (the GEMM kernel), `LayerNorm`, `LayerNorm2d`,
//!   `Gelu`, and `Attention` (head
//!   dimension 16/32/64; q/k/v are gathered and rounded to f16 on the host,
//!   because there is no cast/gather kernel yet).
//! * Ops without a kernel run on the host: the operands are downloaded, the
//!   CPU reference runs ([`kplan::run_op_host`]), the result is uploaded.
//!   Today that is `Add`, `AddWeight`, `Transpose`, `WindowPartition` /
//!   `WindowReverse` (f32; the kernels are f16-only), `ConvTranspose2x2`,
//!   `Slice`, `Concat`, `PromptTokens`, and convolutions of other
//!   shapes. Correct but slow: these round trips, not the kernels, would
//!   dominate a frame until those kernels exist.
//! * TODO: CUDA graphs for the per-frame launch sequence (the programs are
//!   static per point count, so one graph per program can be captured once
//!   all ops are kernels); on Jetson (integrated memory) the weights could be
//!   mapped instead of copied (`DeviceInfo::integrated`).

use std::sync::Arc;

use edgeseg_kernels::gpu::cudarc::driver::CudaSlice;
use edgeseg_kernels::gpu::{nvrtc, Gpu, GpuError};
use edgeseg_kernels::reference::nn::{Act, AttnShape, Strides};
use edgeseg_kernels::reference::{from_f16_bits, to_f16_bits};

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
        })
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

    fn gather_f16(
        &self,
        x: &CudaSlice<f32>,
        v: View,
        s: AttnShape,
        n: usize,
    ) -> Result<CudaSlice<u16>, PlanError> {
        let h = self.gpu.download(x).map_err(device)?;
        let mut out = Vec::with_capacity(s.batch * s.heads * n * s.dim);
        for b in 0..s.batch {
            for hd in 0..s.heads {
                for t in 0..n {
                    let at =
                        v.offset + b * v.strides.batch + hd * v.strides.head + t * v.strides.token;
                    let row = h.get(at..at + s.dim).ok_or_else(|| {
                        PlanError::Input(format!(
                            "attention operand too short ({} < {})",
                            h.len(),
                            at + s.dim
                        ))
                    })?;
                    out.extend_from_slice(row);
                }
            }
        }
        self.gpu.upload(&to_f16_bits(&out)).map_err(device)
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
            } if matches!(shape.dim, 16 | 32 | 64) => {
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
                let of = from_f16_bits(&g.download(&o).map_err(device)?);
                g.upload(&of).map_err(device)
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
            let y = self
                .step(&st.op, &bufs, program.buf_len[out])
                .map_err(|e| {
                    PlanError::Device(format!("step {i} ({}, {}): {e}", st.op.kind(), st.label))
                })?;
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
