//! Building the [`Program`]s of a LiteMedSAM-structured bundle.
//!
//! The builder mirrors `edgeseg_models::export::litemedsam` step by step: the
//! exporter names every initializer `<scope>.<hint>_<counter>` (e.g.
//! `image_encoder.layers.1.blocks.0.attn.qkv.weight_57`), so weights are found
//! by their name without the counter. Layer counts, widths, heads and windows
//! come from the weights' shapes, the attention bias tables and the reshape
//! constants; strides, groups and epsilons from the graph nodes. A bundle
//! that does not match (another exporter, quantized tensors, a changed naming
//! scheme) gives [`PlanError::Unsupported`], never a wrong plan: every shape
//! is checked.

use std::collections::HashMap;
use std::sync::Arc;

use edgeseg_kernels::reference::nn::{Act, AttnShape, ConvShape, Strides};
use tract_onnx::pb;

use super::{BufId, Op, PlanError, Program, Step, View, Weight, WeightId, Weights};
use crate::backend::cpu::{DECODER_GRAPH, ENCODER_GRAPH};
use crate::bundle::Bundle;

fn unsupported(msg: impl Into<String>) -> PlanError {
    PlanError::Unsupported(msg.into())
}

/// An f32 initializer of a graph.
#[derive(Debug)]
struct Init {
    name: String,
    dims: Vec<usize>,
    data: Vec<f32>,
    /// Not f32 (quantized or reduced precision): no plan for it yet.
    foreign: bool,
    /// The data was moved to the weight table (only the shape is kept).
    moved: bool,
}

/// The attributes of the node that consumes an initializer.
#[derive(Debug, Clone, Default)]
struct NodeAttrs {
    op: String,
    ints: HashMap<String, Vec<i64>>,
    floats: HashMap<String, f32>,
}

/// A graph's initializers by exporter name (counter suffix removed) and the
/// nodes that read them.
#[derive(Debug)]
struct Index {
    graph: &'static str,
    floats: HashMap<String, Vec<Init>>,
    ints: HashMap<String, Vec<Vec<i64>>>,
    nodes: HashMap<String, NodeAttrs>,
}

/// `scope.hint_12` → `scope.hint`.
fn logical(name: &str) -> &str {
    match name.rsplit_once('_') {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => name,
    }
}

fn dims_of(t: &pb::TensorProto) -> Option<Vec<usize>> {
    t.dims.iter().map(|&d| usize::try_from(d).ok()).collect()
}

impl Index {
    fn new(model: &pb::ModelProto, graph: &'static str) -> Result<Self, PlanError> {
        let g = model
            .graph
            .as_ref()
            .ok_or_else(|| unsupported(format!("{graph}: no graph")))?;
        let mut floats: HashMap<String, Vec<Init>> = HashMap::new();
        let mut ints: HashMap<String, Vec<Vec<i64>>> = HashMap::new();
        for t in &g.initializer {
            let key = logical(&t.name).to_string();
            let Some(dims) = dims_of(t) else { continue };
            let n: usize = dims.iter().product();
            if t.data_type == pb::tensor_proto::DataType::Float as i32 {
                let data: Vec<f32> = if !t.raw_data.is_empty() {
                    t.raw_data
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect()
                } else {
                    t.float_data.clone()
                };
                if data.len() != n {
                    return Err(unsupported(format!(
                        "{graph}: initializer {} holds {} values for shape {dims:?}",
                        t.name,
                        data.len()
                    )));
                }
                floats.entry(key).or_default().push(Init {
                    name: t.name.clone(),
                    dims,
                    data,
                    foreign: false,
                    moved: false,
                });
            } else if t.data_type == pb::tensor_proto::DataType::Int64 as i32 {
                let data: Vec<i64> = if !t.raw_data.is_empty() {
                    t.raw_data
                        .chunks_exact(8)
                        .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                        .collect()
                } else {
                    t.int64_data.clone()
                };
                ints.entry(key).or_default().push(data);
            } else {
                // a quantized or reduced-precision weight: not implemented by the plan
                floats.entry(key).or_default().push(Init {
                    name: t.name.clone(),
                    dims,
                    data: Vec::new(),
                    foreign: true,
                    moved: false,
                });
            }
        }
        let mut nodes = HashMap::new();
        for n in &g.node {
            let mut a = NodeAttrs {
                op: n.op_type.clone(),
                ..Default::default()
            };
            for at in &n.attribute {
                if !at.ints.is_empty() {
                    a.ints.insert(at.name.clone(), at.ints.clone());
                } else if at.r#type == pb::attribute_proto::AttributeType::Int as i32 {
                    a.ints.insert(at.name.clone(), vec![at.i]);
                } else if at.r#type == pb::attribute_proto::AttributeType::Float as i32 {
                    a.floats.insert(at.name.clone(), at.f);
                }
            }
            for i in n.input.iter().skip(1) {
                nodes.entry(i.clone()).or_insert_with(|| a.clone());
            }
        }
        Ok(Self {
            graph,
            floats,
            ints,
            nodes,
        })
    }

    fn has(&self, name: &str) -> bool {
        self.floats.contains_key(name)
    }

    fn init(&self, name: &str) -> Result<&Init, PlanError> {
        match self.floats.get(name).map(Vec::as_slice) {
            Some([one]) if one.foreign => Err(unsupported(format!(
                "{}: weight {} is not f32 (quantized bundles have no kernel plan yet)",
                self.graph, one.name
            ))),
            Some([one]) => Ok(one),
            Some(_) => Err(unsupported(format!(
                "{}: several initializers are named {name}_N",
                self.graph
            ))),
            None => Err(unsupported(format!(
                "{}: no weight {name} (not an edgeseg LiteMedSAM export?)",
                self.graph
            ))),
        }
    }

    fn scalar(&self, name: &str) -> Result<f32, PlanError> {
        let i = self.init(name)?;
        match i.data[..] {
            [v] => Ok(v),
            _ => Err(unsupported(format!(
                "{}: {name} is not a scalar",
                self.graph
            ))),
        }
    }

    fn node(&self, init: &Init, op: &str) -> Result<&NodeAttrs, PlanError> {
        self.nodes
            .get(&init.name)
            .filter(|n| n.op == op)
            .ok_or_else(|| {
                unsupported(format!(
                    "{}: {} does not feed a {op} node",
                    self.graph, init.name
                ))
            })
    }
}

/// How a weight is laid out for its kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Layout {
    /// As stored.
    AsIs,
    /// A `k × n` MatMul weight → `n × k` (PyTorch `Linear`, the GEMM kernels).
    Transposed,
}

/// Weights shared by the programs of one model, deduplicated by source.
#[derive(Debug, Default)]
struct WeightTable {
    weights: Weights,
    by_key: HashMap<(String, Layout), WeightId>,
    ones: HashMap<usize, WeightId>,
    /// Once the executors have the weights, no new one may appear.
    frozen: bool,
}

impl WeightTable {
    fn add(&mut self, key: (String, Layout), w: Weight) -> Result<WeightId, PlanError> {
        if let Some(&id) = self.by_key.get(&key) {
            return Ok(id);
        }
        if self.frozen {
            return Err(unsupported(format!(
                "weight {} was not loaded when the model was opened",
                key.0
            )));
        }
        self.weights.tensors.push(w);
        let id = self.weights.tensors.len() - 1;
        self.by_key.insert(key, id);
        Ok(id)
    }
}

struct Builder<'a> {
    idx: &'a Index,
    table: &'a mut WeightTable,
    prog: Program,
    label: String,
}

/// An activation: its buffer and its logical shape.
#[derive(Debug, Clone, Copy)]
struct Chw {
    buf: BufId,
    c: usize,
    h: usize,
    w: usize,
}

impl<'a> Builder<'a> {
    fn new(idx: &'a Index, table: &'a mut WeightTable) -> Self {
        Self {
            idx,
            table,
            prog: Program::default(),
            label: String::new(),
        }
    }

    fn buf(&mut self, len: usize) -> BufId {
        self.prog.buf_len.push(len);
        self.prog.buf_len.len() - 1
    }

    fn input(&mut self, len: usize) -> BufId {
        let b = self.buf(len);
        self.prog.inputs.push(b);
        b
    }

    fn push(&mut self, op: Op) -> BufId {
        let y = op.output();
        self.prog.steps.push(Step {
            op,
            label: self.label.clone(),
        });
        y
    }

    fn len(&self, b: BufId) -> usize {
        self.prog.buf_len[b]
    }

    /// The weight `name` with shape `dims` in `layout`.
    fn weight(
        &mut self,
        name: &str,
        dims: &[usize],
        layout: Layout,
    ) -> Result<WeightId, PlanError> {
        let key = (name.to_string(), layout);
        if let Some(&id) = self.table.by_key.get(&key) {
            return Ok(id);
        }
        let init = self.idx.init(name)?;
        if init.moved {
            return Err(unsupported(format!(
                "weight {} was not loaded when the model was opened",
                init.name
            )));
        }
        if init.dims != dims {
            return Err(unsupported(format!(
                "{}: {} has shape {:?}, the plan expects {dims:?}",
                self.idx.graph, init.name, init.dims
            )));
        }
        let (dims, data, source) = match layout {
            Layout::AsIs => (init.dims.clone(), init.data.clone(), init.name.clone()),
            Layout::Transposed => {
                let (k, n) = (dims[0], dims[1]);
                let mut t = vec![0f32; k * n];
                for i in 0..k {
                    for j in 0..n {
                        t[j * k + i] = init.data[i * n + j];
                    }
                }
                (vec![n, k], t, format!("{} (transposed)", init.name))
            }
        };
        self.table.add(key, Weight { source, dims, data })
    }

    /// A weight whose shape is read from the bundle (checked by the caller).
    fn dims(&self, name: &str) -> Result<Vec<usize>, PlanError> {
        Ok(self.idx.init(name)?.dims.clone())
    }

    fn ones(&mut self, n: usize) -> Result<WeightId, PlanError> {
        if let Some(&id) = self.table.ones.get(&n) {
            return Ok(id);
        }
        let id = self.table.add(
            (format!("<ones {n}>"), Layout::AsIs),
            Weight {
                source: format!("ones({n}): BatchNorm is folded into the conv weights"),
                dims: vec![n],
                data: vec![1.0; n],
            },
        )?;
        self.table.ones.insert(n, id);
        Ok(id)
    }

    /// `Conv` (+ folded BN) named `<scope>.conv_weight` / `.conv_bias`, with the
    /// node's strides, pads and groups.
    fn conv(&mut self, scope: &str, x: Chw, act: Act) -> Result<Chw, PlanError> {
        let wname = format!("{scope}.conv_weight");
        let wd = self.dims(&wname)?;
        let [cout, cig, k, k2] = wd[..] else {
            return Err(unsupported(format!("{wname}: shape {wd:?} is not 4-D")));
        };
        let init = self.idx.init(&wname)?;
        let node = self.idx.node(init, "Conv")?;
        let one = |key: &str, default: i64| -> Result<i64, PlanError> {
            match node.ints.get(key).map(Vec::as_slice) {
                None => Ok(default),
                Some([v, rest @ ..]) if rest.iter().all(|r| r == v) => Ok(*v),
                Some(v) => Err(unsupported(format!("{wname}: {key} {v:?} is not uniform"))),
            }
        };
        let stride = one("strides", 1)?;
        let pad = one("pads", 0)?;
        let group = one("group", 1)?;
        if one("dilations", 1)? != 1 || k != k2 || stride < 1 || pad < 0 {
            return Err(unsupported(format!("{wname}: unsupported conv attributes")));
        }
        let depthwise = group > 1;
        if (depthwise && (group as usize != x.c || cig != 1 || cout != x.c))
            || (!depthwise && cig != x.c)
        {
            return Err(unsupported(format!(
                "{wname}: {cout}×{cig} weights, group {group}, on {} channels",
                x.c
            )));
        }
        let shape = ConvShape {
            n: 1,
            cin: x.c,
            h: x.h,
            w: x.w,
            cout,
            k,
            stride: stride as usize,
            pad: pad as usize,
            depthwise,
        };
        if x.h + 2 * shape.pad < k || x.w + 2 * shape.pad < k {
            return Err(unsupported(format!(
                "{wname}: kernel larger than its input"
            )));
        }
        let (ho, wo) = shape.out_hw();
        let w = self.weight(&wname, &wd, Layout::AsIs)?;
        let shift = self.weight(&format!("{scope}.conv_bias"), &[cout], Layout::AsIs)?;
        let scale = self.ones(cout)?;
        let y = self.buf(cout * ho * wo);
        self.push(Op::Conv {
            x: x.buf,
            y,
            w,
            scale,
            shift,
            shape,
            act,
        });
        Ok(Chw {
            buf: y,
            c: cout,
            h: ho,
            w: wo,
        })
    }

    /// `x·W + b` of `<scope>.weight` (`k × n`) and `<scope>.bias` on `rows × k`.
    fn linear(
        &mut self,
        scope: &str,
        x: BufId,
        rows: usize,
        act: Act,
    ) -> Result<(BufId, usize), PlanError> {
        let wname = format!("{scope}.weight");
        let wd = self.dims(&wname)?;
        let [k, n] = wd[..] else {
            return Err(unsupported(format!("{wname}: shape {wd:?} is not 2-D")));
        };
        if self.len(x) != rows * k {
            return Err(unsupported(format!(
                "{wname}: {k}-wide input expected, got {} values for {rows} rows",
                self.len(x)
            )));
        }
        let w = self.weight(&wname, &wd, Layout::Transposed)?;
        let bias = Some(self.weight(&format!("{scope}.bias"), &[n], Layout::AsIs)?);
        let c = self.buf(rows * n);
        self.push(Op::Gemm {
            a: x,
            c,
            w,
            bias,
            m: rows,
            n,
            k,
            act,
        });
        Ok((c, n))
    }

    /// `LayerNormalization` of `<scope>.ln_weight` / `.ln_bias` on `rows × c`.
    fn layer_norm(
        &mut self,
        scope: &str,
        x: BufId,
        rows: usize,
        c: usize,
    ) -> Result<BufId, PlanError> {
        let gname = format!("{scope}.ln_weight");
        let init = self.idx.init(&gname)?;
        let eps = *self
            .idx
            .node(init, "LayerNormalization")?
            .floats
            .get("epsilon")
            .unwrap_or(&1e-5);
        let gamma = self.weight(&gname, &[c], Layout::AsIs)?;
        let beta = self.weight(&format!("{scope}.ln_bias"), &[c], Layout::AsIs)?;
        let y = self.buf(rows * c);
        Ok(self.push(Op::LayerNorm {
            x,
            y,
            gamma,
            beta,
            rows,
            c,
            eps,
        }))
    }

    /// SAM's LayerNorm2d as exported (`<scope>.weight`, `.bias`, `.eps`).
    fn layer_norm_2d(&mut self, scope: &str, x: Chw) -> Result<Chw, PlanError> {
        let eps = self.idx.scalar(&format!("{scope}.eps"))?;
        let gamma = self.weight(&format!("{scope}.weight"), &[1, x.c, 1, 1], Layout::AsIs)?;
        let beta = self.weight(&format!("{scope}.bias"), &[1, x.c, 1, 1], Layout::AsIs)?;
        let y = self.buf(self.len(x.buf));
        self.push(Op::LayerNorm2d {
            x: x.buf,
            y,
            gamma,
            beta,
            c: x.c,
            hw: x.h * x.w,
            eps,
        });
        Ok(Chw { buf: y, ..x })
    }

    fn transpose(&mut self, x: BufId, rows: usize, cols: usize) -> BufId {
        let y = self.buf(rows * cols);
        self.push(Op::Transpose { x, y, rows, cols })
    }

    fn add(&mut self, a: BufId, b: BufId, act: Act) -> BufId {
        let y = self.buf(self.len(a));
        self.push(Op::Add { a, b, y, act })
    }

    fn add_weight(&mut self, x: BufId, w: WeightId) -> BufId {
        let y = self.buf(self.len(x));
        self.push(Op::AddWeight { x, w, y })
    }

    fn scoped<R>(&mut self, label: &str, f: impl FnOnce(&mut Self) -> R) -> R {
        let old = std::mem::replace(&mut self.label, label.to_string());
        let r = f(self);
        self.label = old;
        r
    }

    fn finish(mut self, outputs: Vec<BufId>) -> Program {
        self.prog.outputs = outputs;
        self.prog.finish();
        self.prog
    }
}

// ---------------------------------------------------------------- encoder

fn tinyvit_attention(
    b: &mut Builder,
    prefix: &str,
    x: BufId,
    windows: usize,
    n: usize,
    dim: usize,
) -> Result<BufId, PlanError> {
    let table = format!("{prefix}.attention_bias_table");
    let td = b.dims(&table)?;
    let [1, heads, n1, n2] = td[..] else {
        return Err(unsupported(format!("{table}: shape {td:?}")));
    };
    if n1 != n || n2 != n || heads == 0 || !dim.is_multiple_of(heads) {
        return Err(unsupported(format!(
            "{table}: shape {td:?} for {n}-token windows of width {dim}"
        )));
    }
    let kd = dim / heads;
    let rows = windows * n;
    let xn = b.layer_norm(&format!("{prefix}.norm"), x, rows, dim)?;
    let (qkv, w3) = b.linear(&format!("{prefix}.qkv"), xn, rows, Act::None)?;
    if w3 != 3 * dim {
        return Err(unsupported(format!(
            "{prefix}.qkv: width {w3}, expected {}",
            3 * dim
        )));
    }
    let bias = Some(b.weight(&table, &td, Layout::AsIs)?);
    let st = Strides {
        batch: n * 3 * dim,
        head: kd,
        token: 3 * dim,
    };
    let view = |offset| View {
        offset,
        strides: st,
    };
    let o = b.buf(rows * dim);
    b.push(Op::Attention {
        q: qkv,
        qv: view(0),
        k: qkv,
        kv: view(dim),
        v: qkv,
        vv: view(2 * dim),
        o,
        shape: AttnShape {
            batch: windows,
            heads,
            nq: n,
            nk: n,
            dim: kd,
        },
        bias,
    });
    Ok(b.linear(&format!("{prefix}.proj"), o, rows, Act::None)?.0)
}

/// One TinyViT block on tokens `res² × dim`.
fn tinyvit_block(
    b: &mut Builder,
    prefix: &str,
    x: BufId,
    dim: usize,
    res: usize,
) -> Result<BufId, PlanError> {
    let attn = format!("{prefix}.attn");
    let td = b.dims(&format!("{attn}.attention_bias_table"))?;
    let n = *td.last().unwrap_or(&0);
    let ws = (1..=n).find(|w| w * w == n).ok_or_else(|| {
        unsupported(format!(
            "{attn}: bias table {td:?} is not for a square window"
        ))
    })?;
    let y = b.scoped(&attn, |b| -> Result<BufId, PlanError> {
        if res == ws {
            tinyvit_attention(b, &attn, x, 1, n, dim)
        } else {
            let nw = res.div_ceil(ws);
            let windows = nw * nw;
            let p = b.buf(windows * n * dim);
            b.push(Op::WindowPartition {
                x,
                y: p,
                h: res,
                w: res,
                c: dim,
                ws,
            });
            let a = tinyvit_attention(b, &attn, p, windows, n, dim)?;
            let y = b.buf(res * res * dim);
            Ok(b.push(Op::WindowReverse {
                x: a,
                y,
                h: res,
                w: res,
                c: dim,
                ws,
            }))
        }
    })?;
    b.label = prefix.to_string();
    let x = b.add(x, y, Act::None);
    let t = b.transpose(x, res * res, dim);
    let t = b.conv(
        &format!("{prefix}.local_conv"),
        Chw {
            buf: t,
            c: dim,
            h: res,
            w: res,
        },
        Act::None,
    )?;
    let x = b.transpose(t.buf, dim, res * res);
    let mlp = format!("{prefix}.mlp");
    b.scoped(&mlp, |b| {
        let m = b.layer_norm(&format!("{mlp}.norm"), x, res * res, dim)?;
        let (m, hidden) = b.linear(&format!("{mlp}.fc1"), m, res * res, Act::Gelu)?;
        let (m, out) = b.linear(&format!("{mlp}.fc2"), m, res * res, Act::None)?;
        if out != dim || hidden == 0 {
            return Err(unsupported(format!(
                "{mlp}: output width {out}, expected {dim}"
            )));
        }
        Ok(b.add(x, m, Act::None))
    })
}

fn patch_merging(b: &mut Builder, prefix: &str, x: Chw) -> Result<Chw, PlanError> {
    b.scoped(prefix, |b| {
        let y = b.conv(&format!("{prefix}.conv1"), x, Act::Gelu)?;
        let y = b.conv(&format!("{prefix}.conv2"), y, Act::Gelu)?;
        b.conv(&format!("{prefix}.conv3"), y, Act::None)
    })
}

fn encoder_program(
    idx: &Index,
    table: &mut WeightTable,
    s: usize,
) -> Result<(Program, [usize; 3]), PlanError> {
    let mut builder = Builder::new(idx, table);
    let b = &mut builder;
    let p = "image_encoder";
    let x = Chw {
        buf: b.input(3 * s * s),
        c: 3,
        h: s,
        w: s,
    };
    let x = b.scoped("image_encoder.patch_embed", |b| {
        let x = b.conv(&format!("{p}.patch_embed.seq.0"), x, Act::Gelu)?;
        b.conv(&format!("{p}.patch_embed.seq.2"), x, Act::None)
    })?;
    let mut x = x;
    let mut i = 0;
    while idx.has(&format!("{p}.layers.0.blocks.{i}.conv1.conv_weight")) {
        let blk = format!("{p}.layers.0.blocks.{i}");
        x = b.scoped(&blk, |b| {
            let y = b.conv(&format!("{blk}.conv1"), x, Act::Gelu)?;
            let y = b.conv(&format!("{blk}.conv2"), y, Act::Gelu)?;
            let y = b.conv(&format!("{blk}.conv3"), y, Act::None)?;
            if y.c != x.c || y.h != x.h || y.w != x.w {
                return Err(unsupported(format!("{blk}: MBConv changes the shape")));
            }
            Ok(Chw {
                buf: b.add(y.buf, x.buf, Act::Gelu),
                ..x
            })
        })?;
        i += 1;
    }
    if i == 0 {
        return Err(unsupported("image_encoder.layers.0 has no MBConv block"));
    }
    let mut y = patch_merging(b, &format!("{p}.layers.0.downsample"), x)?;
    for st in 1..4 {
        if y.h != y.w {
            return Err(unsupported(format!("stage {st}: {}x{} grid", y.h, y.w)));
        }
        let (res, dim) = (y.h, y.c);
        let mut tokens = b.transpose(y.buf, dim, res * res);
        let mut i = 0;
        while idx.has(&format!(
            "{p}.layers.{st}.blocks.{i}.attn.attention_bias_table"
        )) {
            tokens = tinyvit_block(b, &format!("{p}.layers.{st}.blocks.{i}"), tokens, dim, res)?;
            i += 1;
        }
        if i == 0 {
            return Err(unsupported(format!("{p}.layers.{st} has no TinyViT block")));
        }
        b.label = format!("{p}.layers.{st}");
        let t = b.transpose(tokens, res * res, dim);
        y = Chw {
            buf: t,
            c: dim,
            h: res,
            w: res,
        };
        if st < 3 {
            y = patch_merging(b, &format!("{p}.layers.{st}.downsample"), y)?;
        }
    }
    let y = b.scoped("image_encoder.neck", |b| {
        let y = b.conv("neck.0", y, Act::None)?;
        let y = b.layer_norm_2d(&format!("{p}.neck.1"), y)?;
        let y = b.conv("neck.2", y, Act::None)?;
        b.layer_norm_2d(&format!("{p}.neck.3"), y)
    })?;
    let dims = [y.c, y.h, y.w];
    Ok((builder.finish(vec![y.buf]), dims))
}

// ---------------------------------------------------------------- decoder

/// Heads of a SAM attention, from its reshape constant `[1, -1, heads, c]`.
fn sam_heads(idx: &Index, prefix: &str, inner: usize) -> Result<usize, PlanError> {
    let shapes = idx
        .ints
        .get(&format!("{prefix}.shape"))
        .ok_or_else(|| unsupported(format!("{}: no reshape constants for {prefix}", idx.graph)))?;
    let heads: Vec<usize> = shapes
        .iter()
        .filter_map(|s| match s[..] {
            [1, -1, h, c] if h > 0 && c > 0 && (h * c) as usize == inner => Some(h as usize),
            _ => None,
        })
        .collect();
    match heads[..] {
        [h, ..] if heads.iter().all(|&x| x == h) => Ok(h),
        _ => Err(unsupported(format!(
            "{}: cannot tell the heads of {prefix} from {shapes:?}",
            idx.graph
        ))),
    }
}

/// SAM attention (`q_proj`, `k_proj`, `v_proj`, `out_proj`, scale folded into q).
#[allow(clippy::too_many_arguments)]
fn sam_attention(
    b: &mut Builder,
    prefix: &str,
    q: BufId,
    nq: usize,
    k: BufId,
    nk: usize,
    v: BufId,
) -> Result<BufId, PlanError> {
    b.scoped(prefix, |b| {
        let (qp, inner) = b.linear(&format!("{prefix}.q_proj"), q, nq, Act::None)?;
        let (kp, ik) = b.linear(&format!("{prefix}.k_proj"), k, nk, Act::None)?;
        let (vp, iv) = b.linear(&format!("{prefix}.v_proj"), v, nk, Act::None)?;
        if ik != inner || iv != inner {
            return Err(unsupported(format!(
                "{prefix}: q/k/v widths {inner}/{ik}/{iv}"
            )));
        }
        let heads = sam_heads(b.idx, prefix, inner)?;
        let c = inner / heads;
        let view = |n| View {
            offset: 0,
            strides: Strides::bnhd(heads, n, c),
        };
        let o = b.buf(nq * inner);
        b.push(Op::Attention {
            q: qp,
            qv: view(nq),
            k: kp,
            kv: view(nk),
            v: vp,
            vv: view(nk),
            o,
            shape: AttnShape {
                batch: 1,
                heads,
                nq,
                nk,
                dim: c,
            },
            bias: None,
        });
        Ok(b.linear(&format!("{prefix}.out_proj"), o, nq, Act::None)?.0)
    })
}

/// SAM's MLP (`<prefix>.layers.i`, ReLU between layers) on one row.
fn sam_mlp(b: &mut Builder, prefix: &str, x: BufId) -> Result<(BufId, usize), PlanError> {
    let mut layers = 0;
    while b.idx.has(&format!("{prefix}.layers.{layers}.weight")) {
        layers += 1;
    }
    if layers == 0 {
        return Err(unsupported(format!("{prefix}: no layers")));
    }
    b.scoped(prefix, |b| {
        let mut x = (x, 0);
        for i in 0..layers {
            let act = if i + 1 < layers { Act::Relu } else { Act::None };
            x = b.linear(&format!("{prefix}.layers.{i}"), x.0, 1, act)?;
        }
        Ok(x)
    })
}

/// What the decoder needs to know about the encoder.
#[derive(Debug, Clone, Copy)]
struct DecoderDims {
    d: usize,
    e: usize,
    input_size: usize,
}

fn decoder_program(
    idx: &Index,
    table: &mut WeightTable,
    dd: DecoderDims,
    n: usize,
) -> Result<(Program, usize, usize), PlanError> {
    let DecoderDims { d, e, input_size } = dd;
    let mut builder = Builder::new(idx, table);
    let b = &mut builder;
    let emb = b.input(d * e * e);
    let coords = b.input(2 * n);
    let labels = b.input(n);
    b.label = "prompt_encoder".into();
    let ot_dims = b.dims("mask_decoder.output_tokens")?;
    let [1, nt, d1] = ot_dims[..] else {
        return Err(unsupported(format!("output_tokens shape {ot_dims:?}")));
    };
    if d1 != d || nt < 2 || !d.is_multiple_of(8) {
        return Err(unsupported(format!(
            "output tokens {ot_dims:?} for a {d}-wide embedding"
        )));
    }
    let nm = nt - 1;
    let gauss = b.weight("prompt_encoder.gaussian_matrix", &[2, d / 2], Layout::AsIs)?;
    let label_table = b.weight("prompt_encoder.label_embeddings", &[5, d], Layout::AsIs)?;
    let output_tokens = b.weight("mask_decoder.output_tokens", &ot_dims, Layout::AsIs)?;
    let size = b.idx.scalar("prompt_encoder.input_size")?;
    if size != input_size as f32 {
        return Err(unsupported(format!(
            "decoder input size {size}, encoder input {input_size}"
        )));
    }
    let rows = nt + n;
    let y = b.buf(rows * d);
    let tokens = b.push(Op::PromptTokens {
        coords,
        labels,
        y,
        gauss,
        label_table,
        output_tokens,
        input_size: size,
        n,
        d,
    });
    b.label = "mask_decoder".into();
    let hw = e * e;
    let no_mask = b.weight("mask_decoder.no_mask_embed", &[1, d, 1, 1], Layout::AsIs)?;
    let kpe = b.weight("mask_decoder.image_pe", &[1, hw, d], Layout::AsIs)?;
    let keys0 = b.transpose(emb, d, hw);
    let mut keys = b.add_weight(keys0, no_mask);
    let mut queries = tokens;
    let t = "mask_decoder.transformer";
    let mut depth = 0;
    while b.idx.has(&format!("{t}.layers.{depth}.norm1.ln_weight")) {
        depth += 1;
    }
    if depth == 0 {
        return Err(unsupported(format!("{t}: no layers")));
    }
    for i in 0..depth {
        let l = format!("{t}.layers.{i}");
        b.label = l.clone();
        let sa = format!("{l}.self_attn");
        queries = if i == 0 {
            sam_attention(b, &sa, queries, rows, queries, rows, queries)?
        } else {
            let q = b.add(queries, tokens, Act::None);
            let a = sam_attention(b, &sa, q, rows, q, rows, queries)?;
            b.add(queries, a, Act::None)
        };
        queries = b.layer_norm(&format!("{l}.norm1"), queries, rows, d)?;
        let q = b.add(queries, tokens, Act::None);
        let k = b.add_weight(keys, kpe);
        let a = sam_attention(
            b,
            &format!("{l}.cross_attn_token_to_image"),
            q,
            rows,
            k,
            hw,
            keys,
        )?;
        queries = b.add(queries, a, Act::None);
        queries = b.layer_norm(&format!("{l}.norm2"), queries, rows, d)?;
        let (m, _) = b.linear(&format!("{l}.mlp.lin1"), queries, rows, Act::Relu)?;
        let (m, w) = b.linear(&format!("{l}.mlp.lin2"), m, rows, Act::None)?;
        if w != d {
            return Err(unsupported(format!("{l}.mlp: output width {w}")));
        }
        queries = b.add(queries, m, Act::None);
        queries = b.layer_norm(&format!("{l}.norm3"), queries, rows, d)?;
        let q = b.add(queries, tokens, Act::None);
        let k = b.add_weight(keys, kpe);
        let a = sam_attention(
            b,
            &format!("{l}.cross_attn_image_to_token"),
            k,
            hw,
            q,
            rows,
            queries,
        )?;
        keys = b.add(keys, a, Act::None);
        keys = b.layer_norm(&format!("{l}.norm4"), keys, hw, d)?;
    }
    b.label = t.into();
    let q = b.add(queries, tokens, Act::None);
    let k = b.add_weight(keys, kpe);
    let a = sam_attention(
        b,
        &format!("{t}.final_attn_token_to_image"),
        q,
        rows,
        k,
        hw,
        keys,
    )?;
    let queries = b.add(queries, a, Act::None);
    let hs = b.layer_norm(&format!("{t}.norm_final_attn"), queries, rows, d)?;

    // upscaling: ConvTranspose 2×2/2 (+ LayerNorm2d, GELU after the first)
    let up = "mask_decoder.output_upscaling";
    b.label = up.into();
    let src = b.transpose(keys, hw, d);
    let mut u = Chw {
        buf: src,
        c: d,
        h: e,
        w: e,
    };
    let mut stage = 0;
    loop {
        let name = format!("{up}.{}", if stage == 0 { 0 } else { 2 * stage + 1 });
        if !b.idx.has(&format!("{name}.weight")) {
            break;
        }
        let wd = b.dims(&format!("{name}.weight"))?;
        let [ci, co, 2, 2] = wd[..] else {
            return Err(unsupported(format!("{name}: weight shape {wd:?}")));
        };
        if ci != u.c {
            return Err(unsupported(format!(
                "{name}: {ci} input channels, got {}",
                u.c
            )));
        }
        let w = b.weight(&format!("{name}.weight"), &wd, Layout::AsIs)?;
        let bias = b.weight(&format!("{name}.bias"), &[co], Layout::AsIs)?;
        let y = b.buf(co * 4 * u.h * u.w);
        b.push(Op::ConvTranspose2x2 {
            x: u.buf,
            y,
            w,
            bias,
            cin: ci,
            cout: co,
            h: u.h,
            wd: u.w,
        });
        u = Chw {
            buf: y,
            c: co,
            h: 2 * u.h,
            w: 2 * u.w,
        };
        if stage == 0 {
            u = b.layer_norm_2d(&format!("{up}.1"), u)?;
        }
        let g = b.buf(b.len(u.buf));
        u.buf = b.push(Op::Gelu { x: u.buf, y: g });
        stage += 1;
    }
    if stage < 2 {
        return Err(unsupported(format!("{up}: {stage} upscaling stage(s)")));
    }
    let low = u.h;

    // hypernetworks: one MLP per mask token, then masks = hyper · upscaledᵀ
    let mut hyper = Vec::with_capacity(nm);
    for i in 0..nm {
        b.label = format!("mask_decoder.output_hypernetworks_mlps.{i}");
        let y = b.buf(d);
        let tok = b.push(Op::Slice {
            x: hs,
            y,
            offset: (1 + i) * d,
            len: d,
        });
        let (h, w) = sam_mlp(
            b,
            &format!("mask_decoder.output_hypernetworks_mlps.{i}"),
            tok,
        )?;
        if w != u.c {
            return Err(unsupported(format!(
                "hypernetwork {i}: width {w}, upscaled {}",
                u.c
            )));
        }
        hyper.push(h);
    }
    b.label = "mask_decoder".into();
    let y = b.buf(nm * u.c);
    let hyper = b.push(Op::Concat { xs: hyper, y });
    let ut = b.transpose(u.buf, u.c, low * low);
    let masks = b.buf(nm * low * low);
    let mut masks = b.push(Op::MatMulBt {
        a: hyper,
        b: ut,
        c: masks,
        m: nm,
        n: low * low,
        k: u.c,
    });
    // the distilled students' box prior (an ellipse in the prompt box)
    let prior = "mask_decoder.box_prior";
    if b.idx.has(&format!("{prior}.height")) {
        b.label = prior.into();
        let xs = b.weight(&format!("{prior}.x"), &[1, 1, 1, low], Layout::AsIs)?;
        let ys = b.weight(&format!("{prior}.y"), &[1, 1, low, 1], Layout::AsIs)?;
        let height = b.idx.scalar(&format!("{prior}.height"))?;
        let y = b.buf(nm * low * low);
        masks = b.push(Op::BoxPrior {
            x: masks,
            coords,
            labels,
            y,
            xs,
            ys,
            height,
            n,
            masks: nm,
            side: low,
        });
    }
    b.label = "mask_decoder.iou_prediction_head".into();
    let y = b.buf(d);
    let iou_tok = b.push(Op::Slice {
        x: hs,
        y,
        offset: 0,
        len: d,
    });
    let (iou, w) = sam_mlp(b, "mask_decoder.iou_prediction_head", iou_tok)?;
    if w != nm {
        return Err(unsupported(format!(
            "IoU head gives {w} values for {nm} masks"
        )));
    }
    Ok((builder.finish(vec![masks, iou]), nm, low))
}

// ---------------------------------------------------------------- model

/// The kernel plan of one bundle: its weights (loaded once), the encoder
/// program, and decoder programs per number of prompt points.
#[derive(Debug)]
pub struct ModelPlan {
    /// Every weight the programs read.
    pub weights: Arc<Weights>,
    /// `image` `3×S×S` → `image_embeddings` `D×E×E`.
    pub encoder: Program,
    /// The model input side `S`.
    pub input_size: usize,
    /// `[D, E, E]`.
    pub embedding: [usize; 3],
    /// Masks the decoder predicts (single-mask output first).
    pub masks: usize,
    /// Side of the low-res logits.
    pub low_res: usize,
    decoder_index: Index,
    table: WeightTable,
}

impl ModelPlan {
    /// The decoder program for `n` prompt points: inputs `image_embeddings`
    /// (`D·E·E`), `point_coords` (`2n`), `point_labels` (`n`); outputs
    /// `low_res_logits` (`masks × L × L`) and `iou_predictions` (`masks`).
    pub fn decoder(&mut self, n: usize) -> Result<Program, PlanError> {
        build_decoder(self, n)
    }
}

/// See [`ModelPlan::decoder`]. Fails if the program would need a weight
/// that was not loaded when the plan was built (it never does: every point
/// count uses the same weights).
pub fn build_decoder(plan: &mut ModelPlan, n: usize) -> Result<Program, PlanError> {
    if n == 0 {
        return Err(PlanError::Input(
            "a decoder program needs at least one point".into(),
        ));
    }
    let dd = DecoderDims {
        d: plan.embedding[0],
        e: plan.embedding[1],
        input_size: plan.input_size,
    };
    Ok(decoder_program(&plan.decoder_index, &mut plan.table, dd, n)?.0)
}

/// Builds the plan of `bundle` (graphs `encoder.onnx` and `decoder.onnx`, an
/// edgeseg LiteMedSAM-structured export) for a square input of `input_size`.
pub fn build(bundle: &Bundle, input_size: usize) -> Result<ModelPlan, PlanError> {
    let load = |g: &'static str| -> Result<Index, PlanError> {
        let proto =
            crate::onnx_weights::load_graph(bundle, g).map_err(|e| unsupported(e.to_string()))?;
        Index::new(&proto, g)
    };
    let enc_idx = load(ENCODER_GRAPH)?;
    let mut table = WeightTable::default();
    let (encoder, embedding) = encoder_program(&enc_idx, &mut table, input_size)?;
    drop(enc_idx);
    let [d, e, e2] = embedding;
    if e != e2 {
        return Err(unsupported(format!(
            "embedding grid {e}x{e2} is not square"
        )));
    }
    let mut decoder_index = load(DECODER_GRAPH)?;
    let dd = DecoderDims { d, e, input_size };
    // the box-prompt program touches every decoder weight
    let (_, masks, low_res) = decoder_program(&decoder_index, &mut table, dd, 2)?;
    // the weights are in the table now; keep only the small constants the
    // builder reads by value (epsilons, the input size)
    for inits in decoder_index.floats.values_mut() {
        for i in inits.iter_mut().filter(|i| i.data.len() > 1) {
            i.data = Vec::new();
            i.moved = true;
        }
    }
    table.frozen = true;
    let weights = Arc::new(std::mem::take(&mut table.weights));
    Ok(ModelPlan {
        weights,
        encoder,
        input_size,
        embedding,
        masks,
        low_res,
        decoder_index,
        table,
    })
}

#[cfg(test)]
mod tests {
    use super::logical;

    #[test]
    fn exporter_names_lose_only_their_counter() {
        assert_eq!(
            logical("image_encoder.layers.1.blocks.0.attn.qkv.weight_57"),
            "image_encoder.layers.1.blocks.0.attn.qkv.weight"
        );
        assert_eq!(logical("neck.0.conv_weight_5"), "neck.0.conv_weight");
        assert_eq!(logical("prompt_encoder.two_pi_3"), "prompt_encoder.two_pi");
        assert_eq!(logical("no_counter"), "no_counter");
        assert_eq!(logical("trailing_"), "trailing_");
        assert_eq!(logical("x_1a"), "x_1a");
    }
}
