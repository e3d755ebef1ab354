//! The prototype head: teaching (support embeddings + masks → a [`PrototypeSet`])
//! and prediction (query embedding → [`ProbabilityMap`] → mask at frame size).

use crate::backend::Embedding;

use super::primitives::{self, Grid, PooledSum, PrimitiveError, Region};
use super::{EmbeddingId, FewShotError, Modality};

/// Most support shots one teaching call accepts.
pub const MAX_SHOTS: usize = 16;
/// Most structures (foreground classes) one prototype set holds.
pub const MAX_CLASSES: usize = 16;

/// Settings of the prototype head. They are stored in the prototype file, so a set
/// is always applied the way it was taught.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadConfig {
    /// Cosine similarities are multiplied by this before the softmax over classes
    /// (PANet and ALPNet use 20).
    pub scale: f32,
    /// Side of the square pooling window of the local prototypes, in grid cells.
    pub window: u32,
    /// A window gives a local prototype of a class when the class covers at least
    /// this fraction of the window's covered cells.
    pub local_min_coverage: f32,
    /// Most local prototypes kept per foreground class (k-means over the candidates).
    pub max_local_foreground: u32,
    /// Most local prototypes kept for the background.
    pub max_local_background: u32,
}

impl Default for HeadConfig {
    fn default() -> Self {
        Self {
            scale: 20.0,
            window: 4,
            local_min_coverage: 0.9,
            max_local_foreground: 4,
            max_local_background: 8,
        }
    }
}

impl HeadConfig {
    /// Checks that every setting is usable.
    pub fn validate(&self) -> Result<(), FewShotError> {
        let bad = |m: String| Err(FewShotError::InvalidConfig(m));
        if !(self.scale.is_finite() && self.scale > 0.0 && self.scale <= 1000.0) {
            return bad(format!("scale {} must be in (0, 1000]", self.scale));
        }
        if !(1..=64).contains(&self.window) {
            return bad(format!("window {} must be in 1..=64", self.window));
        }
        if !(self.local_min_coverage > 0.0 && self.local_min_coverage <= 1.0) {
            return bad(format!(
                "local_min_coverage {} must be in (0, 1]",
                self.local_min_coverage
            ));
        }
        if self.max_local_foreground > 64 || self.max_local_background > 64 {
            return bad("at most 64 local prototypes per class".into());
        }
        Ok(())
    }
}

/// Whether a prototype is a class's global prototype or one of its local ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrototypeKind {
    /// Masked average over every support pixel of the class.
    Global,
    /// Masked average over one or several pooling windows (ALPNet).
    Local,
}

/// One prototype: a unit-length feature vector of one class.
#[derive(Debug, Clone, PartialEq)]
pub struct Prototype {
    /// Index into the set's classes: 0 = background, `i` = `labels[i - 1]`.
    pub class: usize,
    /// Global or local.
    pub kind: PrototypeKind,
    /// Support weight it was pooled from (covered grid cells, summed over shots).
    pub weight: f32,
    /// `channels` values, L2 norm 1.
    pub vector: Vec<f32>,
}

/// One labelled support mask at frame size: `height × width` labels, row-major
/// (0 = background; the labels of the structures to learn are chosen at teaching).
#[derive(Debug, Clone, Copy)]
pub struct LabelMask<'a> {
    /// Columns (must equal the frame width of the shot's embedding).
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// `height * width` labels.
    pub labels: &'a [u8],
}

/// One support shot: the image embedding of a frame and that frame's mask.
#[derive(Debug, Clone, Copy)]
pub struct SupportShot<'a> {
    /// The frame's embedding.
    pub embedding: Embedding<'a>,
    /// The frame's labels.
    pub mask: LabelMask<'a>,
}

/// A taught prototype set: what the model computed it with, its classes, the head
/// settings and the prototypes.
#[derive(Debug, Clone, PartialEq)]
pub struct PrototypeSet {
    /// The model (and embedding geometry) the prototypes were computed with.
    pub embedding: EmbeddingId,
    /// Labels of the foreground classes, in class order (class `i` = `labels[i - 1]`).
    pub labels: Vec<u8>,
    /// Names of the classes (same order as `labels`).
    pub names: Vec<String>,
    /// Image kind of the supports.
    pub modality: Modality,
    /// Number of support shots.
    pub shots: u32,
    /// Head settings.
    pub config: HeadConfig,
    /// Prototypes, grouped by class (background first), global before local.
    pub prototypes: Vec<Prototype>,
}

/// Checked view of an [`Embedding`]: its grid and valid region, with the frame →
/// grid mapping.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    pub grid: Grid,
    pub valid: Region,
    pub frame_h: usize,
    pub frame_w: usize,
    /// Grid cells per frame pixel, rows and columns.
    pub ry: f64,
    pub rx: f64,
}

impl Geometry {
    /// Validates `e` (sizes, valid region consistent with the frame size).
    pub(crate) fn of(e: &Embedding<'_>) -> Result<Self, FewShotError> {
        let bad = |m: String| Err(FewShotError::InvalidEmbedding(m));
        let grid = Grid {
            channels: e.channels,
            height: e.height,
            width: e.width,
        };
        if grid.is_empty() {
            return bad(format!(
                "{}x{}x{} has a zero dimension",
                e.channels, e.height, e.width
            ));
        }
        let n = grid
            .len()
            .map_err(|err| FewShotError::InvalidEmbedding(err.to_string()))?;
        if e.data.len() != n {
            return bad(format!(
                "{} values for {}x{}x{}",
                e.data.len(),
                e.channels,
                e.height,
                e.width
            ));
        }
        if e.valid_height == 0
            || e.valid_width == 0
            || e.valid_height > e.height
            || e.valid_width > e.width
        {
            return bad(format!(
                "valid region {}x{} outside the {}x{} grid",
                e.valid_height, e.valid_width, e.height, e.width
            ));
        }
        if e.frame_height == 0 || e.frame_width == 0 {
            return bad(format!(
                "frame size {}x{} has a zero side",
                e.frame_width, e.frame_height
            ));
        }
        // The model input is the frame with its longest side resized to the input
        // size and padded at the bottom/right, so one frame pixel spans
        // grid / longest-side cells along both axes.
        let longest = e.frame_height.max(e.frame_width) as f64;
        let ry = e.height as f64 / longest;
        let rx = e.width as f64 / longest;
        let expect_h = (e.frame_height as f64 * ry).ceil() as usize;
        let expect_w = (e.frame_width as f64 * rx).ceil() as usize;
        if expect_h.abs_diff(e.valid_height) > 1 || expect_w.abs_diff(e.valid_width) > 1 {
            return bad(format!(
                "valid region {}x{} does not match a {}x{} frame on a {}x{} grid (expected about {}x{})",
                e.valid_height, e.valid_width, e.frame_height, e.frame_width, e.height, e.width, expect_h, expect_w
            ));
        }
        Ok(Self {
            grid,
            valid: Region {
                y0: 0,
                x0: 0,
                y1: e.valid_height,
                x1: e.valid_width,
            },
            frame_h: e.frame_height,
            frame_w: e.frame_width,
            ry,
            rx,
        })
    }

    /// The grid cell a frame pixel's centre falls into, clamped to the valid region.
    fn cell_of(&self, y: usize, x: usize) -> (usize, usize) {
        let gy = (((y as f64 + 0.5) * self.ry).floor() as usize).min(self.valid.y1 - 1);
        let gx = (((x as f64 + 0.5) * self.rx).floor() as usize).min(self.valid.x1 - 1);
        (gy, gx)
    }
}

/// The fraction of each valid grid cell covered by each class: `classes + 1`
/// weight maps of `height × width` (index 0 = background), zero outside the
/// valid region and in cells no frame pixel falls into.
fn class_fractions(
    geo: &Geometry,
    mask: &LabelMask<'_>,
    labels: &[u8],
) -> Result<Vec<Vec<f32>>, FewShotError> {
    let hw = geo.grid.pixels()?;
    let k = labels.len() + 1;
    let mut counts = vec![vec![0u32; hw]; k];
    let mut total = vec![0u32; hw];
    let mut class_of = [0usize; 256];
    for (i, &l) in labels.iter().enumerate() {
        class_of[usize::from(l)] = i + 1;
    }
    for y in 0..mask.height {
        let row = &mask.labels[y * mask.width..(y + 1) * mask.width];
        for (x, &l) in row.iter().enumerate() {
            let (gy, gx) = geo.cell_of(y, x);
            let p = gy * geo.grid.width + gx;
            total[p] = total[p].saturating_add(1);
            let c = class_of[usize::from(l)];
            counts[c][p] = counts[c][p].saturating_add(1);
        }
    }
    Ok(counts
        .into_iter()
        .map(|cnt| {
            cnt.iter()
                .zip(&total)
                .map(|(&c, &t)| if t == 0 { 0.0 } else { c as f32 / t as f32 })
                .collect()
        })
        .collect())
}

/// A candidate local prototype: the pooled sum of one window of one shot.
struct Candidate {
    pooled: PooledSum,
    unit: Vec<f32>,
}

/// Reduces local candidates to at most `k` prototypes: k-means on the unit vectors
/// (cosine), farthest-point initialisation from the heaviest candidate, 8 rounds;
/// each centroid is the pooled average of its members.
fn reduce_locals(cands: Vec<Candidate>, k: usize, channels: usize) -> Vec<PooledSum> {
    if cands.is_empty() || k == 0 {
        return Vec::new();
    }
    if cands.len() <= k {
        return cands.into_iter().map(|c| c.pooled).collect();
    }
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    let first = cands
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.pooled.weight.total_cmp(&b.1.pooled.weight))
        .map_or(0, |(i, _)| i);
    let mut centres: Vec<Vec<f32>> = vec![cands[first].unit.clone()];
    while centres.len() < k {
        // the candidate least similar to its nearest centre
        let far = cands
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let best = centres
                    .iter()
                    .map(|m| dot(&c.unit, m))
                    .fold(f32::NEG_INFINITY, f32::max);
                (i, best)
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(0, |(i, _)| i);
        centres.push(cands[far].unit.clone());
    }
    let mut assign = vec![0usize; cands.len()];
    let mut sums: Vec<PooledSum> = Vec::new();
    for _ in 0..8 {
        for (a, c) in assign.iter_mut().zip(&cands) {
            *a = centres
                .iter()
                .enumerate()
                .map(|(j, m)| (j, dot(&c.unit, m)))
                .max_by(|x, y| x.1.total_cmp(&y.1))
                .map_or(0, |(j, _)| j);
        }
        sums = (0..centres.len())
            .map(|_| PooledSum::zeros(channels))
            .collect();
        for (&a, c) in assign.iter().zip(&cands) {
            // same channel count by construction
            let _ = sums[a].add(&c.pooled);
        }
        for (m, s) in centres.iter_mut().zip(&sums) {
            if let Ok(v) = s.mean() {
                if let Ok(u) = primitives::l2_normalize(&v, 0) {
                    *m = u;
                }
            }
        }
    }
    sums.into_iter().filter(|s| s.weight > 0.0).collect()
}

/// Teaches a prototype set from support shots.
///
/// `labels` are the mask labels of the structures to learn (each one class; label 0
/// is the background and cannot be a class); `names` their names (same length, or
/// empty for `label N`). Every class must cover at least one grid cell over all the
/// shots, and the background too; every shot's embedding must match `embedding`.
pub fn teach(
    shots: &[SupportShot<'_>],
    labels: &[u8],
    names: &[String],
    embedding: EmbeddingId,
    modality: Modality,
    config: HeadConfig,
) -> Result<PrototypeSet, FewShotError> {
    config.validate()?;
    if shots.is_empty() || shots.len() > MAX_SHOTS {
        return Err(FewShotError::ShotCount {
            got: shots.len(),
            max: MAX_SHOTS,
        });
    }
    if labels.is_empty() || labels.len() > MAX_CLASSES {
        return Err(FewShotError::ClassCount {
            got: labels.len(),
            max: MAX_CLASSES,
        });
    }
    if labels.contains(&0) {
        return Err(FewShotError::BackgroundLabel);
    }
    for (i, l) in labels.iter().enumerate() {
        if labels[..i].contains(l) {
            return Err(FewShotError::DuplicateLabel(*l));
        }
    }
    if !names.is_empty() && names.len() != labels.len() {
        return Err(FewShotError::InvalidConfig(format!(
            "{} names for {} labels",
            names.len(),
            labels.len()
        )));
    }
    let names: Vec<String> = if names.is_empty() {
        labels.iter().map(|l| format!("label {l}")).collect()
    } else {
        names.to_vec()
    };
    let k = labels.len() + 1;
    let c = embedding.channels as usize;
    let mut global: Vec<PooledSum> = (0..k).map(|_| PooledSum::zeros(c)).collect();
    let mut local: Vec<Vec<Candidate>> = (0..k).map(|_| Vec::new()).collect();
    let win = config.window as usize;
    for (si, shot) in shots.iter().enumerate() {
        let e = &shot.embedding;
        embedding.check_embedding(e)?;
        let geo = Geometry::of(e)?;
        let m = &shot.mask;
        let mask_len = m.width.checked_mul(m.height);
        if m.width != geo.frame_w || m.height != geo.frame_h || mask_len != Some(m.labels.len()) {
            return Err(FewShotError::MaskSizeMismatch {
                shot: si,
                mask: format!("{}x{} ({} labels)", m.width, m.height, m.labels.len()),
                frame: format!("{}x{}", geo.frame_w, geo.frame_h),
            });
        }
        let fractions = class_fractions(&geo, m, labels)?;
        for (ci, w) in fractions.iter().enumerate() {
            let pooled = primitives::masked_sum_pool(e.data, geo.grid, w, geo.valid)?;
            global[ci].add(&pooled)?;
            // local windows
            let mut y = 0;
            while y < geo.valid.y1 {
                let mut x = 0;
                while x < geo.valid.x1 {
                    let r = Region {
                        y0: y,
                        x0: x,
                        y1: (y + win).min(geo.valid.y1),
                        x1: (x + win).min(geo.valid.x1),
                    };
                    x += win;
                    let full = r.cells() * 2 >= win * win;
                    if !full {
                        continue;
                    }
                    let covered: f64 = (r.y0..r.y1)
                        .flat_map(|yy| (r.x0..r.x1).map(move |xx| (yy, xx)))
                        .filter(|&(yy, xx)| {
                            fractions.iter().any(|f| f[yy * geo.grid.width + xx] > 0.0)
                        })
                        .count() as f64;
                    if covered == 0.0 {
                        continue;
                    }
                    let p = primitives::masked_sum_pool(e.data, geo.grid, w, r)?;
                    if p.weight / covered < f64::from(config.local_min_coverage) {
                        continue;
                    }
                    if let Ok(unit) = p.mean().and_then(|v| primitives::l2_normalize(&v, 0)) {
                        local[ci].push(Candidate { pooled: p, unit });
                    }
                }
                y += win;
            }
        }
    }
    let mut prototypes = Vec::new();
    for (ci, g) in global.iter().enumerate() {
        let vector = match g.mean() {
            Ok(v) => v,
            Err(PrimitiveError::EmptyMask) if ci == 0 => return Err(FewShotError::EmptyBackground),
            Err(PrimitiveError::EmptyMask) => {
                return Err(FewShotError::EmptySupport {
                    label: labels[ci - 1],
                })
            }
            Err(e) => return Err(e.into()),
        };
        let vector = primitives::l2_normalize(&vector, prototypes.len()).map_err(|_| {
            FewShotError::ZeroNormPrototype {
                class: if ci == 0 { 0 } else { labels[ci - 1] },
            }
        })?;
        prototypes.push(Prototype {
            class: ci,
            kind: PrototypeKind::Global,
            weight: g.weight as f32,
            vector,
        });
        let cap = if ci == 0 {
            config.max_local_background
        } else {
            config.max_local_foreground
        } as usize;
        for l in reduce_locals(std::mem::take(&mut local[ci]), cap, c) {
            if let Ok(v) = l.mean().and_then(|v| primitives::l2_normalize(&v, 0)) {
                prototypes.push(Prototype {
                    class: ci,
                    kind: PrototypeKind::Local,
                    weight: l.weight as f32,
                    vector: v,
                });
            }
        }
    }
    Ok(PrototypeSet {
        embedding,
        labels: labels.to_vec(),
        names,
        modality,
        shots: shots.len() as u32,
        config,
        prototypes,
    })
}

/// Per-class probabilities on the valid part of the embedding grid, and what is
/// needed to map them onto the frame.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbabilityMap {
    /// Foreground labels (class `i` = `labels[i - 1]`; class 0 is the background).
    pub labels: Vec<u8>,
    /// Valid grid rows.
    pub height: usize,
    /// Valid grid columns.
    pub width: usize,
    /// `(labels.len() + 1) × height × width` probabilities (softmax over classes).
    pub probs: Vec<f32>,
    /// Frame rows.
    pub frame_height: usize,
    /// Frame columns.
    pub frame_width: usize,
    /// Grid cells per frame pixel along rows.
    pub cells_per_pixel_y: f64,
    /// Grid cells per frame pixel along columns.
    pub cells_per_pixel_x: f64,
}

impl PrototypeSet {
    /// Number of classes including the background.
    pub fn class_count(&self) -> usize {
        self.labels.len() + 1
    }

    /// Checks the set's own consistency (used after parsing a file): classes,
    /// prototype lengths and norms, one global prototype per class.
    pub fn validate(&self) -> Result<(), FewShotError> {
        self.config.validate()?;
        let k = self.class_count();
        if self.labels.is_empty() || self.labels.len() > MAX_CLASSES {
            return Err(FewShotError::ClassCount {
                got: self.labels.len(),
                max: MAX_CLASSES,
            });
        }
        if self.labels.contains(&0) {
            return Err(FewShotError::BackgroundLabel);
        }
        for (i, l) in self.labels.iter().enumerate() {
            if self.labels[..i].contains(l) {
                return Err(FewShotError::DuplicateLabel(*l));
            }
        }
        if self.names.len() != self.labels.len() {
            return Err(FewShotError::InvalidConfig(format!(
                "{} names for {} labels",
                self.names.len(),
                self.labels.len()
            )));
        }
        let c = self.embedding.channels as usize;
        let mut globals = vec![0usize; k];
        for (i, p) in self.prototypes.iter().enumerate() {
            if p.class >= k || p.vector.len() != c || !(p.weight.is_finite() && p.weight > 0.0) {
                return Err(FewShotError::InvalidConfig(format!(
                    "prototype {i}: class {} of {k}, {} of {c} channels, weight {}",
                    p.class,
                    p.vector.len(),
                    p.weight
                )));
            }
            let n = p
                .vector
                .iter()
                .map(|&v| f64::from(v) * f64::from(v))
                .sum::<f64>()
                .sqrt();
            if !(n.is_finite() && (n - 1.0).abs() < 1e-3) {
                return Err(FewShotError::ZeroNormPrototype {
                    class: if p.class == 0 {
                        0
                    } else {
                        self.labels[p.class - 1]
                    },
                });
            }
            if p.kind == PrototypeKind::Global {
                globals[p.class] += 1;
            }
        }
        if globals.iter().any(|&g| g != 1) {
            return Err(FewShotError::InvalidConfig(
                "every class needs exactly one global prototype".into(),
            ));
        }
        Ok(())
    }

    /// Class probabilities of a query embedding on its valid grid region.
    ///
    /// Per class, the scaled cosine similarities `s_j = scale · cos(f, q_j)` to the
    /// class's prototypes are pooled ALPNet-style as `Σ_j softmax(s)_j · s_j`; the
    /// class scores then go through a softmax over classes.
    pub fn predict(&self, query: &Embedding<'_>) -> Result<ProbabilityMap, FewShotError> {
        self.embedding.check_embedding(query)?;
        let geo = Geometry::of(query)?;
        let c = geo.grid.channels;
        let k = self.class_count();
        let count = self.prototypes.len();
        let mut flat = Vec::with_capacity(count * c);
        for p in &self.prototypes {
            flat.extend_from_slice(&p.vector);
        }
        let sims = primitives::cosine_similarity(query.data, geo.grid, geo.valid, &flat, count)?;
        let cells = geo.valid.cells();
        let scale = self.config.scale;
        let mut probs = vec![0.0f32; k * cells];
        // class score per cell: soft-max pooling over the class's prototypes
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); k];
        for (j, p) in self.prototypes.iter().enumerate() {
            members[p.class].push(j);
        }
        let mut score = vec![0.0f32; k];
        for cell in 0..cells {
            for (ci, m) in members.iter().enumerate() {
                let mut max = f32::NEG_INFINITY;
                for &j in m {
                    max = max.max(scale * sims[j * cells + cell]);
                }
                let (mut num, mut den) = (0.0f32, 0.0f32);
                for &j in m {
                    let s = scale * sims[j * cells + cell];
                    let e = (s - max).exp();
                    num += e * s;
                    den += e;
                }
                score[ci] = if den > 0.0 { num / den } else { 0.0 };
            }
            let max = score.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut den = 0.0f32;
            for s in score.iter_mut() {
                *s = (*s - max).exp();
                den += *s;
            }
            for (ci, s) in score.iter().enumerate() {
                probs[ci * cells + cell] = s / den;
            }
        }
        if probs.iter().any(|p| !p.is_finite()) {
            return Err(FewShotError::NonFinite("class probabilities".into()));
        }
        Ok(ProbabilityMap {
            labels: self.labels.clone(),
            height: geo.valid.y1,
            width: geo.valid.x1,
            probs,
            frame_height: geo.frame_h,
            frame_width: geo.frame_w,
            cells_per_pixel_y: geo.ry,
            cells_per_pixel_x: geo.rx,
        })
    }
}

/// Bilinear interpolation table of one axis: for each output pixel, the two grid
/// cells around its centre and the weight of the second.
fn axis_table(out: usize, cells: usize, r: f64) -> Vec<(usize, usize, f32)> {
    (0..out)
        .map(|i| {
            let g = ((i as f64 + 0.5) * r - 0.5).clamp(0.0, (cells - 1) as f64);
            let a = g.floor() as usize;
            let b = (a + 1).min(cells - 1);
            (a, b, (g - a as f64) as f32)
        })
        .collect()
}

impl ProbabilityMap {
    /// Number of classes including the background.
    pub fn class_count(&self) -> usize {
        self.labels.len() + 1
    }

    /// The probability map of class `class` (0 = background), `height × width`.
    pub fn class(&self, class: usize) -> Option<&[f32]> {
        let cells = self.height * self.width;
        self.probs.get(class * cells..(class + 1) * cells)
    }

    /// The class index of a label.
    pub fn class_of_label(&self, label: u8) -> Option<usize> {
        self.labels.iter().position(|&l| l == label).map(|i| i + 1)
    }

    /// The label map at frame size: each pixel gets the label of its most probable
    /// class (0 = background; ties go to the lower class index), with the
    /// probabilities interpolated bilinearly between grid-cell centres.
    pub fn label_mask(&self) -> Vec<u8> {
        let (h, w) = (self.frame_height, self.frame_width);
        let ys = axis_table(h, self.height, self.cells_per_pixel_y);
        let xs = axis_table(w, self.width, self.cells_per_pixel_x);
        let cells = self.height * self.width;
        let k = self.class_count();
        let mut out = vec![0u8; h * w];
        let mut best = vec![0.0f32; w];
        for (y, &(ya, yb, wy)) in ys.iter().enumerate() {
            let row = &mut out[y * w..(y + 1) * w];
            for ci in 0..k {
                let p = &self.probs[ci * cells..(ci + 1) * cells];
                let ra = &p[ya * self.width..(ya + 1) * self.width];
                let rb = &p[yb * self.width..(yb + 1) * self.width];
                for (x, &(xa, xb, wx)) in xs.iter().enumerate() {
                    let top = ra[xa] + (ra[xb] - ra[xa]) * wx;
                    let bot = rb[xa] + (rb[xb] - rb[xa]) * wx;
                    let v = top + (bot - top) * wy;
                    if ci == 0 || v > best[x] {
                        best[x] = v;
                        row[x] = if ci == 0 { 0 } else { self.labels[ci - 1] };
                    }
                }
            }
        }
        out
    }

    /// The 0/1 mask of one label at frame size (see [`Self::label_mask`]).
    pub fn class_mask(&self, label: u8) -> Vec<u8> {
        self.label_mask()
            .into_iter()
            .map(|l| u8::from(l == label && label != 0))
            .collect()
    }
}
