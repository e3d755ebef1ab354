//! FLOP count of the exported graphs (tract's per-node cost, conv/matmul
//! only, 2 × MAC) for the teacher and the student presets, with random
//! weights (the cost depends only on the architecture). The teacher must land
//! on the reference figures of `../shared/baselines.md` (74.95 GFLOP encoder,
//! 3.63 GFLOP decoder for one box).

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use edgeseg_models::export::cost::{litemedsam_cost, LiteMedSamCost};
use edgeseg_models::export::export_litemedsam;
use edgeseg_models::litemedsam::{LiteMedSam, LiteMedSamConfig};
use edgeseg_models::weights::TensorMap;
use edgeseg_models::Mode;

fn cost_of(name: &str) -> LiteMedSamCost {
    let cfg = LiteMedSamConfig::preset(name).unwrap();
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    // training mode: no folding work at build time, the tensors are the same
    LiteMedSam::new(vb, &cfg, Mode::Training).unwrap();
    let mut map = TensorMap::new();
    let mut params = [0usize; 2];
    for (k, v) in vm.data().lock().unwrap().iter() {
        params[usize::from(!k.starts_with("image_encoder."))] += v.as_tensor().elem_count();
        map.insert(k.clone(), v.as_tensor().clone());
    }
    let graphs = export_litemedsam(&map, &cfg, name).unwrap();
    let c = litemedsam_cost(&graphs, &cfg).unwrap();
    eprintln!(
        "{name:>12}: encoder {:.2} M params {:7.3} GFLOP (other {:.3}) {:?} | decoder {:.2} M params {:6.3} GFLOP (other {:.3}) {:?} | total {:.3} GFLOP",
        params[0] as f64 / 1e6,
        c.encoder.gflop(),
        2.0 * c.encoder.other_macs as f64 / 1e9,
        c.encoder.macs_by_op,
        params[1] as f64 / 1e6,
        c.decoder_box.gflop(),
        2.0 * c.decoder_box.other_macs as f64 / 1e9,
        c.decoder_box.macs_by_op,
        c.encoder.gflop() + c.decoder_box.gflop(),
    );
    c
}

#[test]
fn teacher_matches_the_reference_flop_count() {
    let c = cost_of("litemedsam");
    let (enc, dec) = (c.encoder.gflop(), c.decoder_box.gflop());
    assert!((enc / 74.95 - 1.0).abs() < 0.005, "encoder {enc} GFLOP");
    assert!((dec / 3.63 - 1.0).abs() < 0.01, "decoder {dec} GFLOP");
}

#[test]
fn student_presets_flop_count() {
    let teacher = 74.95 + 3.63;
    // edge-s: the budget is 1.5 GFLOP for one frame and one box
    for (name, budget) in [("edge-s", 1.5), ("edge-m", teacher / 20.0)] {
        let c = cost_of(name);
        let total = c.encoder.gflop() + c.decoder_box.gflop();
        eprintln!("{name}: {:.1}× cheaper than the teacher", teacher / total);
        assert!(total <= budget, "{name}: {total} GFLOP > {budget}");
    }
}
