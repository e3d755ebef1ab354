//! Datasets described by a `manifest.csv`, and the images, masks and volumes they list.
//!
//! A dataset folder is any folder holding a `manifest.csv` with at least the columns
//! `image,mask,split,group`, optionally `frame`, `spacing_mm` and any other columns (kept as
//! extras). Paths are relative to the folder. Splits (`train`, `val`, `test`) come only from the
//! manifest, and a `group` (patient, subject, video sequence) may never appear in two splits:
//! opening a manifest that mixes them is an error.
//!
//! 2D images are PNG or JPEG, grey or RGB (alpha is dropped, 16-bit is reduced to 8-bit).
//! 2D masks are single-channel PNG: either binary (0 = background; foreground = value > 127,
//! the 0/255 convention) or multi-label (every value ≤ 127, each non-zero value is a label).
//! 3D images and label maps are NIfTI-1 (`.nii` / `.nii.gz`); the spacing comes from the
//! header's `pixdim`, in array-axis order.
//!
//! Every error names the file, and for manifest problems the line.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use crate::grid::{LabelMap, Shape};

/// The largest image or volume the dataset layer will decode (voxels × channels), checked
/// before any pixel buffer is allocated.
pub const MAX_ELEMENTS: usize = 1 << 28;

/// Errors from reading a dataset. Each names the file (and line) it is about.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The manifest could not be read at all.
    #[error("cannot read manifest {path}: {source}")]
    ManifestIo {
        /// The manifest path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A problem with one line (or the header) of the manifest.
    #[error("{path}:{line}: {message}")]
    Manifest {
        /// The manifest path.
        path: PathBuf,
        /// 1-based line number (1 = header).
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// A file listed in the manifest is missing or cannot be decoded.
    #[error("{file} (listed in {manifest}:{line}): {message}")]
    File {
        /// The file.
        file: PathBuf,
        /// The manifest that lists it.
        manifest: PathBuf,
        /// The manifest line.
        line: u64,
        /// What is wrong.
        message: String,
    },
}

/// Which part of the data a case belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Training data.
    Train,
    /// Validation (tuning) data.
    Val,
    /// Held-out test data: report on it, never train on it.
    Test,
}

impl Split {
    /// The manifest spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::str::FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "train" => Ok(Split::Train),
            "val" => Ok(Split::Val),
            "test" => Ok(Split::Test),
            other => Err(format!(
                "unknown split '{other}' (expected train, val or test)"
            )),
        }
    }
}

/// Whether the dataset holds 2D images or 3D volumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dimensionality {
    /// PNG/JPEG images with PNG masks.
    TwoD,
    /// NIfTI volumes with NIfTI label maps.
    ThreeD,
}

/// One row of a manifest.
#[derive(Debug, Clone)]
pub struct Case {
    /// 1-based line number in the manifest (for error messages).
    pub line: u64,
    /// Image path relative to the dataset folder, as written in the manifest.
    pub image: String,
    /// Mask path relative to the dataset folder, as written in the manifest.
    pub mask: String,
    /// The split.
    pub split: Split,
    /// Patient / subject / sequence id; never spans two splits.
    pub group: String,
    /// Frame number inside a video sequence, when the manifest has it.
    pub frame: Option<u64>,
    /// Isotropic pixel size in mm from the `spacing_mm` column, when present (2D datasets).
    pub spacing_mm: Option<f64>,
    /// Any other columns, by header name (empty values omitted).
    pub extra: BTreeMap<String, String>,
}

impl Case {
    /// A short id for reports: the image file stem.
    pub fn id(&self) -> String {
        let p = Path::new(&self.image);
        let stem = p
            .file_name()
            .map(|s| s.to_string_lossy())
            .unwrap_or_default();
        stem.trim_end_matches(".gz")
            .trim_end_matches(".nii")
            .trim_end_matches(".png")
            .trim_end_matches(".jpg")
            .trim_end_matches(".jpeg")
            .to_string()
    }
}

/// A dataset: its folder and the parsed manifest.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The dataset folder.
    pub root: PathBuf,
    /// The manifest path.
    pub manifest: PathBuf,
    /// Cases in manifest order.
    pub cases: Vec<Case>,
    /// 2D or 3D, from the file extensions.
    pub dimensionality: Dimensionality,
}

/// A decoded 2D image: 8-bit, row-major, channels interleaved (HWC).
#[derive(Debug, Clone, PartialEq)]
pub struct Image2d {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// `height * width * channels` bytes.
    pub data: Vec<u8>,
}

impl Image2d {
    /// The luminance of every pixel (grey images are returned as they are; RGB uses
    /// ITU-R BT.601 weights, rounded).
    pub fn to_grey(&self) -> Vec<u8> {
        if self.channels == 1 {
            return self.data.clone();
        }
        self.data
            .chunks_exact(self.channels)
            .map(|p| {
                let y = 0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2]);
                y.round().clamp(0.0, 255.0) as u8
            })
            .collect()
    }

    /// The image replicated or kept as 3-channel RGB (HWC).
    pub fn to_rgb(&self) -> Vec<u8> {
        if self.channels == 3 {
            return self.data.clone();
        }
        self.data.iter().flat_map(|&v| [v, v, v]).collect()
    }
}

/// A decoded 3D volume: intensities as f32 in C order over the NIfTI array axes (i, j, k).
#[derive(Debug, Clone, PartialEq)]
pub struct Volume {
    /// Array shape (i, j, k) as nibabel reports it.
    pub shape: [usize; 3],
    /// Voxel size in mm per array axis, from `pixdim[1..4]`.
    pub spacing_mm: [f64; 3],
    /// `i*j*k` values, k fastest.
    pub data: Vec<f32>,
}

/// The image of one case: 2D picture or 3D volume.
#[derive(Debug, Clone, PartialEq)]
pub enum CaseImage {
    /// A 2D image.
    TwoD(Image2d),
    /// A 3D volume.
    ThreeD(Volume),
}

impl CaseImage {
    /// Spatial shape: `[height, width]` or `[i, j, k]`.
    pub fn shape(&self) -> Shape {
        match self {
            CaseImage::TwoD(im) => Shape::d2(im.height, im.width),
            CaseImage::ThreeD(v) => Shape::d3(v.shape[0], v.shape[1], v.shape[2]),
        }
    }
}

/// A fully loaded case: image, label map and the spacing to measure in.
#[derive(Debug, Clone)]
pub struct LoadedCase {
    /// The image.
    pub image: CaseImage,
    /// The ground-truth labels (binary masks have the single label 1).
    pub labels: LabelMap,
    /// Physical spacing per axis in mm, when known (2D: `[row, col]`).
    pub spacing_mm: Option<Vec<f64>>,
}

impl Dataset {
    /// Opens a dataset folder: parses and validates `DIR/manifest.csv` and checks that every
    /// listed file exists. Images are decoded lazily by [`Dataset::load`].
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, DatasetError> {
        let root = dir.as_ref().to_path_buf();
        let manifest = root.join("manifest.csv");
        let text =
            std::fs::read_to_string(&manifest).map_err(|source| DatasetError::ManifestIo {
                path: manifest.clone(),
                source,
            })?;
        let cases = parse_manifest(&text, &manifest)?;
        let dimensionality = dimensionality_of(&cases, &manifest)?;
        for case in &cases {
            for rel in [&case.image, &case.mask] {
                let path = root.join(rel);
                if !path.is_file() {
                    return Err(DatasetError::File {
                        file: path,
                        manifest: manifest.clone(),
                        line: case.line,
                        message: "file not found".into(),
                    });
                }
            }
        }
        Ok(Self {
            root,
            manifest,
            cases,
            dimensionality,
        })
    }

    /// A short name: the folder name.
    pub fn name(&self) -> String {
        self.root
            .canonicalize()
            .unwrap_or_else(|_| self.root.clone())
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "dataset".into())
    }

    /// The cases of one split, in manifest order.
    pub fn split(&self, split: Split) -> impl Iterator<Item = &Case> {
        self.cases.iter().filter(move |c| c.split == split)
    }

    /// Absolute path of a manifest-relative path.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Decodes the image and mask of a case (and checks that their shapes agree).
    pub fn load(&self, case: &Case) -> Result<LoadedCase, DatasetError> {
        let err = |file: PathBuf, message: String| DatasetError::File {
            file,
            manifest: self.manifest.clone(),
            line: case.line,
            message,
        };
        let image_path = self.path(&case.image);
        let mask_path = self.path(&case.mask);
        match self.dimensionality {
            Dimensionality::TwoD => {
                let image = read_image2d(&image_path).map_err(|m| err(image_path.clone(), m))?;
                let labels = read_mask2d(&mask_path).map_err(|m| err(mask_path.clone(), m))?;
                if labels.shape != Shape::d2(image.height, image.width) {
                    return Err(err(
                        mask_path,
                        format!(
                            "mask is {} but the image {} is {}x{} (HxW)",
                            labels.shape,
                            image_path.display(),
                            image.height,
                            image.width
                        ),
                    ));
                }
                let spacing_mm = case.spacing_mm.map(|s| vec![s, s]);
                Ok(LoadedCase {
                    image: CaseImage::TwoD(image),
                    labels,
                    spacing_mm,
                })
            }
            Dimensionality::ThreeD => {
                let volume = read_volume(&image_path).map_err(|m| err(image_path.clone(), m))?;
                let labels =
                    read_label_volume(&mask_path).map_err(|m| err(mask_path.clone(), m))?;
                let vshape = Shape::d3(volume.shape[0], volume.shape[1], volume.shape[2]);
                if labels.shape != vshape {
                    return Err(err(
                        mask_path,
                        format!("label map is {} but the image is {}", labels.shape, vshape),
                    ));
                }
                let spacing_mm = Some(volume.spacing_mm.to_vec());
                Ok(LoadedCase {
                    image: CaseImage::ThreeD(volume),
                    labels,
                    spacing_mm,
                })
            }
        }
    }
}

fn is_3d_path(p: &str) -> bool {
    let l = p.to_ascii_lowercase();
    l.ends_with(".nii") || l.ends_with(".nii.gz")
}

fn dimensionality_of(cases: &[Case], manifest: &Path) -> Result<Dimensionality, DatasetError> {
    let Some(first) = cases.first() else {
        return Err(DatasetError::Manifest {
            path: manifest.to_path_buf(),
            line: 1,
            message: "the manifest lists no cases".into(),
        });
    };
    let want = is_3d_path(&first.image);
    for c in cases {
        if is_3d_path(&c.image) != want || is_3d_path(&c.mask) != want {
            return Err(DatasetError::Manifest {
                path: manifest.to_path_buf(),
                line: c.line,
                message: "mixes 2D images (PNG/JPEG) and 3D volumes (NIfTI) in one manifest".into(),
            });
        }
    }
    Ok(if want {
        Dimensionality::ThreeD
    } else {
        Dimensionality::TwoD
    })
}

/// Parses manifest text. `path` is only used in error messages.
pub fn parse_manifest(text: &str, path: &Path) -> Result<Vec<Case>, DatasetError> {
    let merr = |line: u64, message: String| DatasetError::Manifest {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| merr(1, format!("unreadable header: {e}")))?
        .clone();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let mut missing = Vec::new();
    let mut required = [0usize; 4];
    for (slot, name) in required.iter_mut().zip(["image", "mask", "split", "group"]) {
        match col(name) {
            Some(i) => *slot = i,
            None => missing.push(name),
        }
    }
    if !missing.is_empty() {
        return Err(merr(
            1,
            format!(
                "missing required column(s) {} (header is '{}'; expected image,mask,split,group[,frame][,spacing_mm,...])",
                missing.join(", "),
                headers.iter().collect::<Vec<_>>().join(",")
            ),
        ));
    }
    let [c_image, c_mask, c_split, c_group] = required;
    let c_frame = col("frame");
    let c_spacing = col("spacing_mm");

    let mut cases = Vec::new();
    let mut group_split: HashMap<String, (Split, u64)> = HashMap::new();
    let mut seen_images: HashMap<String, u64> = HashMap::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map(|p| p.line()).unwrap_or(0);
            merr(line, format!("malformed CSV record: {e}"))
        })?;
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        if record.iter().all(|f| f.is_empty()) {
            continue;
        }
        let field = |i: usize| record.get(i).unwrap_or("");
        let image = field(c_image).to_string();
        let mask = field(c_mask).to_string();
        let group = field(c_group).to_string();
        for (name, v) in [("image", &image), ("mask", &mask), ("group", &group)] {
            if v.is_empty() {
                return Err(merr(line, format!("empty '{name}' field")));
            }
        }
        for (name, v) in [("image", &image), ("mask", &mask)] {
            let p = Path::new(v.as_str());
            if p.is_absolute()
                || p.components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(merr(
                    line,
                    format!("'{name}' path '{v}' must be relative to the dataset folder and stay inside it"),
                ));
            }
        }
        let split: Split = field(c_split).parse().map_err(|m| merr(line, m))?;
        let frame = match c_frame.map(field).filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(s.parse::<u64>().map_err(|_| {
                merr(
                    line,
                    format!("'frame' is '{s}', not a non-negative integer"),
                )
            })?),
        };
        let spacing_mm = match c_spacing.map(field).filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => {
                let v: f64 = s
                    .parse()
                    .map_err(|_| merr(line, format!("'spacing_mm' is '{s}', not a number")))?;
                if !(v.is_finite() && v > 0.0) {
                    return Err(merr(
                        line,
                        format!("'spacing_mm' must be positive, got {v}"),
                    ));
                }
                Some(v)
            }
        };
        if let Some((other, other_line)) = group_split.get(&group) {
            if *other != split {
                return Err(merr(
                    line,
                    format!(
                        "group '{group}' is in split '{split}' here but in '{other}' on line {other_line}: a group may not span two splits"
                    ),
                ));
            }
        } else {
            group_split.insert(group.clone(), (split, line));
        }
        if let Some(prev) = seen_images.insert(image.clone(), line) {
            return Err(merr(
                line,
                format!("image '{image}' is listed twice (also on line {prev})"),
            ));
        }
        let mut extra = BTreeMap::new();
        for (i, h) in headers.iter().enumerate() {
            if [
                Some(c_image),
                Some(c_mask),
                Some(c_split),
                Some(c_group),
                c_frame,
                c_spacing,
            ]
            .contains(&Some(i))
            {
                continue;
            }
            let v = field(i);
            if !v.is_empty() {
                extra.insert(h.to_string(), v.to_string());
            }
        }
        cases.push(Case {
            line,
            image,
            mask,
            split,
            group,
            frame,
            spacing_mm,
            extra,
        });
    }
    Ok(cases)
}

fn check_pixels(w: u32, h: u32, channels: usize) -> Result<(usize, usize), String> {
    let (w, h) = (w as usize, h as usize);
    if w == 0 || h == 0 {
        return Err(format!("image has zero size ({w}x{h})"));
    }
    match w.checked_mul(h).and_then(|n| n.checked_mul(channels)) {
        Some(n) if n <= MAX_ELEMENTS => Ok((w, h)),
        _ => Err(format!(
            "image of {w}x{h}x{channels} exceeds the limit of {MAX_ELEMENTS} values"
        )),
    }
}

fn open_image(path: &Path) -> Result<image::DynamicImage, String> {
    let reader = image::ImageReader::open(path)
        .map_err(|e| format!("cannot open: {e}"))?
        .with_guessed_format()
        .map_err(|e| format!("cannot read: {e}"))?;
    let mut reader = reader;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some((MAX_ELEMENTS as u64).saturating_mul(2));
    reader.limits(limits);
    reader
        .decode()
        .map_err(|e| format!("cannot decode image: {e}"))
}

/// Reads a PNG/JPEG image as 8-bit grey (1 channel) or RGB (3 channels).
pub fn read_image2d(path: &Path) -> Result<Image2d, String> {
    let img = open_image(path)?;
    let grey = matches!(
        img.color(),
        image::ColorType::L8
            | image::ColorType::L16
            | image::ColorType::La8
            | image::ColorType::La16
    );
    if grey {
        let g = img.to_luma8();
        let (width, height) = check_pixels(g.width(), g.height(), 1)?;
        Ok(Image2d {
            width,
            height,
            channels: 1,
            data: g.into_raw(),
        })
    } else {
        let rgb = img.to_rgb8();
        let (width, height) = check_pixels(rgb.width(), rgb.height(), 3)?;
        Ok(Image2d {
            width,
            height,
            channels: 3,
            data: rgb.into_raw(),
        })
    }
}

/// Reads a single-channel mask image into a label map.
///
/// Binary masks (any value > 127 present, e.g. 0/255) become label 1 where value > 127;
/// multi-label masks (all values ≤ 127) keep their values as labels. An RGB mask is refused.
pub fn read_mask2d(path: &Path) -> Result<LabelMap, String> {
    let img = open_image(path)?;
    if !matches!(
        img.color(),
        image::ColorType::L8 | image::ColorType::L16 | image::ColorType::La8
    ) {
        return Err(format!(
            "a mask must be a single-channel (grey) image, this one is {:?}",
            img.color()
        ));
    }
    let g = img.to_luma8();
    let (w, h) = check_pixels(g.width(), g.height(), 1)?;
    let raw = g.into_raw();
    let binary = raw.iter().any(|&v| v > 127);
    let data = if binary {
        raw.iter().map(|&v| u8::from(v > 127)).collect()
    } else {
        raw
    };
    Ok(LabelMap {
        shape: Shape::d2(h, w),
        data,
    })
}

struct NiftiArray {
    shape: [usize; 3],
    spacing: [f64; 3],
    data: Vec<f32>,
}

fn read_nifti(path: &Path) -> Result<NiftiArray, String> {
    use nifti::{IntoNdArray, NiftiObject, NiftiVolume};
    let header =
        nifti::NiftiHeader::from_file(path).map_err(|e| format!("bad NIfTI header: {e}"))?;
    let ndim = header.dim[0] as usize;
    if !(3..=7).contains(&ndim) {
        return Err(format!(
            "NIfTI has {ndim} dimensions; a 3D volume is required"
        ));
    }
    for (axis, &d) in header.dim[4..=ndim].iter().enumerate() {
        if d > 1 {
            return Err(format!(
                "NIfTI dimension {} has size {d}; only 3D volumes (extra dimensions of size 1) are supported",
                axis + 4
            ));
        }
    }
    let shape = [
        header.dim[1] as usize,
        header.dim[2] as usize,
        header.dim[3] as usize,
    ];
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n > 0 && n <= MAX_ELEMENTS)
        .ok_or_else(|| {
            format!("NIfTI volume {shape:?} is empty or exceeds {MAX_ELEMENTS} voxels")
        })?;
    let mut spacing = [0.0f64; 3];
    for (s, &p) in spacing.iter_mut().zip(&header.pixdim[1..4]) {
        let p = f64::from(p.abs());
        *s = if p.is_finite() && p > 0.0 { p } else { 1.0 };
    }
    let obj = nifti::ReaderOptions::new()
        .read_file(path)
        .map_err(|e| format!("cannot read NIfTI: {e}"))?;
    let vol = obj.into_volume();
    if vol
        .dim()
        .iter()
        .take(3)
        .map(|&d| d as usize)
        .ne(shape.iter().copied())
    {
        return Err("NIfTI volume size differs from its header".into());
    }
    let arr = vol
        .into_ndarray::<f32>()
        .map_err(|e| format!("cannot decode NIfTI voxels: {e}"))?;
    let s = arr.shape();
    if s.len() < 3 || s[..3] != shape || s[3..].iter().any(|&d| d != 1) {
        return Err(format!("NIfTI voxel array is {s:?}, expected {shape:?}"));
    }
    // `iter()` walks the logical (C) order whatever the memory order is; trailing axes of
    // size 1 do not change that order.
    let data: Vec<f32> = arr.iter().copied().collect();
    if data.len() != n {
        return Err("NIfTI voxel count differs from its header".into());
    }
    Ok(NiftiArray {
        shape,
        spacing,
        data,
    })
}

/// Reads a NIfTI-1 volume (intensities, scaled by `scl_slope`/`scl_inter` when set).
pub fn read_volume(path: &Path) -> Result<Volume, String> {
    let a = read_nifti(path)?;
    Ok(Volume {
        shape: a.shape,
        spacing_mm: a.spacing,
        data: a.data,
    })
}

/// Reads a NIfTI-1 label volume: non-negative integer labels up to 255.
pub fn read_label_volume(path: &Path) -> Result<LabelMap, String> {
    let a = read_nifti(path)?;
    let mut data = Vec::with_capacity(a.data.len());
    for &v in &a.data {
        if !((0.0..=255.0).contains(&v) && v.fract() == 0.0) {
            return Err(format!(
                "label volume holds {v}; labels must be integers in 0..=255"
            ));
        }
        data.push(v as u8);
    }
    Ok(LabelMap {
        shape: Shape::d3(a.shape[0], a.shape[1], a.shape[2]),
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Case>, DatasetError> {
        parse_manifest(text, Path::new("m.csv"))
    }

    #[test]
    fn parses_optional_columns_and_extras() {
        let cases = parse(
            "image,mask,split,group,frame,spacing_mm,hc_mm\n\
             a.png,ma.png,train,g1,3,0.5,61.2\n\
             b.png,mb.png,test,g2,,,\n",
        )
        .unwrap();
        assert_eq!(cases.len(), 2);
        assert_eq!(cases[0].frame, Some(3));
        assert_eq!(cases[0].spacing_mm, Some(0.5));
        assert_eq!(
            cases[0].extra.get("hc_mm").map(String::as_str),
            Some("61.2")
        );
        assert_eq!(cases[0].line, 2);
        assert_eq!(cases[1].frame, None);
        assert_eq!(cases[1].split, Split::Test);
        assert!(cases[1].extra.is_empty());
    }

    #[test]
    fn error_names_file_and_line() {
        let e = parse("image,mask,split,group\na.png,m.png,train,g\nb.png,n.png,tset,g2\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("m.csv:3:"), "{e}");
        assert!(e.contains("tset"), "{e}");
    }

    #[test]
    fn missing_column_is_refused() {
        let e = parse("image,mask,group\na.png,m.png,g\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("m.csv:1") && e.contains("split"), "{e}");
    }

    #[test]
    fn group_spanning_splits_is_refused() {
        let e = parse("image,mask,split,group\na.png,m.png,train,p1\nb.png,n.png,test,p1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("m.csv:3") && e.contains("p1"), "{e}");
    }

    #[test]
    fn bad_numbers_and_paths_are_refused() {
        for (text, needle) in [
            (
                "image,mask,split,group,frame\na.png,m.png,train,g,x\n",
                "frame",
            ),
            (
                "image,mask,split,group,spacing_mm\na.png,m.png,train,g,-1\n",
                "spacing_mm",
            ),
            ("image,mask,split,group\n../a.png,m.png,train,g\n", "inside"),
            ("image,mask,split,group\n,m.png,train,g\n", "image"),
            (
                "image,mask,split,group\na.png,m.png,train,g\na.png,n.png,train,g\n",
                "twice",
            ),
            ("image,mask,split,group\na.png,m.png,train\n", "CSV"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?} -> {e}");
            assert!(e.starts_with("m.csv:"), "{e}");
        }
    }

    #[test]
    fn grey_conversion_uses_bt601() {
        let im = Image2d {
            width: 2,
            height: 1,
            channels: 3,
            data: vec![255, 0, 0, 10, 20, 30],
        };
        assert_eq!(im.to_grey(), vec![76, 18]);
        let g = Image2d {
            width: 1,
            height: 1,
            channels: 1,
            data: vec![7],
        };
        assert_eq!(g.to_rgb(), vec![7, 7, 7]);
    }
}
