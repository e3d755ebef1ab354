//! Probes a stage-2 student on the first records of a teacher cache: how its masks
//! compare with the teacher's and with the bare box prior, and whether its decoder
//! can fit a few images (the check that found the saturated-attention initialisation
//! of session 12; docs/distillation.md).
//!
//! ```text
//! cargo run -p edgeseg-tools --example distill_probe -- CACHE WEIGHTS [--fresh-decoder] [--fit LR STEPS]
//! ```
//!
//! Without `--fit`: per record, the Dice against the ground truth of the teacher's
//! mask, of the box prior alone and of the student, and the student's residual
//! (logits minus prior) inside the ground truth and on the box's background.
//! With `--fit`: trains only the prompt encoder and mask decoder on the first 8
//! records (tight boxes, encoder embeddings fixed) and prints the loss.

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use candle_nn::Optimizer;
use edgeseg_models::litemedsam::box_prior;
use edgeseg_models::LiteMedSamConfig;
use edgeseg_tools::distill::cache::TeacherCache;
use edgeseg_tools::distill::train::{
    bce_with_logits, dice_loss, is_decoder_variable, make_batch, Stage, Student,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const RECORDS: usize = 8;

fn dice(pred: impl Fn(usize) -> bool, mask: &[f32]) -> f64 {
    let (mut inter, mut p, mut g) = (0.0, 0.0, 0.0);
    for (k, &m) in mask.iter().enumerate() {
        let v = f64::from(u8::from(pred(k)));
        inter += v * f64::from(m);
        p += v;
        g += f64::from(m);
    }
    2.0 * inter / (p + g).max(1.0)
}

fn report(cache: &TeacherCache, student: &Student) -> Result<()> {
    let s = cache.header.input_size;
    let n = cache.len().min(RECORDS);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    for i in 0..n {
        let r = cache.record(i)?;
        let mask: Vec<f32> = r.mask().iter().map(|&v| f32::from(v)).collect();
        let teacher = r.logits(0);
        let bbox = r.bbox(0);
        let prior = box_prior(&bbox, s, s);
        let batch = make_batch(cache, &[i], false, &mut rng)?;
        let boxes = Tensor::from_vec(bbox.to_vec(), (1, 4), &Device::Cpu)?;
        let emb = student.model.encode(&batch.images)?;
        let (logits, _) = student.model.decode_boxes(&emb, &boxes, false)?;
        let logits = logits.narrow(1, 0, 1)?.flatten_all()?.to_vec1::<f32>()?;
        let (mut fg, mut nfg, mut bg, mut nbg) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
        for k in 0..s * s {
            let res = f64::from(logits[k] - prior[k]);
            if mask[k] > 0.5 {
                fg += res;
                nfg += 1.0;
            } else if prior[k] > -4.0 {
                bg += res;
                nbg += 1.0;
            }
        }
        println!(
            "{} {}: Dice teacher {:.3} prior {:.3} student {:.3} | residual mean: foreground {:+.3}, box background {:+.3}",
            r.meta.dataset,
            r.meta.case,
            dice(|k| teacher[k] > 0.0, &mask),
            dice(|k| prior[k] > 0.0, &mask),
            dice(|k| logits[k] > 0.0, &mask),
            fg / nfg.max(1.0),
            bg / nbg.max(1.0),
        );
    }
    Ok(())
}

fn fit(cache: &TeacherCache, student: &Student, lr: f64, steps: usize) -> Result<()> {
    let n = cache.len().min(RECORDS);
    let idx: Vec<usize> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let batch = make_batch(cache, &idx, false, &mut rng)?;
    let mut boxes = Vec::with_capacity(4 * n);
    for &i in &idx {
        boxes.extend_from_slice(&cache.record(i)?.bbox(0));
    }
    let boxes = Tensor::from_vec(boxes, (n, 4), &Device::Cpu)?;
    let emb = student.model.encode(&batch.images)?.detach();
    let vars = student
        .trainable(Stage::Prompted)?
        .into_iter()
        .filter(|(name, _)| is_decoder_variable(name))
        .map(|(_, v)| v)
        .collect();
    let params = candle_nn::ParamsAdamW {
        lr,
        weight_decay: 0.0,
        ..Default::default()
    };
    let mut opt = candle_nn::AdamW::new(vars, params)?;
    for step in 0..steps {
        let (logits, _) = student.model.decode_boxes(&emb, &boxes, false)?;
        let logits = logits.narrow(1, 0, 1)?;
        let p = (logits.neg()?.exp()? + 1.0)?.recip()?;
        let loss = (bce_with_logits(&logits, &batch.masks)? + dice_loss(&p, &batch.masks)?)?;
        if step % 10 == 0 || step + 1 == steps {
            println!("step {step}: BCE + Dice {:.4}", loss.to_scalar::<f32>()?);
        }
        opt.backward_step(&loss)?;
    }
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        bail!("usage: distill_probe CACHE WEIGHTS [--fresh-decoder] [--fit LR STEPS]");
    }
    let cache = TeacherCache::open(Path::new(&args[0])).context("opening the cache")?;
    let student = Student::new(&LiteMedSamConfig::edge_s(), cache.header.embedding[0])?;
    student.load(Path::new(&args[1]))?;
    if args.iter().any(|a| a == "--fresh-decoder") {
        student.redraw_decoder(0)?;
    }
    match args.iter().position(|a| a == "--fit") {
        Some(i) => {
            let lr: f64 = args.get(i + 1).context("--fit LR STEPS")?.parse()?;
            let steps: usize = args.get(i + 2).context("--fit LR STEPS")?.parse()?;
            fit(&cache, &student, lr, steps)
        }
        None => report(&cache, &student),
    }
}
