//! Pins tract's behaviour on per-channel QDQ. The project notes say tract's
//! QuantizeLinear/DequantizeLinear read only the first scale and zero point.
//! Measured here with tract 0.23.9: a per-channel `DequantizeLinear` of an int8
//! graph *input* is computed correctly (every row uses its own scale). The
//! trap must therefore live in other forms (QuantizeLinear, constant weights
//! folded at load); those are still to be pinned by the quantization work.
//!
//! The quantization work must not emit per-channel QDQ for tract; this test
//! makes the defect visible. If it starts failing, tract has changed: check
//! whether per-channel QDQ is now correct, then update this test and the
//! quantization notes (ARCHITECTURE.md, docs) instead of deleting it.

use tract_onnx::pb;
use tract_onnx::prelude::*;

const ROWS: usize = 2;
const COLS: usize = 3;
const SCALES: [f32; ROWS] = [0.5, 4.0];
const ZERO_POINTS: [i8; ROWS] = [0, 3];

fn vi(name: &str, elem: pb::tensor_proto::DataType) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            denotation: String::new(),
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: elem as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: [ROWS, COLS]
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

/// `y = DequantizeLinear(q, scales, zero_points, axis=0)` with `q` int8 `[2, 3]`.
fn per_channel_dequantize() -> pb::ModelProto {
    let scales = pb::TensorProto {
        dims: vec![ROWS as i64],
        data_type: pb::tensor_proto::DataType::Float as i32,
        name: "scales".into(),
        float_data: SCALES.to_vec(),
        ..Default::default()
    };
    let zps = pb::TensorProto {
        dims: vec![ROWS as i64],
        data_type: pb::tensor_proto::DataType::Int8 as i32,
        name: "zero_points".into(),
        raw_data: ZERO_POINTS.iter().map(|&z| z as u8).collect(),
        ..Default::default()
    };
    let node = pb::NodeProto {
        input: vec!["q".into(), "scales".into(), "zero_points".into()],
        output: vec!["y".into()],
        name: "dq".into(),
        op_type: "DequantizeLinear".into(),
        attribute: vec![pb::AttributeProto {
            name: "axis".into(),
            r#type: pb::attribute_proto::AttributeType::Int as i32,
            i: 0,
            ..Default::default()
        }],
        ..Default::default()
    };
    pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(pb::GraphProto {
            node: vec![node],
            name: "qdq_pin".into(),
            initializer: vec![scales, zps],
            input: vec![vi("q", pb::tensor_proto::DataType::Int8)],
            output: vec![vi("y", pb::tensor_proto::DataType::Float)],
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn tract_per_channel_dequantize_of_an_input_is_correct() {
    let q: Vec<i8> = vec![10, -20, 30, 7, 8, -9];
    let plan = tract_onnx::onnx()
        .model_for_proto_model(&per_channel_dequantize())
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .expect("tract loads a per-channel DequantizeLinear graph");
    let input = tract_ndarray::Array2::from_shape_vec((ROWS, COLS), q.clone())
        .unwrap()
        .into_tensor();
    let out = plan.run(tvec!(input.into())).expect("tract runs it");
    let got: Vec<f32> = out[0]
        .try_as_plain_ram()
        .unwrap()
        .as_slice::<f32>()
        .unwrap()
        .to_vec();

    // what ONNX specifies: row r uses scales[r] and zero_points[r]
    let correct: Vec<f32> = (0..ROWS * COLS)
        .map(|i| (q[i] as f32 - ZERO_POINTS[i / COLS] as f32) * SCALES[i / COLS])
        .collect();
    // what tract 0.23 computes: the first scale and zero point everywhere
    let first_only: Vec<f32> = q
        .iter()
        .map(|&v| (v as f32 - ZERO_POINTS[0] as f32) * SCALES[0])
        .collect();
    assert_ne!(correct, first_only, "the test data must tell the two apart");
    assert_eq!(
        got, correct,
        "tract's per-channel DequantizeLinear changed behaviour (first-scale-only would be {first_only:?})"
    );
}
