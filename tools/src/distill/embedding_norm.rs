//! Per-channel standardisation of the teacher's embedding, the target of the
//! embedding loss.
//!
//! The LiteMedSAM embedding is small (pooled to the student's grid its variance
//! is about 0.009 per element) and about half of that variance is the
//! per-channel means. A raw MSE is therefore minimised almost entirely by the
//! adapter's bias: measured in session 5, a 246-step stage-1 run reached an MSE
//! of 0.0053 while predicting only the channel means scores about 0.0050, so the
//! student's encoder had learned nothing spatial and stage 2 could not segment.
//! Standardising each channel (`(t − μ_c) / σ_c`) makes the loss 1.0 for the
//! channel-mean predictor and puts every channel on one scale.
//!
//! The statistics are computed once per run from the teacher cache (pooled as
//! the loss pools) and stored in `OUT/embedding_norm.json`, so that a resumed
//! run, stage 2 and validation all use the same ones even if the cache grows.

use std::path::Path;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::cache::TeacherCache;
use super::train::{cerr, ferr};
use super::DistillError;

/// File name of the statistics, in the run folder.
pub const EMBEDDING_NORM_FILE: &str = "embedding_norm.json";

/// Records the statistics are computed from (evenly spaced over the cache).
const MAX_RECORDS: usize = 256;

/// Smallest standard deviation a channel is divided by (a constant channel
/// would otherwise turn noise into large targets).
const MIN_STD: f64 = 1e-4;

/// What the embedding loss compares the adapter's output with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum EmbeddingTarget {
    /// The pooled teacher embedding as it is (runs before session 5).
    #[default]
    Raw,
    /// The pooled teacher embedding standardised per channel.
    Standardized,
}

/// Per-channel mean and standard deviation of the pooled teacher embedding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingStats {
    /// Pooling factor from the teacher's grid to the student's.
    pub pool: usize,
    /// Records the statistics were computed from.
    pub records: usize,
    /// Mean per channel.
    pub mean: Vec<f64>,
    /// Standard deviation per channel (at least [`MIN_STD`]).
    pub std: Vec<f64>,
}

impl EmbeddingStats {
    /// Statistics of up to 256 evenly spaced records of `cache`, pooled by
    /// `pool` (average over `pool × pool` blocks, as the loss pools).
    pub fn compute(cache: &TeacherCache, pool: usize) -> Result<Self, DistillError> {
        let [c, h, w] = cache.header.embedding;
        if pool == 0 || !h.is_multiple_of(pool) || !w.is_multiple_of(pool) || cache.is_empty() {
            return Err(DistillError::Config(format!(
                "cannot pool a {h}×{w} embedding by {pool} over {} records",
                cache.len()
            )));
        }
        let n = cache.len().min(MAX_RECORDS);
        let (ph, pw) = (h / pool, w / pool);
        let mut sum = vec![0f64; c];
        let mut sq = vec![0f64; c];
        let inv = 1.0 / (pool * pool) as f64;
        for k in 0..n {
            // evenly spaced, first and last included
            let i = if n == 1 {
                0
            } else {
                k * (cache.len() - 1) / (n - 1)
            };
            let e = cache.record(i)?.embedding();
            for ch in 0..c {
                let plane = &e[ch * h * w..(ch + 1) * h * w];
                for y in 0..ph {
                    for x in 0..pw {
                        let mut acc = 0f64;
                        for dy in 0..pool {
                            let row = &plane[(y * pool + dy) * w + x * pool..][..pool];
                            acc += row.iter().map(|&v| f64::from(v)).sum::<f64>();
                        }
                        let p = acc * inv;
                        sum[ch] += p;
                        sq[ch] += p * p;
                    }
                }
            }
        }
        let count = (n * ph * pw) as f64;
        let mean: Vec<f64> = sum.iter().map(|s| s / count).collect();
        let std = sq
            .iter()
            .zip(&mean)
            .map(|(q, m)| (q / count - m * m).max(0.0).sqrt().max(MIN_STD))
            .collect();
        Ok(Self {
            pool,
            records: n,
            mean,
            std,
        })
    }

    /// The statistics of the run in `run_dir`: read from
    /// [`EMBEDDING_NORM_FILE`] when present (and checked against the cache),
    /// else computed and written there.
    pub fn for_run(
        run_dir: &Path,
        cache: &TeacherCache,
        pool: usize,
    ) -> Result<Self, DistillError> {
        let path = run_dir.join(EMBEDDING_NORM_FILE);
        let channels = cache.header.embedding[0];
        if path.is_file() {
            let text = std::fs::read_to_string(&path).map_err(|e| ferr(&path, e))?;
            let s: Self = serde_json::from_str(&text).map_err(|e| ferr(&path, e))?;
            if s.pool != pool || s.mean.len() != channels || s.std.len() != channels {
                return Err(DistillError::Config(format!(
                    "{} was computed for another embedding ({} channels, pool {}); this run \
                     needs {channels} channels, pool {pool}",
                    path.display(),
                    s.mean.len(),
                    s.pool
                )));
            }
            return Ok(s);
        }
        let s = Self::compute(cache, pool)?;
        std::fs::create_dir_all(run_dir).map_err(|e| ferr(run_dir, e))?;
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(&s).map_err(|e| ferr(&path, e))?;
        std::fs::write(&tmp, text).map_err(|e| ferr(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| ferr(&path, e))?;
        Ok(s)
    }
}

/// The map from the pooled teacher embedding to the loss target.
#[derive(Debug, Clone)]
pub enum EmbeddingNorm {
    /// The target is the pooled embedding.
    Identity,
    /// `(t − mean) · inv_std`, both `(1, C, 1, 1)`.
    Standardize {
        /// Channel means.
        mean: Tensor,
        /// Reciprocal channel standard deviations.
        inv_std: Tensor,
    },
}

impl EmbeddingNorm {
    /// The map for `target` in the run `run_dir` (statistics from
    /// [`EmbeddingStats::for_run`]).
    pub fn for_run(
        target: EmbeddingTarget,
        run_dir: &Path,
        cache: &TeacherCache,
        pool: usize,
    ) -> Result<Self, DistillError> {
        match target {
            EmbeddingTarget::Raw => Ok(Self::Identity),
            EmbeddingTarget::Standardized => {
                Self::from_stats(&EmbeddingStats::for_run(run_dir, cache, pool)?)
            }
        }
    }

    /// The standardisation with `stats`.
    pub fn from_stats(stats: &EmbeddingStats) -> Result<Self, DistillError> {
        let c = stats.mean.len();
        let mean: Vec<f32> = stats.mean.iter().map(|&m| m as f32).collect();
        let inv: Vec<f32> = stats.std.iter().map(|&s| (1.0 / s) as f32).collect();
        Ok(Self::Standardize {
            mean: Tensor::from_vec(mean, (1, c, 1, 1), &Device::Cpu).map_err(cerr)?,
            inv_std: Tensor::from_vec(inv, (1, c, 1, 1), &Device::Cpu).map_err(cerr)?,
        })
    }

    /// The loss target of a pooled teacher embedding `(B, C, H, W)`.
    pub fn apply(&self, pooled: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Identity => Ok(pooled.clone()),
            Self::Standardize { mean, inv_std } => {
                pooled.broadcast_sub(mean)?.broadcast_mul(inv_std)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standardized_target_has_zero_mean_and_unit_scale_per_channel() {
        // channel 0: values 1, 3 (mean 2, std 1); channel 1: constant 5
        let stats = EmbeddingStats {
            pool: 1,
            records: 1,
            mean: vec![2.0, 5.0],
            std: vec![1.0, MIN_STD],
        };
        let norm = EmbeddingNorm::from_stats(&stats).unwrap();
        let t = Tensor::from_vec(vec![1f32, 3.0, 5.0, 5.0], (1, 2, 1, 2), &Device::Cpu).unwrap();
        let out = norm
            .apply(&t)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(out, vec![-1.0, 1.0, 0.0, 0.0]);
        let id = EmbeddingNorm::Identity.apply(&t).unwrap();
        assert_eq!(
            id.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![1.0, 3.0, 5.0, 5.0]
        );
    }

    #[test]
    fn old_run_settings_read_as_raw() {
        #[derive(Deserialize)]
        struct Cfg {
            #[serde(default)]
            embedding_target: EmbeddingTarget,
        }
        let c: Cfg = serde_json::from_str("{}").unwrap();
        assert_eq!(c.embedding_target, EmbeddingTarget::Raw);
        let c: Cfg = serde_json::from_str(r#"{"embedding_target":"standardized"}"#).unwrap();
        assert_eq!(c.embedding_target, EmbeddingTarget::Standardized);
    }
}
