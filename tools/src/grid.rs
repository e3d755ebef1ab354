//! 2D and 3D masks on a regular grid, and the few grid operations the tools need
//! (bounding boxes, connected components, hole filling).
//!
//! Data are stored in C order: 2D as `[height, width]` (row-major), 3D as the NIfTI array
//! axes `[i, j, k]` with `k` fastest. Internally a 2D shape is a 3D shape `[1, h, w]` whose
//! first axis is not a real axis: neighbours are only taken along real axes.

use std::collections::VecDeque;
use std::fmt;

/// The spatial shape of a 2D image or 3D volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shape {
    ndim: usize,
    dims: [usize; 3],
}

impl Shape {
    /// A 2D shape, `height` rows by `width` columns.
    pub fn d2(height: usize, width: usize) -> Self {
        Self {
            ndim: 2,
            dims: [1, height, width],
        }
    }

    /// A 3D shape over array axes (i, j, k).
    pub fn d3(i: usize, j: usize, k: usize) -> Self {
        Self {
            ndim: 3,
            dims: [i, j, k],
        }
    }

    /// 2 or 3.
    pub fn ndim(&self) -> usize {
        self.ndim
    }

    /// The sizes of the real axes (`[h, w]` or `[i, j, k]`).
    pub fn dims(&self) -> &[usize] {
        &self.dims[3 - self.ndim..]
    }

    /// The padded 3-axis sizes (`[1, h, w]` for 2D).
    pub(crate) fn dims3(&self) -> [usize; 3] {
        self.dims
    }

    /// The first real axis in the padded 3-axis view.
    pub(crate) fn first_axis(&self) -> usize {
        3 - self.ndim
    }

    /// Number of elements (saturating; shapes built from real data never saturate).
    pub fn len(&self) -> usize {
        self.dims.iter().fold(1usize, |a, &d| a.saturating_mul(d))
    }

    /// Whether the shape holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Linear index of a padded 3-axis coordinate.
    pub(crate) fn index(&self, c: [usize; 3]) -> usize {
        (c[0] * self.dims[1] + c[1]) * self.dims[2] + c[2]
    }

    /// Padded 3-axis coordinate of a linear index.
    pub(crate) fn coord(&self, idx: usize) -> [usize; 3] {
        let k = idx % self.dims[2];
        let r = idx / self.dims[2];
        [r / self.dims[1], r % self.dims[1], k]
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.dims();
        let parts: Vec<String> = d.iter().map(|v| v.to_string()).collect();
        write!(f, "{}", parts.join("x"))?;
        if self.ndim == 2 {
            f.write_str(" (HxW)")
        } else {
            f.write_str(" (IxJxK)")
        }
    }
}

/// Which neighbours count as connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connectivity {
    /// Neighbours sharing a face: 4 in 2D, 6 in 3D.
    Face,
    /// All neighbours: 8 in 2D, 26 in 3D.
    Full,
}

/// An integer label per element (0 = background).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelMap {
    /// The shape.
    pub shape: Shape,
    /// One label per element, C order.
    pub data: Vec<u8>,
}

impl LabelMap {
    /// The distinct non-zero labels, ascending.
    pub fn labels(&self) -> Vec<u8> {
        let mut seen = [false; 256];
        for &v in &self.data {
            seen[v as usize] = true;
        }
        (1..=255u8).filter(|&v| seen[v as usize]).collect()
    }

    /// Foreground of one label, or of every non-zero label when `label` is `None`.
    pub fn foreground(&self, label: Option<u8>) -> BinaryMask {
        let data = match label {
            Some(l) => self.data.iter().map(|&v| v == l).collect(),
            None => self.data.iter().map(|&v| v != 0).collect(),
        };
        BinaryMask {
            shape: self.shape,
            data,
        }
    }
}

/// An inclusive axis-aligned box over the real axes (`[row, col]` or `[i, j, k]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct GridBox {
    /// Smallest index per real axis.
    pub min: [usize; 3],
    /// Largest index per real axis (inclusive).
    pub max: [usize; 3],
    /// 2 or 3: how many entries of `min`/`max` are used.
    pub ndim: usize,
}

impl GridBox {
    /// Number of elements inside.
    pub fn volume(&self) -> usize {
        (0..self.ndim).fold(1usize, |a, d| {
            a.saturating_mul(self.max[d] - self.min[d] + 1)
        })
    }

    /// Whether a padded 3-axis coordinate lies inside.
    pub(crate) fn contains3(&self, shape: &Shape, c: [usize; 3]) -> bool {
        let f = shape.first_axis();
        (0..self.ndim).all(|d| (self.min[d]..=self.max[d]).contains(&c[f + d]))
    }

    /// As `x0,y0,x1,y1` (2D only; columns are x, rows are y).
    pub fn xyxy(&self) -> Option<[usize; 4]> {
        (self.ndim == 2).then(|| [self.min[1], self.min[0], self.max[1], self.max[0]])
    }
}

/// A binary mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryMask {
    /// The shape.
    pub shape: Shape,
    /// `true` = foreground, C order.
    pub data: Vec<bool>,
}

impl BinaryMask {
    /// An all-background mask.
    pub fn empty(shape: Shape) -> Self {
        Self {
            shape,
            data: vec![false; shape.len()],
        }
    }

    /// Number of foreground elements.
    pub fn count(&self) -> usize {
        self.data.iter().filter(|&&v| v).count()
    }

    /// Tight inclusive bounding box of the foreground, `None` if empty.
    pub fn bbox(&self) -> Option<GridBox> {
        let f = self.shape.first_axis();
        let mut min = [usize::MAX; 3];
        let mut max = [0usize; 3];
        let mut any = false;
        for (idx, _) in self.data.iter().enumerate().filter(|(_, &v)| v) {
            any = true;
            let c = self.shape.coord(idx);
            for d in 0..self.shape.ndim() {
                min[d] = min[d].min(c[f + d]);
                max[d] = max[d].max(c[f + d]);
            }
        }
        any.then(|| {
            min[self.shape.ndim()..].fill(0);
            GridBox {
                min,
                max,
                ndim: self.shape.ndim(),
            }
        })
    }

    /// The foreground split into connected components (each as its own mask), largest first;
    /// ties keep scan order.
    pub fn components(&self, conn: Connectivity) -> Vec<BinaryMask> {
        let (labels, sizes) = label_components(&self.data, &self.shape, conn, |v| v);
        let mut order: Vec<usize> = (0..sizes.len()).collect();
        order.sort_by(|&a, &b| sizes[b].cmp(&sizes[a]));
        order
            .into_iter()
            .map(|c| BinaryMask {
                shape: self.shape,
                data: labels.iter().map(|&l| l == c + 1).collect(),
            })
            .collect()
    }

    /// Only the largest connected component (empty stays empty).
    pub fn largest_component(&self, conn: Connectivity) -> BinaryMask {
        let (labels, sizes) = label_components(&self.data, &self.shape, conn, |v| v);
        let Some((best, _)) = sizes
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(&a.0)))
        else {
            return BinaryMask::empty(self.shape);
        };
        BinaryMask {
            shape: self.shape,
            data: labels.iter().map(|&l| l == best + 1).collect(),
        }
    }

    /// Fills holes: background regions (face-connected) that do not touch the border of
    /// `region` (or of the grid, when `region` is `None`) become foreground. Elements outside
    /// `region` are left unchanged.
    pub fn fill_holes(&self, region: Option<&GridBox>) -> BinaryMask {
        let shape = self.shape;
        let inside = |c: [usize; 3]| region.is_none_or(|r| r.contains3(&shape, c));
        let (labels, sizes) = label_components(&self.data, &shape, Connectivity::Face, |v| !v);
        let mut touches = vec![false; sizes.len()];
        let f = shape.first_axis();
        let d3 = shape.dims3();
        for (idx, &l) in labels.iter().enumerate() {
            if l == 0 {
                continue;
            }
            let c = shape.coord(idx);
            let on_edge = if let Some(r) = region {
                if !r.contains3(&shape, c) {
                    // background outside the region is connected to "outside"
                    true
                } else {
                    (0..shape.ndim()).any(|d| c[f + d] == r.min[d] || c[f + d] == r.max[d])
                }
            } else {
                (f..3).any(|a| c[a] == 0 || c[a] + 1 == d3[a])
            };
            if on_edge {
                touches[l - 1] = true;
            }
        }
        let data = self
            .data
            .iter()
            .zip(&labels)
            .enumerate()
            .map(|(idx, (&v, &l))| v || (l > 0 && !touches[l - 1] && inside(shape.coord(idx))))
            .collect();
        BinaryMask { shape, data }
    }
}

/// Labels the elements selected by `pick` into components 1..=n; returns per-element label
/// (0 = not selected) and the component sizes.
fn label_components(
    data: &[bool],
    shape: &Shape,
    conn: Connectivity,
    pick: impl Fn(bool) -> bool,
) -> (Vec<usize>, Vec<usize>) {
    let offsets = neighbour_offsets(shape, conn);
    let d3 = shape.dims3();
    let mut labels = vec![0usize; data.len()];
    let mut sizes = Vec::new();
    let mut queue = VecDeque::new();
    for start in 0..data.len() {
        if labels[start] != 0 || !pick(data[start]) {
            continue;
        }
        sizes.push(0usize);
        let id = sizes.len();
        labels[start] = id;
        queue.push_back(start);
        while let Some(idx) = queue.pop_front() {
            sizes[id - 1] += 1;
            let c = shape.coord(idx);
            for off in &offsets {
                let mut n = [0usize; 3];
                let mut ok = true;
                for a in 0..3 {
                    let v = c[a] as isize + off[a];
                    if v < 0 || v as usize >= d3[a] {
                        ok = false;
                        break;
                    }
                    n[a] = v as usize;
                }
                if !ok {
                    continue;
                }
                let ni = shape.index(n);
                if labels[ni] == 0 && pick(data[ni]) {
                    labels[ni] = id;
                    queue.push_back(ni);
                }
            }
        }
    }
    (labels, sizes)
}

fn neighbour_offsets(shape: &Shape, conn: Connectivity) -> Vec<[isize; 3]> {
    let f = shape.first_axis();
    let mut out = Vec::new();
    let range = |a: usize| if a >= f { -1isize..=1 } else { 0..=0 };
    for d0 in range(0) {
        for d1 in range(1) {
            for d2 in range(2) {
                let nz = [d0, d1, d2].iter().filter(|&&v| v != 0).count();
                let keep = match conn {
                    Connectivity::Face => nz == 1,
                    Connectivity::Full => nz >= 1,
                };
                if keep {
                    out.push([d0, d1, d2]);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask2d(rows: &[&str]) -> BinaryMask {
        let h = rows.len();
        let w = rows[0].len();
        BinaryMask {
            shape: Shape::d2(h, w),
            data: rows
                .iter()
                .flat_map(|r| r.bytes().map(|b| b == b'#'))
                .collect(),
        }
    }

    #[test]
    fn bbox_is_inclusive_row_col() {
        let m = mask2d(&["....", ".#..", "..#.", "...."]);
        let b = m.bbox().unwrap();
        assert_eq!(&b.min[..2], &[1, 1]);
        assert_eq!(&b.max[..2], &[2, 2]);
        assert_eq!(b.xyxy(), Some([1, 1, 2, 2]));
        assert_eq!(b.volume(), 4);
        assert!(BinaryMask::empty(Shape::d2(3, 3)).bbox().is_none());
    }

    #[test]
    fn components_respect_connectivity() {
        let m = mask2d(&["#...", ".#..", "...#", "..##"]);
        assert_eq!(m.components(Connectivity::Face).len(), 3);
        assert_eq!(m.components(Connectivity::Full).len(), 2);
        let big = m.largest_component(Connectivity::Face);
        assert_eq!(big.count(), 3);
    }

    #[test]
    fn holes_filled_but_border_background_kept() {
        let m = mask2d(&["#####", "#...#", "#.#.#", "#####", "....."]);
        let f = m.fill_holes(None);
        assert_eq!(f.count(), 20);
        // open ring: background touches the border -> not a hole
        let open = mask2d(&["##.##", "#...#", "#####"]);
        assert_eq!(open.fill_holes(None), open);
    }

    #[test]
    fn holes_relative_to_region() {
        // the ring touches the region border on the left, so the inside is not a hole there
        let m = mask2d(&["......", ".####.", ".#..#.", ".####.", "......"]);
        let region = GridBox {
            min: [1, 1, 0],
            max: [3, 4, 0],
            ndim: 2,
        };
        assert_eq!(m.fill_holes(Some(&region)).count(), 12);
        let region2 = GridBox {
            min: [1, 2, 0],
            max: [3, 4, 0],
            ndim: 2,
        };
        // in this region the gap column touches the region's left border: stays background
        assert_eq!(m.fill_holes(Some(&region2)).count(), 10);
    }

    #[test]
    fn three_d_components_and_shape() {
        let shape = Shape::d3(2, 2, 2);
        let mut data = vec![false; 8];
        data[shape.index([0, 0, 0])] = true;
        data[shape.index([1, 1, 1])] = true;
        let m = BinaryMask { shape, data };
        assert_eq!(m.components(Connectivity::Face).len(), 2);
        assert_eq!(m.components(Connectivity::Full).len(), 1);
        assert_eq!(shape.coord(shape.index([1, 0, 1])), [1, 0, 1]);
        assert_eq!(format!("{shape}"), "2x2x2 (IxJxK)");
    }
}
