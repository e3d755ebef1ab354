//! Training mode on tiny random-initialised LiteMedSAMs (the teacher's
//! structure and the students'): every parameter receives a non-zero gradient
//! (candle's fused softmax / layer norm would silently cut them), and the
//! inference kernels compute the same function.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use edgeseg_models::litemedsam::{LiteMedSam, LiteMedSamConfig};
use edgeseg_models::Mode;

struct Outputs {
    emb: Tensor,
    all: Vec<Tensor>,
}

/// Exercises every path: box + points (labels 1, 0), points only (padding
/// point, label -1), no-mask and mask-prompt dense embeddings, all mask tokens.
fn run(model: &LiteMedSam, cfg: &LiteMedSamConfig, x: &Tensor, mask_in: &Tensor) -> Outputs {
    let dev = Device::Cpu;
    let s = cfg.img_size as f32;
    let emb = model.encoder.forward(x).unwrap();
    let pe = model.dense_pe().unwrap();
    let pe_enc = &model.prompt_encoder;
    let coords = Tensor::new(&[[[0.2 * s, 0.3 * s], [0.7 * s, 0.6 * s]]], &dev).unwrap();
    let labels = Tensor::new(&[[1f32, 0.0]], &dev).unwrap();
    let boxes = Tensor::new(&[[0.1 * s, 0.2 * s, 0.8 * s, 0.9 * s]], &dev).unwrap();
    let sp1 = pe_enc
        .sparse(Some((&coords, &labels)), Some(&boxes))
        .unwrap();
    let de1 = pe_enc.dense(None, 1).unwrap();
    let (m1, i1) = model
        .mask_decoder
        .predict_all(&emb, &pe, &sp1, &de1)
        .unwrap();
    let sp2 = pe_enc.sparse(Some((&coords, &labels)), None).unwrap();
    let de2 = pe_enc.dense(Some(mask_in), 1).unwrap();
    let (m2, i2) = model
        .mask_decoder
        .predict_all(&emb, &pe, &sp2, &de2)
        .unwrap();
    Outputs {
        emb,
        all: vec![m1, i1, m2, i2],
    }
}

fn inputs(cfg: &LiteMedSamConfig) -> (Tensor, Tensor) {
    let dev = Device::Cpu;
    let s = cfg.img_size;
    let x = Tensor::rand(0f32, 1f32, (1, 3, s, s), &dev).unwrap();
    let m = Tensor::randn(
        0f32,
        1f32,
        (1, 1, 4 * cfg.embedding_size(), 4 * cfg.embedding_size()),
        &dev,
    )
    .unwrap();
    (x, m)
}

fn randomize_bn(vm: &VarMap) {
    // non-trivial BatchNorm statistics so that folding is really exercised
    for (name, var) in vm.data().lock().unwrap().iter() {
        if name.contains(".bn.") {
            let t = (Tensor::rand(0.5f32, 1.5f32, var.shape(), &Device::Cpu).unwrap())
                .to_dtype(DType::F32)
                .unwrap();
            var.set(&t).unwrap();
        }
    }
}

#[test]
fn every_parameter_receives_a_gradient() {
    every_parameter_receives_a_gradient_for(&LiteMedSamConfig::tiny());
}

#[test]
fn every_student_parameter_receives_a_gradient() {
    every_parameter_receives_a_gradient_for(&LiteMedSamConfig::tiny_student());
}

fn every_parameter_receives_a_gradient_for(cfg: &LiteMedSamConfig) {
    let cfg = cfg.clone();
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let model = LiteMedSam::new(vb, &cfg, Mode::Training).unwrap();
    randomize_bn(&vm);
    let (x, m) = inputs(&cfg);
    let out = run(&model, &cfg, &x, &m);
    let mut loss = Tensor::new(0f32, &Device::Cpu).unwrap();
    for t in &out.all {
        loss = (loss + t.sqr().unwrap().mean_all().unwrap()).unwrap();
    }
    let grads = loss.backward().unwrap();
    let vars: Vec<(String, Var)> = vm
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert!(
        vars.len() > 150,
        "only {} parameters registered",
        vars.len()
    );
    let mut missing = Vec::new();
    for (name, var) in &vars {
        let ok = grads
            .get(var.as_tensor())
            .map(|g| {
                g.abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
                    > 0.0
            })
            .unwrap_or(false);
        if !ok {
            missing.push(name.clone());
        }
    }
    missing.sort();
    assert!(
        missing.is_empty(),
        "no gradient for {} of {} parameters: {missing:?}",
        missing.len(),
        vars.len()
    );
}

#[test]
fn inference_mode_computes_the_same_function() {
    inference_mode_computes_the_same_function_for(&LiteMedSamConfig::tiny());
}

#[test]
fn student_inference_mode_computes_the_same_function() {
    inference_mode_computes_the_same_function_for(&LiteMedSamConfig::tiny_student());
}

fn inference_mode_computes_the_same_function_for(cfg: &LiteMedSamConfig) {
    let cfg = cfg.clone();
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let train = LiteMedSam::new(vb.clone(), &cfg, Mode::Training).unwrap();
    randomize_bn(&vm);
    let infer = LiteMedSam::new(vb, &cfg, Mode::Inference).unwrap();
    let (x, m) = inputs(&cfg);
    let a = run(&train, &cfg, &x, &m);
    let b = run(&infer, &cfg, &x, &m);
    let rel = |p: &Tensor, q: &Tensor| -> f32 {
        let d = (p - q)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let n = q
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        (d / n.max(1e-20)).sqrt()
    };
    assert_eq!(
        a.emb.dims(),
        &[
            1,
            cfg.prompt_embed_dim,
            cfg.embedding_size(),
            cfg.embedding_size()
        ]
    );
    assert!(
        rel(&a.emb, &b.emb) < 1e-5,
        "embedding differs: {}",
        rel(&a.emb, &b.emb)
    );
    for (p, q) in a.all.iter().zip(&b.all) {
        assert_eq!(p.dims(), q.dims());
        assert!(rel(p, q) < 1e-4, "decoder output differs: {}", rel(p, q));
    }
}

/// One training step's forward + backward of the edge-s student on a batch
/// of two 256×256 frames with box prompts, through the public training entry
/// point (`forward_boxes`): finite loss, every parameter gets a gradient.
#[test]
fn edge_s_one_batch_backward() {
    let cfg = LiteMedSamConfig::edge_s();
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
    let model = LiteMedSam::new(vb, &cfg, Mode::Training).unwrap();
    let t0 = std::time::Instant::now();
    let x = Tensor::rand(0f32, 1f32, (2, 3, 256, 256), &dev).unwrap();
    let boxes = Tensor::new(
        &[[30f32, 40.0, 180.0, 200.0], [10.0, 100.0, 120.0, 250.0]],
        &dev,
    )
    .unwrap();
    let (logits, iou) = model.forward_boxes(&x, &boxes, false).unwrap();
    assert_eq!(logits.dims(), &[2, 1, 256, 256]);
    assert_eq!(iou.dims(), &[2, 1]);
    let loss = (logits.sqr().unwrap().mean_all().unwrap() + iou.sqr().unwrap().mean_all().unwrap())
        .unwrap();
    assert!(loss.to_scalar::<f32>().unwrap().is_finite());
    let grads = loss.backward().unwrap();
    let data = vm.data().lock().unwrap();
    // point embeddings and the mask-prompt downscaler are not on a box-only path
    let missing: Vec<&String> = data
        .iter()
        .filter(|(k, v)| {
            [
                "image_encoder.",
                "mask_decoder.transformer.",
                "mask_decoder.output_upscaling.",
            ]
            .iter()
            .any(|p| k.starts_with(p))
                && grads.get(v.as_tensor()).is_none()
        })
        .map(|(k, _)| k)
        .collect();
    eprintln!(
        "edge-s: {} parameters, forward + backward (batch 2) in {:.1} s",
        data.len(),
        t0.elapsed().as_secs_f64()
    );
    assert!(missing.is_empty(), "no gradient for {missing:?}");
}
