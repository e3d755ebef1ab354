//! The kernel execution plan of a LiteMedSAM-structured bundle (the teacher and
//! the students cut from it): the encoder and the decoder as sequences of
//! kernel calls ([`Op`]) over numbered activation buffers, with the shapes of
//! every call and the bundle weight tensors that feed it ([`Weights`]).
//!
//! * [`build`] reads the bundle's graphs with their weights re-attached from
//!   the tensor table (`onnx_weights`), finds every weight by the exporter's
//!   naming scheme (`edgeseg_models::export::litemedsam`: scope + hint + `_N`)
//!   and takes strides, groups and epsilons from the graph's nodes. Anything it
//!   cannot match is an [`PlanError::Unsupported`]: the bundle is then run by
//!   tract instead.
//! * An [`Executor`] runs a [`Program`]. [`CpuExecutor`] runs every op with the
//!   kernels' CPU references (`edgeseg_kernels::reference`): it is slow (f64
//!   accumulation, naive loops) and exists to prove that the plan computes the
//!   model (tests compare it with the tract backend). The CUDA executor
//!   (`backend::gpu`, features `cuda` / `cuda-13000`) runs the same programs
//!   on the kernels; it matched tract on edge-s on an H100 (`docs/perf/cuda.md`).
//! * [`PlanSegmenter`] drives the two programs as a [`super::PromptableSegmenter`].
//!
//! Numerics follow the GPU kernels: everything is f32 except attention, whose
//! q, k and v are rounded to f16 and whose output is f16 (the only attention
//! kernel is `attention_f16`, f32 accumulation); the references accumulate in
//! f64. So a plan's output differs from tract's f32 graph by about f16
//! rounding, not bit for bit.

mod build;
mod host;
mod segmenter;

pub use build::{build, build_decoder, ModelPlan};
pub use host::{run_op_host, CpuExecutor};
pub use segmenter::{input_size, PlanSegmenter};

use edgeseg_kernels::reference::nn::{Act, AttnShape, ConvShape, NnError, Strides};

/// Index of an activation buffer of a [`Program`].
pub type BufId = usize;
/// Index of a tensor of [`Weights`].
pub type WeightId = usize;

/// Why a bundle has no kernel plan, or a plan could not run.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The bundle is not a model this plan builder implements (missing or
    /// mis-shaped weights, unexpected node attributes, quantized tensors ...).
    #[error("{0}")]
    Unsupported(String),
    /// A kernel reference rejected its arguments (a plan bug).
    #[error("op {step} ({label}): {source}")]
    Op {
        /// Step index.
        step: usize,
        /// The step's label.
        label: String,
        /// The reference's error.
        source: NnError,
    },
    /// Inputs do not match the program.
    #[error("program input: {0}")]
    Input(String),
    /// The device failed (allocation, copy, launch).
    #[error("device: {0}")]
    Device(String),
}

/// One weight tensor, f32, in the layout its kernel reads.
#[derive(Debug, Clone)]
pub struct Weight {
    /// Where it came from: the graph initializer(s), and the transform applied
    /// (e.g. `…qkv.weight_12 (transposed)`), or a synthesized constant.
    pub source: String,
    /// Shape in the kernel's layout.
    pub dims: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

/// All weights of a model, loaded once; executors upload them once.
#[derive(Debug, Clone, Default)]
pub struct Weights {
    /// The tensors, indexed by [`WeightId`].
    pub tensors: Vec<Weight>,
}

impl Weights {
    /// Total number of f32 values.
    pub fn elements(&self) -> usize {
        self.tensors.iter().map(|w| w.data.len()).sum()
    }
}

/// Where an attention operand lives inside its buffer: element offset and
/// `[batch, head, token]` strides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    /// Offset of element `[0, 0, 0, 0]`.
    pub offset: usize,
    /// Strides.
    pub strides: Strides,
}

/// One kernel call. Every op reads its input buffers and writes one new
/// output buffer (programs are in single-assignment form).
#[derive(Debug, Clone)]
pub enum Op {
    /// Convolution with per-channel affine and activation
    /// (`reference::nn::conv2d_bn_act`, kernels `conv1x1_bn_act_f32`,
    /// `conv3x3_bn_act_f32`, `dwconv3x3_bn_act_f32`).
    Conv {
        /// Input `cin × h × w`.
        x: BufId,
        /// Output `cout × ho × wo`.
        y: BufId,
        /// Weights `cout × cin/groups × k × k`.
        w: WeightId,
        /// Per-channel scale (ones: BatchNorm is folded into the bundle's weights).
        scale: WeightId,
        /// Per-channel shift (the conv bias).
        shift: WeightId,
        /// Shape.
        shape: ConvShape,
        /// Fused activation.
        act: Act,
    },
    /// `c = act(a·wᵀ + bias)` with a weight `w` of `n × k`
    /// (`reference::nn::gemm_bias_act`, kernel `gemm_bias_act_f32`).
    Gemm {
        /// `m × k`.
        a: BufId,
        /// `m × n`.
        c: BufId,
        /// `n × k`.
        w: WeightId,
        /// `n`, optional.
        bias: Option<WeightId>,
        /// Rows.
        m: usize,
        /// Output columns.
        n: usize,
        /// Inner dimension.
        k: usize,
        /// Fused activation.
        act: Act,
    },
    /// `c = a·bᵀ` of two activations (`a`: `m × k`, `b`: `n × k`): the mask
    /// decoder's hypernetwork outputs times the upscaled embedding.
    MatMulBt {
        /// `m × k`.
        a: BufId,
        /// `n × k`.
        b: BufId,
        /// `m × n`.
        c: BufId,
        /// Rows.
        m: usize,
        /// Columns.
        n: usize,
        /// Inner dimension.
        k: usize,
    },
    /// LayerNorm over the last dimension (`layernorm_f32`).
    LayerNorm {
        /// `rows × c`.
        x: BufId,
        /// `rows × c`.
        y: BufId,
        /// `c`.
        gamma: WeightId,
        /// `c`.
        beta: WeightId,
        /// Rows.
        rows: usize,
        /// Channels.
        c: usize,
        /// Epsilon.
        eps: f32,
    },
    /// SAM's LayerNorm2d over the channels of `c × hw` (`layernorm2d_f32`).
    LayerNorm2d {
        /// `c × hw`.
        x: BufId,
        /// `c × hw`.
        y: BufId,
        /// `c`.
        gamma: WeightId,
        /// `c`.
        beta: WeightId,
        /// Channels.
        c: usize,
        /// Pixels.
        hw: usize,
        /// Epsilon.
        eps: f32,
    },
    /// `y = act(a + b)`, elementwise, equal lengths (no kernel yet).
    Add {
        /// Left operand.
        a: BufId,
        /// Right operand.
        b: BufId,
        /// Result.
        y: BufId,
        /// Activation applied to the sum.
        act: Act,
    },
    /// `y = x + w`, `w` repeated along `x` (`len(x)` a multiple of `len(w)`):
    /// a per-channel bias on tokens, or a same-sized constant (no kernel yet).
    AddWeight {
        /// Input.
        x: BufId,
        /// The constant.
        w: WeightId,
        /// Result.
        y: BufId,
    },
    /// Elementwise GELU (`gelu_f32`).
    Gelu {
        /// Input.
        x: BufId,
        /// Output.
        y: BufId,
    },
    /// `y = xᵀ` for an `rows × cols` matrix: NCHW `c × hw` ↔ tokens `hw × c`
    /// (no kernel yet).
    Transpose {
        /// `rows × cols`.
        x: BufId,
        /// `cols × rows`.
        y: BufId,
        /// Rows of `x`.
        rows: usize,
        /// Columns of `x`.
        cols: usize,
    },
    /// Window partition of `h × w × c` tokens into `ws × ws` windows with zero
    /// padding (`reference::nn::window_partition`; the kernel exists for f16
    /// only).
    WindowPartition {
        /// `h·w × c`.
        x: BufId,
        /// `windows · ws² × c`.
        y: BufId,
        /// Grid rows.
        h: usize,
        /// Grid columns.
        w: usize,
        /// Channels.
        c: usize,
        /// Window side.
        ws: usize,
    },
    /// Inverse of [`Op::WindowPartition`], dropping the padding.
    WindowReverse {
        /// `windows · ws² × c`.
        x: BufId,
        /// `h·w × c`.
        y: BufId,
        /// Grid rows.
        h: usize,
        /// Grid columns.
        w: usize,
        /// Channels.
        c: usize,
        /// Window side.
        ws: usize,
    },
    /// Multi-head attention `o = softmax(q·kᵀ + bias) · v` (the scale is folded
    /// into the query projection), q/k/v rounded to f16 and the output
    /// rounded to f16 (`reference::nn::attention_f16`, `attention_f16_d*`).
    Attention {
        /// Buffer holding q.
        q: BufId,
        /// Where q is in it.
        qv: View,
        /// Buffer holding k.
        k: BufId,
        /// Where k is in it.
        kv: View,
        /// Buffer holding v.
        v: BufId,
        /// Where v is in it.
        vv: View,
        /// Output, contiguous `[batch, nq, heads, dim]` (`Strides::bnhd`).
        o: BufId,
        /// Shape.
        shape: AttnShape,
        /// Per-head `heads × nq × nk` bias (TinyViT), optional.
        bias: Option<WeightId>,
    },
    /// `ConvTranspose2d(cin, cout, 2, stride 2)` with bias on `cin × h × w`
    /// (`reference::nn::conv_transpose2x2`; no kernel yet).
    ConvTranspose2x2 {
        /// `cin × h × w`.
        x: BufId,
        /// `cout × 2h × 2w`.
        y: BufId,
        /// `cin × cout × 2 × 2`.
        w: WeightId,
        /// `cout`.
        bias: WeightId,
        /// Input channels.
        cin: usize,
        /// Output channels.
        cout: usize,
        /// Input rows.
        h: usize,
        /// Input columns.
        wd: usize,
    },
    /// `y = x[offset .. offset + len]` (a token row).
    Slice {
        /// Input.
        x: BufId,
        /// Output.
        y: BufId,
        /// First element.
        offset: usize,
        /// Elements.
        len: usize,
    },
    /// `y = x0 ‖ x1 ‖ …` (rows of equal width stacked).
    Concat {
        /// Inputs, in order.
        xs: Vec<BufId>,
        /// Output.
        y: BufId,
    },
    /// SAM's prompt encoder for points (boxes are two labelled corners) plus
    /// the decoder's output tokens: `y = output_tokens ‖ sparse(points)`, in
    /// f32 exactly as the exported graph computes it. Runs on the host: a
    /// few dozen values.
    PromptTokens {
        /// Point coordinates `n × 2` in model-input pixels.
        coords: BufId,
        /// Labels `n` (SAM convention −1..3).
        labels: BufId,
        /// Output `(tokens + n) × d`.
        y: BufId,
        /// `2 × d/2` random Fourier features.
        gauss: WeightId,
        /// `5 × d`: not-a-point, then point embeddings 0..3 (label + 1).
        label_table: WeightId,
        /// `tokens × d`: the IoU token then the mask tokens.
        output_tokens: WeightId,
        /// Model input side.
        input_size: f32,
        /// Points.
        n: usize,
        /// Embedding width.
        d: usize,
    },
    /// The distilled students' box prior, added to every mask's logits:
    /// `y[m] = x[m] + height · clip(1 − u² − v², −1, 1) · has_box`, where the
    /// box is the mean top-left (label 2) and bottom-right (label 3) corner
    /// of the prompt points, `u = (xs − cx)/rx`, `v = (ys − cy)/ry` with the
    /// radii at least 1, and `has_box` is 0 without both corners. In f32, in
    /// the exported graph's operation order. Runs on the host (`L²` values).
    BoxPrior {
        /// Mask logits `masks × L × L`.
        x: BufId,
        /// Point coordinates `n × 2` in model-input pixels.
        coords: BufId,
        /// Labels `n`.
        labels: BufId,
        /// Output, like `x`.
        y: BufId,
        /// `L` cell centres along x, in model-input pixels.
        xs: WeightId,
        /// `L` cell centres along y.
        ys: WeightId,
        /// The prior's height in logits.
        height: f32,
        /// Points.
        n: usize,
        /// Masks.
        masks: usize,
        /// Side `L` of the logit maps.
        side: usize,
    },
}

impl Op {
    /// The buffers the op reads.
    pub fn inputs(&self) -> Vec<BufId> {
        match self {
            Op::Conv { x, .. }
            | Op::LayerNorm { x, .. }
            | Op::LayerNorm2d { x, .. }
            | Op::AddWeight { x, .. }
            | Op::Gelu { x, .. }
            | Op::Transpose { x, .. }
            | Op::WindowPartition { x, .. }
            | Op::WindowReverse { x, .. }
            | Op::ConvTranspose2x2 { x, .. }
            | Op::Slice { x, .. } => vec![*x],
            Op::Gemm { a, .. } => vec![*a],
            Op::MatMulBt { a, b, .. } | Op::Add { a, b, .. } => vec![*a, *b],
            Op::Attention { q, k, v, .. } => vec![*q, *k, *v],
            Op::Concat { xs, .. } => xs.clone(),
            Op::PromptTokens { coords, labels, .. } => vec![*coords, *labels],
            Op::BoxPrior {
                x, coords, labels, ..
            } => vec![*x, *coords, *labels],
        }
    }

    /// The buffer the op writes.
    pub fn output(&self) -> BufId {
        match self {
            Op::Conv { y, .. }
            | Op::LayerNorm { y, .. }
            | Op::LayerNorm2d { y, .. }
            | Op::AddWeight { y, .. }
            | Op::Gelu { y, .. }
            | Op::Transpose { y, .. }
            | Op::WindowPartition { y, .. }
            | Op::WindowReverse { y, .. }
            | Op::ConvTranspose2x2 { y, .. }
            | Op::Slice { y, .. }
            | Op::Add { y, .. }
            | Op::Concat { y, .. }
            | Op::PromptTokens { y, .. }
            | Op::BoxPrior { y, .. } => *y,
            Op::Gemm { c, .. } | Op::MatMulBt { c, .. } => *c,
            Op::Attention { o, .. } => *o,
        }
    }

    /// Short name of the op kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Conv { .. } => "conv",
            Op::Gemm { .. } => "gemm",
            Op::MatMulBt { .. } => "matmul_bt",
            Op::LayerNorm { .. } => "layer_norm",
            Op::LayerNorm2d { .. } => "layer_norm2d",
            Op::Add { .. } => "add",
            Op::AddWeight { .. } => "add_weight",
            Op::Gelu { .. } => "gelu",
            Op::Transpose { .. } => "transpose",
            Op::WindowPartition { .. } => "window_partition",
            Op::WindowReverse { .. } => "window_reverse",
            Op::Attention { .. } => "attention",
            Op::ConvTranspose2x2 { .. } => "conv_transpose2x2",
            Op::Slice { .. } => "slice",
            Op::Concat { .. } => "concat",
            Op::PromptTokens { .. } => "prompt_tokens",
            Op::BoxPrior { .. } => "box_prior",
        }
    }
}

/// One step of a program: the op and where in the model it comes from.
#[derive(Debug, Clone)]
pub struct Step {
    /// The kernel call.
    pub op: Op,
    /// Model path, e.g. `image_encoder.layers.1.blocks.0.attn`.
    pub label: String,
}

/// A sequence of kernel calls over single-assignment f32 buffers.
#[derive(Debug, Clone, Default)]
pub struct Program {
    /// Elements of every buffer.
    pub buf_len: Vec<usize>,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// Buffers filled by the caller, in order.
    pub inputs: Vec<BufId>,
    /// Buffers returned to the caller, in order.
    pub outputs: Vec<BufId>,
    /// For every step, the buffers that are dead after it (freed by executors).
    pub frees: Vec<Vec<BufId>>,
}

impl Program {
    /// Computes [`Program::frees`] from the steps and outputs.
    fn finish(&mut self) {
        let mut last = vec![None; self.buf_len.len()];
        for (i, s) in self.steps.iter().enumerate() {
            for b in s.op.inputs() {
                last[b] = Some(i);
            }
        }
        self.frees = vec![Vec::new(); self.steps.len()];
        for (b, l) in last.iter().enumerate() {
            if let Some(i) = l {
                if !self.outputs.contains(&b) {
                    self.frees[*i].push(b);
                }
            }
        }
    }

    /// How many steps use each op kind, sorted by kind.
    pub fn histogram(&self) -> Vec<(&'static str, usize)> {
        let mut m = std::collections::BTreeMap::new();
        for s in &self.steps {
            *m.entry(s.op.kind()).or_insert(0) += 1;
        }
        m.into_iter().collect()
    }

    /// Most f32 values alive at once (inputs and outputs included): the
    /// activation memory an executor that frees dead buffers needs.
    pub fn peak_elements(&self) -> usize {
        let mut live: usize = self.inputs.iter().map(|&b| self.buf_len[b]).sum();
        let mut peak = live;
        for (s, frees) in self.steps.iter().zip(&self.frees) {
            live += self.buf_len[s.op.output()];
            peak = peak.max(live);
            live -= frees.iter().map(|&b| self.buf_len[b]).sum::<usize>();
        }
        peak
    }
}

/// Runs [`Program`]s on some device, with the model's [`Weights`] given at
/// construction (and, on a GPU, uploaded once then).
pub trait Executor: Send {
    /// Short name for logs, e.g. `reference-cpu` or `cuda`.
    fn name(&self) -> &str;
    /// Runs `program` with `inputs` (one slice per [`Program::inputs`], of the
    /// declared lengths) and returns its outputs.
    fn run(&mut self, program: &Program, inputs: &[&[f32]]) -> Result<Vec<Vec<f32>>, PlanError>;
}

/// Checks `inputs` against `program`'s declared input lengths.
pub fn check_inputs(program: &Program, inputs: &[&[f32]]) -> Result<(), PlanError> {
    if inputs.len() != program.inputs.len() {
        return Err(PlanError::Input(format!(
            "{} inputs given, the program takes {}",
            inputs.len(),
            program.inputs.len()
        )));
    }
    for (i, (&b, x)) in program.inputs.iter().zip(inputs).enumerate() {
        if x.len() != program.buf_len[b] {
            return Err(PlanError::Input(format!(
                "input {i} has {} values, expected {}",
                x.len(),
                program.buf_len[b]
            )));
        }
    }
    Ok(())
}
