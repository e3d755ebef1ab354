//! A mock [`PromptableSegmenter`] for fault tests, benchmarks and the CLI's
//! `--mock` option: it segments bright pixels inside the prompt box, and can be
//! made slow, CPU-hungry, hung, panicking, or faulty (NaN/Inf logits, wrong
//! shapes, wrong mask sizes, non-finite IoU predictions).
//!
//! Its output goes through the same checks as a real backend's: like the tract
//! backend it computes low-resolution logits and reports
//! [`BackendError::NonFinite`] instead of thresholding non-finite values; the
//! "wrong size" and "non-finite IoU" faults return a `Segmentation` that only
//! the pipeline's own validation catches.
//!
//! It also exposes a small image embedding (see [`MockSegmenter::EMBEDDING_GRID`]:
//! per grid cell the mean luma and two colour differences, SAM-style geometry
//! with the longest frame side on the grid), so that the few-shot prototype path
//! of the pipeline can be tested without a model.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::{BackendError, Embedding, PromptableSegmenter, RgbFrame, Segmentation};
use crate::fewshot::EmbeddingId;
use crate::prompt::Prompt;

/// Behaviour of the mock. Faults are keyed on the call number `k` (1-based,
/// counted over all instances sharing one [`MockSegmenter::counter`]), so a
/// restarted instance continues the schedule instead of repeating it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MockConfig {
    /// Time each frame takes.
    pub delay: Duration,
    /// Spend `delay` spinning on the CPU (like a real model) instead of sleeping.
    pub busy: bool,
    /// Calls that hang in `set_frame` for [`MockConfig::hang_for`].
    pub hang_at: Vec<u64>,
    /// How long a hang lasts (a real hang is forever; tests use a finite one so
    /// the abandoned thread ends).
    pub hang_for: Duration,
    /// Panic on every k-th call.
    pub panic_every: Option<u64>,
    /// NaN logits on every k-th call (→ `NonFinite`).
    pub nan_every: Option<u64>,
    /// +Inf logits on every k-th call (→ `NonFinite`).
    pub inf_every: Option<u64>,
    /// `BadShape` error on every k-th call.
    pub bad_shape_every: Option<u64>,
    /// A mask of the wrong size on every k-th call (caught by the pipeline).
    pub wrong_size_every: Option<u64>,
    /// A NaN IoU prediction on every k-th call (caught by the pipeline).
    pub nan_iou_every: Option<u64>,
    /// Every call fails with `Inference` (a broken backend).
    pub always_fail: bool,
}

impl MockConfig {
    /// Parses `key=value` pairs separated by commas: `delay=30` (ms), `busy`,
    /// `hang-at=10;20`, `hang-for=2000` (ms), `panic-every=7`, `nan-every=5`,
    /// `inf-every=5`, `bad-shape-every=5`, `wrong-size-every=5`,
    /// `nan-iou-every=5`, `fail`. An empty string is a fast, healthy mock.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut c = Self {
            hang_for: Duration::from_secs(3600),
            ..Self::default()
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let num = |v: &str| {
                v.parse::<u64>()
                    .map_err(|_| format!("mock `{part}`: `{v}` is not a number"))
            };
            let every = |v: &str| {
                num(v).and_then(|n| {
                    if n == 0 {
                        Err(format!("mock `{part}`: 0"))
                    } else {
                        Ok(Some(n))
                    }
                })
            };
            match k {
                "delay" => c.delay = Duration::from_millis(num(v)?),
                "busy" => c.busy = true,
                "hang-at" => {
                    c.hang_at = v.split(';').map(num).collect::<Result<_, _>>()?;
                }
                "hang-for" => c.hang_for = Duration::from_millis(num(v)?),
                "panic-every" => c.panic_every = every(v)?,
                "nan-every" => c.nan_every = every(v)?,
                "inf-every" => c.inf_every = every(v)?,
                "bad-shape-every" => c.bad_shape_every = every(v)?,
                "wrong-size-every" => c.wrong_size_every = every(v)?,
                "nan-iou-every" => c.nan_iou_every = every(v)?,
                "fail" => c.always_fail = true,
                _ => return Err(format!("unknown mock option `{k}`")),
            }
        }
        Ok(c)
    }
}

/// The mock backend.
#[derive(Debug)]
pub struct MockSegmenter {
    config: MockConfig,
    counter: Arc<AtomicU64>,
    call: u64,
    frame: Option<(usize, usize, Vec<u8>)>,
    /// The current frame's embedding and its valid rows and columns.
    embedding: Option<(Vec<f32>, usize, usize)>,
}

/// Logits are computed on a grid this many times coarser than the frame (like
/// a model's low-resolution mask head), then upsampled.
const GRID: usize = 4;

fn hits(every: Option<u64>, k: u64) -> bool {
    every.is_some_and(|n| k.is_multiple_of(n))
}

impl MockSegmenter {
    /// A mock whose fault schedule counts calls in `counter`.
    pub fn new(config: MockConfig, counter: Arc<AtomicU64>) -> Self {
        Self {
            config,
            counter,
            call: 0,
            frame: None,
            embedding: None,
        }
    }

    /// Side of the mock's square embedding grid.
    pub const EMBEDDING_GRID: usize = 16;
    /// Feature channels of the mock's embedding.
    pub const EMBEDDING_CHANNELS: usize = 4;

    /// The identity of the mock's embedding space (what prototype sets taught on
    /// it record).
    pub fn mock_embedding_id() -> EmbeddingId {
        EmbeddingId {
            family: "mock".into(),
            name: "mock".into(),
            version: "1".into(),
            weights_sha256: None,
            encoder_sha256: None,
            channels: Self::EMBEDDING_CHANNELS as u32,
            grid_height: Self::EMBEDDING_GRID as u32,
            grid_width: Self::EMBEDDING_GRID as u32,
        }
    }

    /// Per grid cell (the longest frame side spans the grid, padding at the
    /// bottom/right): mean `(luma - 128) / 128`, `(r - g) / 255`, `(b - g) / 255`,
    /// and a constant 0.25 so that no feature is zero.
    fn embed(frame: &RgbFrame<'_>) -> (Vec<f32>, usize, usize) {
        let (g, c) = (Self::EMBEDDING_GRID, Self::EMBEDDING_CHANNELS);
        let r = g as f64 / frame.width.max(frame.height) as f64;
        let vh = ((frame.height as f64 * r).ceil() as usize).clamp(1, g);
        let vw = ((frame.width as f64 * r).ceil() as usize).clamp(1, g);
        let mut sums = vec![[0f64; 3]; g * g];
        let mut counts = vec![0u32; g * g];
        for (y, row) in frame.data.chunks_exact(frame.width * 3).enumerate() {
            let gy = (((y as f64 + 0.5) * r) as usize).min(vh - 1);
            for (x, p) in row.chunks_exact(3).enumerate() {
                let gx = (((x as f64 + 0.5) * r) as usize).min(vw - 1);
                let (rr, gg, bb) = (f64::from(p[0]), f64::from(p[1]), f64::from(p[2]));
                let cell = gy * g + gx;
                let s = &mut sums[cell];
                s[0] += (rr + gg + bb) / 3.0;
                s[1] += rr - gg;
                s[2] += bb - gg;
                counts[cell] += 1;
            }
        }
        let mut data = vec![0f32; c * g * g];
        for cell in 0..g * g {
            let (y, x) = (cell / g, cell % g);
            if y >= vh || x >= vw {
                continue;
            }
            let n = f64::from(counts[cell].max(1));
            let s = sums[cell];
            data[cell] = ((s[0] / n - 128.0) / 128.0) as f32;
            data[g * g + cell] = (s[1] / n / 255.0) as f32;
            data[2 * g * g + cell] = (s[2] / n / 255.0) as f32;
            data[3 * g * g + cell] = 0.25;
        }
        (data, vh, vw)
    }

    fn spend(&self, d: Duration) {
        if self.config.busy {
            let t = Instant::now();
            let mut x = 0u64;
            while t.elapsed() < d {
                for i in 0..1000u64 {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
                }
            }
        } else {
            std::thread::sleep(d);
        }
    }
}

impl PromptableSegmenter for MockSegmenter {
    fn name(&self) -> &str {
        "mock"
    }

    fn set_frame(&mut self, frame: RgbFrame<'_>) -> Result<(), BackendError> {
        let k = self.counter.fetch_add(1, Ordering::SeqCst) + 1;
        self.call = k;
        if self.config.hang_at.contains(&k) {
            std::thread::sleep(self.config.hang_for);
        }
        if hits(self.config.panic_every, k) {
            panic!("mock backend: injected panic on call {k}");
        }
        self.spend(self.config.delay);
        if self.config.always_fail {
            return Err(BackendError::Inference(
                "mock backend: injected failure".into(),
            ));
        }
        // Luma on the coarse grid, as a model's encoder would summarise it.
        let (gw, gh) = (frame.width.div_ceil(GRID), frame.height.div_ceil(GRID));
        let mut luma = Vec::with_capacity(gw * gh);
        for gy in 0..gh {
            for gx in 0..gw {
                let i = ((gy * GRID) * frame.width + gx * GRID) * 3;
                let p = &frame.data[i..i + 3];
                luma.push(((u16::from(p[0]) + u16::from(p[1]) + u16::from(p[2])) / 3) as u8);
            }
        }
        self.frame = Some((frame.width, frame.height, luma));
        self.embedding = Some(Self::embed(&frame));
        Ok(())
    }

    fn embedding(&self) -> Option<Embedding<'_>> {
        let (w, h, _) = self.frame.as_ref()?;
        let (data, vh, vw) = self.embedding.as_ref()?;
        Some(Embedding {
            channels: Self::EMBEDDING_CHANNELS,
            height: Self::EMBEDDING_GRID,
            width: Self::EMBEDDING_GRID,
            valid_height: *vh,
            valid_width: *vw,
            frame_height: *h,
            frame_width: *w,
            data,
        })
    }

    fn embedding_id(&self) -> Option<EmbeddingId> {
        Some(Self::mock_embedding_id())
    }

    fn segment(&mut self, prompt: &Prompt) -> Result<Segmentation, BackendError> {
        let (w, h, luma) = self.frame.as_ref().ok_or(BackendError::NoFrame)?;
        let (w, h) = (*w, *h);
        let k = self.call;
        if hits(self.config.bad_shape_every, k) {
            return Err(BackendError::BadShape {
                output: "low_res_masks".into(),
                got: vec![1, 1, 7, 7],
                expected: "[1, 1, 256, 256]".into(),
            });
        }
        let (gw, gh) = (w.div_ceil(GRID), h.div_ceil(GRID));
        let b = prompt.boxes.unwrap_or(crate::prompt::BoxPrompt {
            x0: 0.0,
            y0: 0.0,
            x1: (w - 1) as f32,
            y1: (h - 1) as f32,
        });
        let mut logits: Vec<f32> = luma
            .iter()
            .enumerate()
            .map(|(i, &l)| {
                let (x, y) = (((i % gw) * GRID) as f32, ((i / gw) * GRID) as f32);
                let inside = x >= b.x0 && x <= b.x1 && y >= b.y0 && y <= b.y1;
                if inside {
                    (f32::from(l) - 150.0) / 10.0
                } else {
                    -10.0
                }
            })
            .collect();
        if hits(self.config.nan_every, k) {
            let mid = logits.len() / 2;
            logits[mid] = f32::NAN;
        }
        if hits(self.config.inf_every, k) {
            logits[0] = f32::INFINITY;
        }
        // The same rule as the real backends: no mask from non-finite logits.
        if logits.iter().any(|v| !v.is_finite()) {
            return Err(BackendError::NonFinite {
                output: "low_res_masks".into(),
            });
        }
        let (mw, mh) = if hits(self.config.wrong_size_every, k) {
            (w / 2 + 1, h)
        } else {
            (w, h)
        };
        let mut mask = vec![0u8; mw * mh];
        for y in 0..mh {
            let gy = (y / GRID).min(gh - 1);
            for x in 0..mw {
                let gx = (x / GRID).min(gw - 1);
                mask[y * mw + x] = u8::from(logits[gy * gw + gx] > 0.0);
            }
        }
        let iou = if hits(self.config.nan_iou_every, k) {
            f32::NAN
        } else {
            0.9
        };
        Ok(Segmentation {
            width: mw,
            height: mh,
            mask,
            iou_prediction: Some(iou),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_faults() {
        assert!(MockConfig::parse("delay=x").is_err());
        assert!(MockConfig::parse("panic-every=0").is_err());
        assert!(MockConfig::parse("jump").is_err());
        let c = MockConfig::parse("delay=1,nan-every=2,hang-at=5;9").unwrap();
        assert_eq!(c.hang_at, vec![5, 9]);
        let mut m = MockSegmenter::new(c, Arc::default());
        let data = vec![200u8; 16 * 8 * 3];
        let f = RgbFrame::new(16, 8, &data).unwrap();
        let p = Prompt::default();
        assert!(matches!(m.segment(&p), Err(BackendError::NoFrame)));
        m.set_frame(f).unwrap();
        let s = m.segment(&p).unwrap();
        assert_eq!((s.width, s.height, s.area()), (16, 8, 128));
        m.set_frame(f).unwrap();
        assert!(matches!(m.segment(&p), Err(BackendError::NonFinite { .. })));
    }
}
