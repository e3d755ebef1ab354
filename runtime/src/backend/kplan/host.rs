//! Every [`Op`] on the host with the kernels' CPU references, and the
//! [`CpuExecutor`] that runs whole programs this way.

use edgeseg_kernels::reference::nn::{self, Act, NnError, Strides};
use edgeseg_kernels::reference::{from_f16_bits, to_f16_bits};

use super::{check_inputs, BufId, Executor, Op, PlanError, Program, Weights};

fn buf(bufs: &[Vec<f32>], b: BufId) -> &[f32] {
    &bufs[b]
}

fn shape_err(msg: String) -> NnError {
    NnError::BadShape(msg)
}

/// Gathers an attention operand into contiguous `[batch, head, token, dim]`
/// f16 (what the GPU path uploads).
fn gather_f16(x: &[f32], v: super::View, s: nn::AttnShape, n: usize) -> Result<Vec<u16>, NnError> {
    let mut out = Vec::with_capacity(s.batch * s.heads * n * s.dim);
    for b in 0..s.batch {
        for h in 0..s.heads {
            for t in 0..n {
                let at = v.offset + b * v.strides.batch + h * v.strides.head + t * v.strides.token;
                let row = x.get(at..at + s.dim).ok_or(NnError::BadLength {
                    what: "attention operand",
                    got: x.len(),
                    expected: at + s.dim,
                })?;
                out.extend_from_slice(row);
            }
        }
    }
    Ok(to_f16_bits(&out))
}

/// Runs one op with the CPU references: reads its inputs from `bufs` and
/// returns its output. Inputs must hold their declared lengths.
pub fn run_op_host(op: &Op, bufs: &[Vec<f32>], w: &Weights) -> Result<Vec<f32>, NnError> {
    let wt = |id: usize| w.tensors[id].data.as_slice();
    Ok(match op {
        Op::Conv {
            x,
            w: cw,
            scale,
            shift,
            shape,
            act,
            ..
        } => nn::conv2d_bn_act(buf(bufs, *x), wt(*cw), wt(*scale), wt(*shift), *shape, *act)?,
        Op::Gemm {
            a,
            w: gw,
            bias,
            m,
            n,
            k,
            act,
            ..
        } => nn::gemm_bias_act(buf(bufs, *a), wt(*gw), bias.map(wt), *m, *n, *k, *act)?,
        Op::MatMulBt { a, b, m, n, k, .. } => {
            nn::gemm_bias_act(buf(bufs, *a), buf(bufs, *b), None, *m, *n, *k, Act::None)?
        }
        Op::LayerNorm {
            x,
            gamma,
            beta,
            rows,
            c,
            eps,
            ..
        } => nn::layer_norm(buf(bufs, *x), *rows, *c, wt(*gamma), wt(*beta), *eps)?,
        Op::LayerNorm2d {
            x,
            gamma,
            beta,
            c,
            hw,
            eps,
            ..
        } => nn::layer_norm2d(buf(bufs, *x), 1, *c, *hw, wt(*gamma), wt(*beta), *eps)?,
        Op::Add { a, b, act, .. } => nn::add_act(buf(bufs, *a), buf(bufs, *b), *act)?,
        Op::AddWeight { x, w: aw, .. } => nn::add_broadcast(buf(bufs, *x), wt(*aw))?,
        Op::Gelu { x, .. } => nn::gelu(buf(bufs, *x)),
        Op::Transpose { x, rows, cols, .. } => nn::transpose(buf(bufs, *x), *rows, *cols)?,
        Op::WindowPartition { x, h, w, c, ws, .. } => {
            nn::window_partition(buf(bufs, *x), 1, *h, *w, *c, *ws)?
        }
        Op::WindowReverse { x, h, w, c, ws, .. } => {
            nn::window_reverse(buf(bufs, *x), 1, *h, *w, *c, *ws)?
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
        } => {
            let s = *shape;
            let qh = gather_f16(buf(bufs, *q), *qv, s, s.nq)?;
            let kh = gather_f16(buf(bufs, *k), *kv, s, s.nk)?;
            let vh = gather_f16(buf(bufs, *v), *vv, s, s.nk)?;
            let mut o = vec![0u16; s.batch * s.nq * s.heads * s.dim];
            nn::attention_f16(
                s,
                &qh,
                Strides::bhnd(s.heads, s.nq, s.dim),
                &kh,
                Strides::bhnd(s.heads, s.nk, s.dim),
                &vh,
                Strides::bhnd(s.heads, s.nk, s.dim),
                bias.map(wt),
                1.0,
                &mut o,
                Strides::bnhd(s.heads, s.nq, s.dim),
            )?;
            from_f16_bits(&o)
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
        } => nn::conv_transpose2x2(buf(bufs, *x), wt(*cw), wt(*bias), 1, *cin, *cout, *h, *wd)?,
        Op::Slice { x, offset, len, .. } => {
            let x = buf(bufs, *x);
            x.get(*offset..offset + len)
                .ok_or(NnError::BadLength {
                    what: "slice x",
                    got: x.len(),
                    expected: offset + len,
                })?
                .to_vec()
        }
        Op::Concat { xs, .. } => xs
            .iter()
            .flat_map(|&b| buf(bufs, b).iter().copied())
            .collect(),
        Op::PromptTokens {
            coords,
            labels,
            gauss,
            label_table,
            output_tokens,
            input_size,
            n,
            d,
            ..
        } => prompt_tokens(
            buf(bufs, *coords),
            buf(bufs, *labels),
            wt(*gauss),
            wt(*label_table),
            wt(*output_tokens),
            *input_size,
            *n,
            *d,
        )?,
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
        } => nn::box_prior_add(
            buf(bufs, *x),
            wt(*xs),
            wt(*ys),
            nn::BoxPriorParams::from_points(buf(bufs, *coords), buf(bufs, *labels), *height)?,
            *masks,
            *side,
        )?,
    })
}

/// The exported graph's prompt encoder, in its f32 operation order:
/// `c = ((p + 0.5) / size)·2 − 1`, `e = (c·G)·2π`, `pe = [sin e, cos e]`,
/// `out = pe·clip(label + 1, 0, 1) + table[label + 1]`, after the output tokens.
#[allow(clippy::too_many_arguments)]
fn prompt_tokens(
    coords: &[f32],
    labels: &[f32],
    gauss: &[f32],
    table: &[f32],
    tokens: &[f32],
    size: f32,
    n: usize,
    d: usize,
) -> Result<Vec<f32>, NnError> {
    let half = d / 2;
    if coords.len() != 2 * n || labels.len() != n || gauss.len() != 2 * half || table.len() != 5 * d
    {
        return Err(shape_err(format!(
            "prompt tokens: {n} points, {} coords, {} labels, d {d}",
            coords.len(),
            labels.len()
        )));
    }
    let mut out = tokens.to_vec();
    let two_pi = 2.0 * std::f32::consts::PI;
    for p in 0..n {
        let l1 = labels[p] + 1.0;
        if !(0.0..5.0).contains(&l1) || l1.fract() != 0.0 {
            return Err(shape_err(format!("point label {} is not -1..3", labels[p])));
        }
        let keep = l1.clamp(0.0, 1.0);
        let idx = l1 as usize;
        let c = |i: usize| ((coords[2 * p + i] + 0.5) / size) * 2.0 - 1.0;
        let (cx, cy) = (c(0), c(1));
        let mut row = vec![0f32; d];
        for j in 0..half {
            let e = (cx * gauss[j] + cy * gauss[half + j]) * two_pi;
            row[j] = e.sin();
            row[half + j] = e.cos();
        }
        for (j, v) in row.iter_mut().enumerate() {
            *v = *v * keep + table[idx * d + j];
        }
        out.extend_from_slice(&row);
    }
    Ok(out)
}

/// Runs programs with the CPU references: the executable specification of
/// the plan (slow: f64 accumulation in naive loops, single-threaded).
#[derive(Debug)]
pub struct CpuExecutor {
    weights: std::sync::Arc<Weights>,
}

impl CpuExecutor {
    /// An executor over `weights`.
    pub fn new(weights: std::sync::Arc<Weights>) -> Self {
        Self { weights }
    }
}

impl Executor for CpuExecutor {
    fn name(&self) -> &str {
        "reference-cpu"
    }

    fn run(&mut self, program: &Program, inputs: &[&[f32]]) -> Result<Vec<Vec<f32>>, PlanError> {
        check_inputs(program, inputs)?;
        let mut bufs: Vec<Vec<f32>> = vec![Vec::new(); program.buf_len.len()];
        for (&b, x) in program.inputs.iter().zip(inputs) {
            bufs[b] = x.to_vec();
        }
        for (i, (step, frees)) in program.steps.iter().zip(&program.frees).enumerate() {
            let y =
                run_op_host(&step.op, &bufs, &self.weights).map_err(|source| PlanError::Op {
                    step: i,
                    label: step.label.clone(),
                    source,
                })?;
            let out = step.op.output();
            if y.len() != program.buf_len[out] {
                return Err(PlanError::Op {
                    step: i,
                    label: step.label.clone(),
                    source: NnError::BadLength {
                        what: "op output",
                        got: y.len(),
                        expected: program.buf_len[out],
                    },
                });
            }
            bufs[out] = y;
            for &b in frees {
                bufs[b] = Vec::new();
            }
        }
        Ok(program
            .outputs
            .iter()
            .map(|&b| std::mem::take(&mut bufs[b]))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::kplan::{Step, View, Weight};
    use edgeseg_kernels::reference::nn::AttnShape;

    fn weights(ts: &[&[f32]]) -> Weights {
        Weights {
            tensors: ts
                .iter()
                .map(|t| Weight {
                    source: "test".into(),
                    dims: vec![t.len()],
                    data: t.to_vec(),
                })
                .collect(),
        }
    }

    #[test]
    fn transpose_add_weight_slice_concat() {
        let w = weights(&[&[10.0, 20.0]]);
        let bufs = vec![vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], vec![7.0]];
        let t = Op::Transpose {
            x: 0,
            y: 2,
            rows: 2,
            cols: 3,
        };
        assert_eq!(
            run_op_host(&t, &bufs, &w).unwrap(),
            vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
        );
        let a = Op::AddWeight { x: 0, w: 0, y: 2 };
        assert_eq!(
            run_op_host(&a, &bufs, &w).unwrap(),
            vec![11.0, 22.0, 13.0, 24.0, 15.0, 26.0]
        );
        let bad = Op::AddWeight { x: 1, w: 0, y: 2 };
        assert!(run_op_host(&bad, &bufs, &w).is_err());
        let s = Op::Slice {
            x: 0,
            y: 2,
            offset: 4,
            len: 2,
        };
        assert_eq!(run_op_host(&s, &bufs, &w).unwrap(), vec![5.0, 6.0]);
        let over = Op::Slice {
            x: 0,
            y: 2,
            offset: 5,
            len: 2,
        };
        assert!(run_op_host(&over, &bufs, &w).is_err());
        let c = Op::Concat {
            xs: vec![1, 0],
            y: 2,
        };
        assert_eq!(run_op_host(&c, &bufs, &w).unwrap().len(), 7);
    }

    #[test]
    fn attention_views_pick_q_k_v_out_of_one_packed_buffer() {
        // 1 window, 2 tokens, 2 heads of dim 1: packed rows [q0 q1 | k0 k1 | v0 v1]
        let qkv = vec![
            1.0, 0.0, 0.0, 1.0, 2.0, -2.0, //
            0.0, 1.0, 1.0, 0.0, 4.0, -4.0,
        ];
        let st = Strides {
            batch: 12,
            head: 1,
            token: 6,
        };
        let v = |offset| View {
            offset,
            strides: st,
        };
        let shape = AttnShape {
            batch: 1,
            heads: 2,
            nq: 2,
            nk: 2,
            dim: 1,
        };
        let op = Op::Attention {
            q: 0,
            qv: v(0),
            k: 0,
            kv: v(2),
            v: 0,
            vv: v(4),
            o: 1,
            shape,
            bias: None,
        };
        let o = run_op_host(&op, &[qkv], &Weights::default()).unwrap();
        // head 0: keys (0, 1); query 0 (q=1) prefers key 1 → v nearer 4
        let e = std::f64::consts::E;
        let w1 = e / (1.0 + e);
        let want00 = 2.0 * (1.0 - w1) + 4.0 * w1;
        assert!((f64::from(o[0]) - want00).abs() < 2e-3, "{o:?}");
        // output is [token, head]: o[1] is token 0 of head 1 (keys (1, 0), q=0: uniform)
        assert!((o[1] + 3.0).abs() < 2e-3, "{o:?}");
        assert_eq!(o.len(), 4);
    }

    #[test]
    fn prompt_tokens_follow_the_label_convention() {
        let d = 4;
        let gauss = [0.0f32; 4]; // sin 0 = 0, cos 0 = 1
        let mut table = vec![0f32; 5 * d];
        for (i, v) in table.iter_mut().enumerate() {
            *v = (i / d) as f32 * 10.0;
        }
        let tokens = [9.0f32; 4];
        let y = prompt_tokens(
            &[3.0, 4.0, 0.0, 0.0],
            &[2.0, -1.0],
            &gauss,
            &table,
            &tokens,
            256.0,
            2,
            d,
        )
        .unwrap();
        assert_eq!(&y[..4], &tokens);
        // label 2 (box corner): pe [0 0 1 1] + table[3] = 30
        assert_eq!(&y[4..8], &[30.0, 30.0, 31.0, 31.0]);
        // label −1 (padding): pe dropped, table[0] = not-a-point
        assert_eq!(&y[8..12], &[0.0; 4]);
        assert!(prompt_tokens(&[0.0; 2], &[7.0], &gauss, &table, &tokens, 256.0, 1, d).is_err());
    }

    #[test]
    fn programs_free_dead_buffers_and_keep_outputs() {
        let mut p = Program {
            buf_len: vec![4, 4, 4, 4],
            inputs: vec![0],
            outputs: vec![3],
            ..Default::default()
        };
        let step = |op| Step {
            op,
            label: String::new(),
        };
        p.steps = vec![
            step(Op::Gelu { x: 0, y: 1 }),
            step(Op::Gelu { x: 1, y: 2 }),
            step(Op::Add {
                a: 2,
                b: 0,
                y: 3,
                act: Act::None,
            }),
        ];
        p.finish();
        assert_eq!(p.frees, vec![vec![], vec![1], vec![0, 2]]);
        assert_eq!(p.peak_elements(), 12);
        let mut ex = CpuExecutor::new(std::sync::Arc::new(Weights::default()));
        let out = ex.run(&p, &[&[0.0, 1.0, -1.0, 2.0]]).unwrap();
        assert_eq!(out.len(), 1);
        assert!((out[0][1] - (1.0 + nn::gelu(&nn::gelu(&[1.0]))[0])).abs() < 1e-6);
        assert!(ex.run(&p, &[&[0.0; 3]]).is_err());
    }
}
