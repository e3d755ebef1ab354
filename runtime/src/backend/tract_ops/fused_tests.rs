//! Each op of [`super::fuse_decluttered`] against the tract ops it replaces,
//! over random shapes and values (proptest): the models are built from
//! tract's own ops, fused, and both are run, plain and optimized.

use super::*;
use proptest::prelude::*;
use tract_onnx::tract_core::ops::cnn::{Conv, Deconv, KernelFormat, PaddingSpec, PoolSpec};
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::math::{Mul, Sub};
use tract_onnx::tract_core::ops::nn::{DataFormat, Reduce, Reducer, RmsNorm};

/// Deterministic values in about [-2, 2] from a seed.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

fn tensor(shape: &[usize], seed: u64) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_shape(shape, &values(n, seed)).expect("shape")
}

fn run(model: &TypedModel, input: &Tensor) -> Vec<f32> {
    let out = model
        .clone()
        .into_runnable()
        .expect("plan")
        .run(tvec!(input.clone().into()))
        .expect("run");
    out[0]
        .try_as_plain_ram()
        .expect("plain")
        .as_slice::<f32>()
        .expect("f32")
        .to_vec()
}

/// Runs `model` plain, fused, and fused then optimized on `input`, checks
/// that exactly `expect` replacements happened, and compares.
fn check(model: TypedModel, input: Tensor, expect: Fused, tol: f32) {
    let want = run(&model, &input);
    let mut fused = model.clone();
    let got = fuse_decluttered(&mut fused).expect("fuse");
    assert_eq!(got, expect);
    let direct = run(&fused, &input);
    let optimized = run(&fused.clone().into_optimized().expect("optimize"), &input);
    assert_eq!(direct.len(), want.len());
    for (out, name) in [(&direct, "fused"), (&optimized, "fused+optimized")] {
        for (i, (g, w)) in out.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= tol * (1.0 + w.abs()),
                "{name} [{i}]: {g} vs tract's {w}"
            );
        }
    }
}

thread_local! {
    /// Batch size of the NCHW models (1 unless a test sets it).
    static BATCH: std::cell::Cell<usize> = const { std::cell::Cell::new(1) };
}

fn batch_size() -> usize {
    BATCH.with(|b| b.get())
}

fn conv_transpose_model(
    batch: bool,
    c_in: usize,
    c_out: usize,
    h: usize,
    w: usize,
) -> (TypedModel, Tensor) {
    let mut m = TypedModel::default();
    let shape: Vec<usize> = if batch {
        vec![batch_size(), c_in, h, w]
    } else {
        vec![c_in, h, w]
    };
    let x = m.add_source("x", f32::fact(&shape)).unwrap();
    let k = m.add_const("k", tensor(&[c_out, c_in, 2, 2], 3)).unwrap();
    let b = m.add_const("b", tensor(&[c_out], 4)).unwrap();
    let op = Deconv {
        pool_spec: PoolSpec {
            data_format: if batch {
                DataFormat::NCHW
            } else {
                DataFormat::CHW
            },
            kernel_shape: tvec!(2, 2),
            padding: PaddingSpec::Valid,
            dilations: None,
            strides: Some(tvec!(2, 2)),
            input_channels: c_in,
            output_channels: c_out,
        },
        kernel_format: KernelFormat::OIHW,
        adjustments: tvec!(0, 0),
        group: 1,
    };
    let y = m.wire_node("deconv", op, &[x, k, b]).unwrap();
    m.select_output_outlets(&y).unwrap();
    (m, tensor(&shape, 5))
}

/// A 3×3 conv, padding 1: depthwise over `c_in` channels (`c_out` ignored)
/// or dense `c_in → c_out`.
fn conv3x3_model(
    batch: bool,
    depthwise: bool,
    (c_in, c_out): (usize, usize),
    (h, w): (usize, usize),
    stride: usize,
) -> (TypedModel, Tensor) {
    let (c_out, per_out, group) = if depthwise {
        (c_in, 1, c_in)
    } else {
        (c_out, c_in, 1)
    };
    let mut m = TypedModel::default();
    let shape: Vec<usize> = if batch {
        vec![batch_size(), c_in, h, w]
    } else {
        vec![c_in, h, w]
    };
    let x = m.add_source("x", f32::fact(&shape)).unwrap();
    let k = m
        .add_const("k", tensor(&[c_out, per_out, 3, 3], 6))
        .unwrap();
    let b = m.add_const("b", tensor(&[c_out], 7)).unwrap();
    let op = Conv {
        pool_spec: PoolSpec {
            data_format: if batch {
                DataFormat::NCHW
            } else {
                DataFormat::CHW
            },
            kernel_shape: tvec!(3, 3),
            padding: PaddingSpec::Explicit(tvec!(1, 1), tvec!(1, 1)),
            dilations: Some(tvec!(1, 1)),
            strides: Some(tvec!(stride, stride)),
            input_channels: c_in,
            output_channels: c_out,
        },
        kernel_fmt: KernelFormat::OIHW,
        group,
        q_params: None,
    };
    let y = m.wire_node("conv", op, &[x, k, b]).unwrap();
    m.select_output_outlets(&y).unwrap();
    (m, tensor(&shape, 8))
}

fn depthwise_model(
    batch: bool,
    c: usize,
    h: usize,
    w: usize,
    stride: usize,
) -> (TypedModel, Tensor) {
    conv3x3_model(batch, true, (c, c), (h, w), stride)
}

fn bin(
    m: &mut TypedModel,
    name: &str,
    op: Box<dyn BinMiniOp>,
    a: OutletId,
    b: OutletId,
) -> OutletId {
    m.wire_node(name, TypedBinOp(op, None), &[a, b]).unwrap()[0]
}

use tract_onnx::tract_core::ops::binary::BinMiniOp;

fn layer_norm_model(shape: &[usize], axis: usize) -> (TypedModel, Tensor) {
    let mut m = TypedModel::default();
    let rank = shape.len();
    let n = shape[axis];
    let x = m.add_source("x", f32::fact(shape)).unwrap();
    let s = m
        .wire_node("sum", Reduce::new(tvec!(axis), Reducer::Sum), &[x])
        .unwrap()[0];
    let ones = vec![1usize; rank];
    let k = m
        .add_const("k", Tensor::from_shape(&ones, &[1.0 / n as f32]).unwrap())
        .unwrap();
    let mean = bin(&mut m, "mean", Box::new(Mul), s, k);
    let d = bin(&mut m, "sub", Box::new(Sub), x, mean);
    let r = m
        .wire_node(
            "rms",
            RmsNorm {
                axis,
                eps: tensor0(1e-5f32).into_arc_tensor(),
            },
            &[d],
        )
        .unwrap()[0];
    let mut along = ones.clone();
    along[axis] = n;
    let g = m.add_const("g", tensor(&along, 9)).unwrap();
    let bshift = m.add_const("b", tensor(&along, 10)).unwrap();
    let y = bin(&mut m, "scale", Box::new(Mul), r, g);
    let y = bin(&mut m, "shift", Box::new(Add), y, bshift);
    m.select_output_outlets(&[y]).unwrap();
    (m, tensor(shape, 11))
}

fn few_rows_model(m_rows: usize, k: usize, b: usize, n: usize) -> (TypedModel, Tensor) {
    let mut m = TypedModel::default();
    let a = batch_size();
    let x = m.add_source("x", f32::fact([a, k, b, n])).unwrap();
    let h = m.add_const("h", tensor(&[m_rows, k], 12)).unwrap();
    let op = EinSum {
        axes: few_rows_matmul::EXPRESSION.parse().unwrap(),
        operating_dt: f32::datum_type(),
        q_params: None,
    };
    let y = m.wire_node("einsum", op, &[h, x]).unwrap();
    m.select_output_outlets(&y).unwrap();
    (m, tensor(&[a, k, b, n], 13))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn conv_transpose_matches_tract(batch: bool, c_in in 1usize..20, c_out in 1usize..20,
                                    h in 1usize..12, w in 1usize..40) {
        let (m, x) = conv_transpose_model(batch, c_in, c_out, h, w);
        check(m, x, Fused { conv_transpose: 1, ..Fused::default() }, 1e-5);
    }

    #[test]
    fn depthwise_matches_tract(batch: bool, c in 1usize..12, h in 1usize..20,
                               w in 1usize..40, stride in 1usize..3) {
        let (m, x) = depthwise_model(batch, c, h, w, stride);
        check(m, x, Fused { conv3x3: 1, ..Fused::default() }, 1e-5);
    }

    #[test]
    fn dense_conv3x3_matches_tract(batch: bool, c_in in 1usize..=conv3x3::MAX_DENSE_INPUT_CHANNELS,
                                   c_out in 1usize..8, h in 1usize..20, w in 1usize..40,
                                   stride in 1usize..3) {
        let (m, x) = conv3x3_model(batch, false, (c_in, c_out), (h, w), stride);
        check(m, x, Fused { conv3x3: 1, ..Fused::default() }, 1e-5);
    }

    #[test]
    fn few_rows_matmul_matches_tract(m_rows in 1usize..6, k in 1usize..40,
                                     b in 1usize..9, n in 1usize..300) {
        let (m, x) = few_rows_model(m_rows, k, b, n);
        check(m, x, Fused { few_rows_matmul: 1, ..Fused::default() }, 1e-5);
    }

    #[test]
    fn layer_norm_matches_tract(d0 in 1usize..5, d1 in 1usize..40, d2 in 1usize..30,
                                axis in 0usize..3) {
        let (m, x) = layer_norm_model(&[d0, d1, d2], axis);
        check(m, x, Fused { layer_norm: 1, ..Fused::default() }, 1e-4);
    }
}

#[test]
fn conv_transpose_in_several_blocks_of_rows() {
    // narrow inputs: blocks of 128 and 114 rows, the last one partial
    for (batch, c_in, c_out, h, w) in [(true, 3, 2, 300, 8), (false, 2, 3, 129, 9)] {
        let (m, x) = conv_transpose_model(batch, c_in, c_out, h, w);
        check(
            m,
            x,
            Fused {
                conv_transpose: 1,
                ..Fused::default()
            },
            1e-5,
        );
    }
}

#[test]
fn batches_of_two() {
    BATCH.with(|b| b.set(2));
    let (m, x) = conv_transpose_model(true, 3, 5, 7, 9);
    check(
        m,
        x,
        Fused {
            conv_transpose: 1,
            ..Fused::default()
        },
        1e-5,
    );
    for (depthwise, stride) in [(true, 1), (true, 2), (false, 1), (false, 2)] {
        let (m, x) = conv3x3_model(true, depthwise, (4, 3), (9, 11), stride);
        check(
            m,
            x,
            Fused {
                conv3x3: 1,
                ..Fused::default()
            },
            1e-5,
        );
    }
    let (m, x) = few_rows_model(4, 12, 3, 70);
    check(
        m,
        x,
        Fused {
            few_rows_matmul: 1,
            ..Fused::default()
        },
        1e-5,
    );
    BATCH.with(|b| b.set(1));
}

#[test]
fn other_geometries_are_left_to_tract() {
    // a 3×3 stride-1 transposed convolution overlaps taps: not ours
    let (mut m, _) = conv_transpose_model(true, 4, 4, 5, 5);
    let id = m
        .nodes()
        .iter()
        .position(|n| n.op_as::<Deconv>().is_some())
        .unwrap();
    let node = &mut m.nodes_mut()[id];
    let mut op = node.op_as::<Deconv>().unwrap().clone();
    op.pool_spec.strides = Some(tvec!(1, 1));
    node.op = Box::new(op);
    assert_eq!(fuse_decluttered(&mut m.clone()).unwrap(), Fused::default());
    // a depthwise conv with padding 0 is not ours either
    let (mut m, _) = depthwise_model(false, 3, 6, 6, 1);
    let id = m
        .nodes()
        .iter()
        .position(|n| n.op_as::<Conv>().is_some())
        .unwrap();
    let node = &mut m.nodes_mut()[id];
    let mut op = node.op_as::<Conv>().unwrap().clone();
    op.pool_spec.padding = PaddingSpec::Valid;
    node.op = Box::new(op);
    assert_eq!(fuse_decluttered(&mut m).unwrap(), Fused::default());
    // a dense conv over many input channels stays tract's im2col matmul
    let many = conv3x3::MAX_DENSE_INPUT_CHANNELS + 1;
    let (mut m, _) = conv3x3_model(true, false, (many, 4), (5, 5), 2);
    assert_eq!(fuse_decluttered(&mut m).unwrap(), Fused::default());
}
