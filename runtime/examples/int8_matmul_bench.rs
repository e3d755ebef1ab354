//! Is tract's int8 path faster than its f32 path on this machine? (Issue 9.)
//!
//! Builds three ONNX graphs for one `[M, K] × [K, N]` product with a constant weight and
//! runs them on tract (optimised plan, one thread), checking each against a reference
//! computed here and timing each (median of 11 runs after 3 warm-up runs, same process):
//!
//! - `f32`: `MatMul(x, W)`;
//! - `matmul-integer`: `QuantizeLinear(x)` (per-tensor u8) → `MatMulInteger` with the i8
//!   weight → `Cast` → `Mul` by the per-column scale `s_x · s_w[n]`. Per-column scales are
//!   applied by an ordinary `Mul`, so no per-channel QDQ operator is involved;
//! - `qlinear-matmul`: `QuantizeLinear(x)` → `QLinearMatMul` with a per-column `b_scale`
//!   (1-D, as ONNX allows) → `DequantizeLinear`.
//!
//! `cargo run --release -p edgeseg-runtime --example int8_matmul_bench`
//! (prints one table row per shape; docs/results/quantization.md quotes it).

use std::time::Instant;

use tract_onnx::pb;
use tract_onnx::prelude::*;

type Dt = pb::tensor_proto::DataType;

fn vi(name: &str, elem: Dt, dims: &[usize]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            denotation: String::new(),
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: elem as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension {
                            denotation: String::new(),
                            value: Some(Value::DimValue(d as i64)),
                        })
                        .collect(),
                }),
            })),
        }),
        ..Default::default()
    }
}

fn f32_tensor(name: &str, dims: &[usize], v: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: Dt::Float as i32,
        name: name.into(),
        float_data: v.to_vec(),
        ..Default::default()
    }
}

fn bytes_tensor(name: &str, dims: &[usize], elem: Dt, raw: Vec<u8>) -> pb::TensorProto {
    pb::TensorProto {
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: elem as i32,
        name: name.into(),
        raw_data: raw,
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str, attrs: Vec<pb::AttributeProto>) -> pb::NodeProto {
    pb::NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: output.into(),
        op_type: op.into(),
        attribute: attrs,
        ..Default::default()
    }
}

fn model(
    nodes: Vec<pb::NodeProto>,
    inits: Vec<pb::TensorProto>,
    m: usize,
    k: usize,
    n: usize,
) -> pb::ModelProto {
    pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(pb::GraphProto {
            node: nodes,
            name: "int8_bench".into(),
            initializer: inits,
            input: vec![vi("x", Dt::Float, &[m, k])],
            output: vec![vi("y", Dt::Float, &[m, n])],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Deterministic pseudo-random values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

type Plan = Arc<TypedRunnableModel>;

fn plan(model: &pb::ModelProto) -> TractResult<Plan> {
    tract_onnx::onnx()
        .model_for_proto_model(model)?
        .into_optimized()?
        .into_runnable()
}

fn run(p: &Plan, x: &Tensor) -> TractResult<Vec<f32>> {
    let out = p.spawn()?.run(tvec!(x.clone().into()))?;
    Ok(out[0].try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
}

/// Median over 11 runs of one reused plan state, after 3 warm-up runs.
fn median_ms(p: &Plan, x: &Tensor) -> TractResult<f64> {
    let mut state = p.spawn()?;
    for _ in 0..3 {
        state.run(tvec!(x.clone().into()))?;
    }
    let mut t = Vec::new();
    for _ in 0..11 {
        let s = Instant::now();
        state.run(tvec!(x.clone().into()))?;
        t.push(s.elapsed().as_secs_f64() * 1e3);
    }
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn main() -> TractResult<()> {
    println!("| M × K × N | f32 ms | MatMulInteger ms (ratio to f32) | QLinearMatMul ms (ratio) | QLinearMatMul max err vs f32 | MatMulInteger max err vs integer ref / vs f32 |");
    println!("|---|---|---|---|---|---|");
    let shapes = [(1024, 96, 384), (1024, 384, 96), (4096, 256, 1024)];
    for ((m, k, n), signed) in shapes.into_iter().flat_map(|c| [(c, false), (c, true)]) {
        let act = if signed { "i8" } else { "u8" };
        let x = values(m * k, 1);
        let w = values(k * n, 2);
        // weights: symmetric int8 per output column
        let mut sw = vec![0f32; n];
        for (col, s) in sw.iter_mut().enumerate() {
            let amax = (0..k).map(|r| w[r * n + col].abs()).fold(0.0, f32::max);
            *s = if amax > 0.0 { amax / 127.0 } else { 1.0 };
        }
        let wq: Vec<i8> = (0..k * n)
            .map(|i| (w[i] / sw[i % n]).round().clamp(-127.0, 127.0) as i8)
            .collect();
        // activations: per-tensor u8 with zero point (min-max over this input)
        let (lo, hi) = x
            .iter()
            .fold((0f32, 0f32), |(l, h), &v| (l.min(v), h.max(v)));
        // u8 with a zero point (asymmetric), or i8 symmetric (zero point 0):
        // tract's x86 int8 kernels are i8 × i8.
        let (sx, zx, qmin, qmax, act_dt) = if signed {
            (hi.max(-lo) / 127.0, 0f32, -128f32, 127f32, Dt::Int8)
        } else {
            let sx = (hi - lo) / 255.0;
            (
                sx,
                (-lo / sx).round().clamp(0.0, 255.0),
                0.0,
                255.0,
                Dt::Uint8,
            )
        };
        let zx_byte = zx as u8;
        let xt = tract_ndarray::Array2::from_shape_vec((m, k), x.clone())?.into_tensor();

        let f32_model = model(
            vec![node("MatMul", &["x", "w"], "y", vec![])],
            vec![f32_tensor("w", &[k, n], &w)],
            m,
            k,
            n,
        );
        let q_inits = || {
            vec![
                f32_tensor("sx", &[], &[sx]),
                bytes_tensor("zx", &[], act_dt, vec![zx_byte]),
                bytes_tensor(
                    "wq",
                    &[k, n],
                    Dt::Int8,
                    wq.iter().map(|&v| v as u8).collect(),
                ),
            ]
        };
        let quantize = node("QuantizeLinear", &["x", "sx", "zx"], "xq", vec![]);
        let col_scale: Vec<f32> = sw.iter().map(|s| s * sx).collect();
        let mut mi_inits = q_inits();
        mi_inits.push(bytes_tensor("wz", &[], Dt::Int8, vec![0]));
        mi_inits.push(f32_tensor("cs", &[n], &col_scale));
        let cast_to_float = pb::AttributeProto {
            name: "to".into(),
            r#type: pb::attribute_proto::AttributeType::Int as i32,
            i: Dt::Float as i64,
            ..Default::default()
        };
        let mi_model = model(
            vec![
                quantize.clone(),
                node("MatMulInteger", &["xq", "wq", "zx", "wz"], "acc", vec![]),
                node("Cast", &["acc"], "accf", vec![cast_to_float]),
                node("Mul", &["accf", "cs"], "y", vec![]),
            ],
            mi_inits,
            m,
            k,
            n,
        );
        // QLinearMatMul: output quantized per tensor from the f32 result's range.
        let reference: Vec<f32> = {
            let p = plan(&f32_model)?;
            run(&p, &xt)?
        };
        let (ylo, yhi) = reference
            .iter()
            .fold((0f32, 0f32), |(l, h), &v| (l.min(v), h.max(v)));
        let sy = (yhi - ylo) / 255.0;
        let zy = (-ylo / sy).round().clamp(0.0, 255.0) as u8;
        let mut ql_inits = q_inits();
        ql_inits.push(f32_tensor("sw", &[n], &sw));
        ql_inits.push(bytes_tensor("wz", &[n], Dt::Int8, vec![0; n]));
        ql_inits.push(f32_tensor("sy", &[], &[sy]));
        ql_inits.push(bytes_tensor("zy", &[], Dt::Uint8, vec![zy]));
        let ql_model = model(
            vec![
                quantize,
                node(
                    "QLinearMatMul",
                    &["xq", "sx", "zx", "wq", "sw", "wz", "sy", "zy"],
                    "yq",
                    vec![],
                ),
                node("DequantizeLinear", &["yq", "sy", "zy"], "y", vec![]),
            ],
            ql_inits,
            m,
            k,
            n,
        );

        // The integer reference of the MatMulInteger graph, computed here.
        let xq: Vec<i32> = x
            .iter()
            .map(|&v| ((v / sx).round_ties_even() + zx).clamp(qmin, qmax) as i32)
            .collect();
        let mut int_ref = vec![0f32; m * n];
        for r in 0..m {
            for col in 0..n {
                let mut acc = 0i32;
                for i in 0..k {
                    acc += (xq[r * k + i] - zx as i32) * wq[i * n + col] as i32;
                }
                int_ref[r * n + col] = acc as f32 * col_scale[col];
            }
        }

        if std::env::var_os("INT8_BENCH_PLAN").is_some() {
            for (what, g) in [("f32", &f32_model), ("MatMulInteger", &mi_model)] {
                let opt = tract_onnx::onnx()
                    .model_for_proto_model(g)?
                    .into_optimized()?;
                let ops: Vec<String> = opt
                    .nodes()
                    .iter()
                    .map(|n| format!("{}", n.op().name()))
                    .collect();
                eprintln!("{what} {m}x{k}x{n} {act}: {}", ops.join(" → "));
            }
        }
        let f32_plan = plan(&f32_model)?;
        let mi_plan = plan(&mi_model)?;
        let mi_out = run(&mi_plan, &xt)?;
        let mi_err_int = max_abs_diff(&mi_out, &int_ref);
        let mi_err_f32 = max_abs_diff(&mi_out, &reference);
        let t_f32 = median_ms(&f32_plan, &xt)?;
        let t_mi = median_ms(&mi_plan, &xt)?;
        let ql = match plan(&ql_model) {
            Ok(p) => {
                let out = run(&p, &xt)?;
                let err = max_abs_diff(&out, &reference);
                let t = median_ms(&p, &xt)?;
                format!("{t:.3} ({:.2}×)| {err:.4} (output step {sy:.4})", t / t_f32)
            }
            Err(e) => format!("not loaded: {e} | –"),
        };
        println!(
            "| {m} × {k} × {n}, {act} activations | {t_f32:.3} | {t_mi:.3} ({:.2}×) | {ql} | {mi_err_int:.2e} / {mi_err_f32:.4} |",
            t_mi / t_f32,
        );
    }
    Ok(())
}
