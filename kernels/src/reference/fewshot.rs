//! Few-shot heads: masked average pooling of a feature map into a prototype, and
//! the cosine similarity of every pixel's feature to a set of prototypes.

use super::nn::NnError;

fn check(what: &'static str, got: usize, expected: usize) -> Result<(), NnError> {
    if got == expected {
        Ok(())
    } else {
        Err(NnError::BadLength {
            what,
            got,
            expected,
        })
    }
}

/// Masked average pooling: `proto[c] = Σ_p feat[c,p]·mask[p] / (Σ_p mask[p] + eps)`
/// for a `c × hw` feature map and an `hw` weight map (0/1 or soft), in f64.
pub fn masked_avg_pool(
    feat: &[f32],
    mask: &[f32],
    c: usize,
    hw: usize,
    eps: f32,
) -> Result<Vec<f32>, NnError> {
    check("masked_avg_pool feat", feat.len(), c.saturating_mul(hw))?;
    check("masked_avg_pool mask", mask.len(), hw)?;
    let den: f64 = mask.iter().map(|&m| f64::from(m)).sum::<f64>() + f64::from(eps);
    Ok((0..c)
        .map(|k| {
            let num: f64 = (0..hw)
                .map(|p| f64::from(feat[k * hw + p]) * f64::from(mask[p]))
                .sum();
            (num / den) as f32
        })
        .collect())
}

/// Cosine similarity `sim[j,p] = ⟨feat[:,p], proto[j]⟩ / max(‖feat[:,p]‖·‖proto[j]‖, eps)`
/// for a `c × hw` feature map and `np × c` prototypes; output `np × hw`.
pub fn cosine_sim(
    feat: &[f32],
    protos: &[f32],
    c: usize,
    hw: usize,
    np: usize,
    eps: f32,
) -> Result<Vec<f32>, NnError> {
    check("cosine_sim feat", feat.len(), c.saturating_mul(hw))?;
    check("cosine_sim protos", protos.len(), np.saturating_mul(c))?;
    let pn: Vec<f64> = protos
        .chunks_exact(c.max(1))
        .map(|p| p.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt())
        .collect();
    let mut out = vec![0f32; np * hw];
    for p in 0..hw {
        let fnorm = (0..c)
            .map(|k| f64::from(feat[k * hw + p]).powi(2))
            .sum::<f64>()
            .sqrt();
        for j in 0..np {
            let dot: f64 = (0..c)
                .map(|k| f64::from(feat[k * hw + p]) * f64::from(protos[j * c + k]))
                .sum();
            out[j * hw + p] = (dot / (fnorm * pn[j]).max(f64::from(eps))) as f32;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooled_prototype_of_a_pixel_is_most_similar_to_itself() {
        let (c, hw) = (3, 4);
        let feat = [1.0, 0.0, 0.5, 2.0, 0.0, 1.0, 0.5, -1.0, 0.0, 0.0, 0.5, 0.0];
        let proto = masked_avg_pool(&feat, &[0.0, 0.0, 0.0, 1.0], c, hw, 0.0).unwrap();
        assert_eq!(proto, vec![2.0, -1.0, 0.0]);
        let sim = cosine_sim(&feat, &proto, c, hw, 1, 1e-8).unwrap();
        assert!((sim[3] - 1.0).abs() < 1e-7);
        assert!(sim[..3].iter().all(|&s| s < 0.9));
        // a zero feature gets similarity 0, not NaN
        let z = cosine_sim(&[0.0; 3], &proto, c, 1, 1, 1e-8).unwrap();
        assert_eq!(z, vec![0.0]);
    }
}
