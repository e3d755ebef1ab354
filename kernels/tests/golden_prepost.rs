//! Pre/post-processing against the LiteMedSAM golden files
//! (`shared/golden/litemedsam/`, see its README). Skipped, with a message, when
//! the shared folder is absent (set `EDGESEG_SHARED` to point elsewhere).

use std::path::PathBuf;

use edgeseg_kernels::npy::read_npy;
use edgeseg_kernels::prepost::{
    box_to_256, point_to_256, preprocess_rgb, threshold_logits, upsample_logits, INPUT_SIZE,
};

/// (folder, image path relative to shared/, GT box x0,y0,x1,y1 inclusive)
const CASES: [(&str, &str, [f64; 4]); 6] = [
    (
        "cvc_clinicdb__375",
        "data/cvc_clinicdb/images/375.png",
        [166.0, 139.0, 208.0, 167.0],
    ),
    (
        "cvc_clinicdb__490",
        "data/cvc_clinicdb/images/490.png",
        [76.0, 26.0, 349.0, 280.0],
    ),
    (
        "ddti_thyroid_us__259_1_2",
        "data/ddti_thyroid_us/images/259_1(2).png",
        [100.0, 99.0, 202.0, 203.0],
    ),
    (
        "ddti_thyroid_us__329_1",
        "data/ddti_thyroid_us/images/329_1.png",
        [13.0, 31.0, 299.0, 278.0],
    ),
    (
        "hc18_fetal_us__082_2HC",
        "data/hc18_fetal_us/images/082_2HC.png",
        [260.0, 317.0, 454.0, 483.0],
    ),
    (
        "hc18_fetal_us__276_HC",
        "data/hc18_fetal_us/images/276_HC.png",
        [83.0, 43.0, 570.0, 422.0],
    ),
];

fn shared_dir() -> Option<PathBuf> {
    let p = std::env::var_os("EDGESEG_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    if p.join("golden/litemedsam").is_dir() {
        Some(p)
    } else {
        eprintln!(
            "SKIP: {} has no golden/litemedsam (set EDGESEG_SHARED)",
            p.display()
        );
        None
    }
}

/// Step 1: PNG as u8 HxWx3; grey replicated to 3 channels, RGB kept.
fn load_rgb(path: &std::path::Path) -> (Vec<u8>, usize, usize) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (w, h) = (img.width() as usize, img.height() as usize);
    let rgb = match img {
        image::DynamicImage::ImageLuma8(g) => {
            g.into_raw().iter().flat_map(|&v| [v, v, v]).collect()
        }
        other => other.to_rgb8().into_raw(),
    };
    (rgb, h, w)
}

#[test]
fn preprocess_matches_golden_bit_exact() {
    let Some(shared) = shared_dir() else { return };
    for (folder, image, bbox) in CASES {
        let dir = shared.join("golden/litemedsam").join(folder);
        let (rgb, h, w) = load_rgb(&shared.join(image));
        let prep = preprocess_rgb(&rgb, h, w).unwrap();

        // step 3 alone: OpenCV INTER_AREA, bit-exact
        let gold = read_npy(dir.join("resized_uint8.npy")).unwrap();
        assert_eq!(
            gold.shape,
            vec![prep.new_h, prep.new_w, 3],
            "{folder}: resized size"
        );
        let g = gold.as_u8().unwrap();
        let ndiff = g.iter().zip(&prep.resized).filter(|(a, b)| a != b).count();
        assert_eq!(ndiff, 0, "{folder}: {ndiff} resized pixels differ from cv2");

        // steps 4-6: encoder input, bit-exact
        let gin = read_npy(dir.join("input_256.npy")).unwrap();
        assert_eq!(gin.shape, vec![1, 3, INPUT_SIZE, INPUT_SIZE]);
        let gin = gin.to_f32();
        let nbad = gin
            .iter()
            .zip(&prep.input)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(nbad, 0, "{folder}: {nbad} input values not bit-identical");

        // step 8
        let gbox = read_npy(dir.join("box_256.npy")).unwrap().to_f32();
        assert_eq!(gbox, box_to_256(bbox, h, w).to_vec(), "{folder}: box_256");
        eprintln!(
            "{folder}: {h}x{w} -> {}x{}: resized, input_256 and box_256 bit-exact",
            prep.new_h, prep.new_w
        );
    }
}

#[test]
fn point_transform_matches_golden() {
    let Some(shared) = shared_dir() else { return };
    let g = read_npy(shared.join("golden/litemedsam/hc18_fetal_us__276_HC/point_256.npy"))
        .unwrap()
        .to_f32();
    let p = point_to_256([326.40245657806355, 232.2906356669911], 543, 783);
    assert_eq!(g, p.to_vec());
}

/// Steps 11-12 from the golden logits reproduce the golden masks (box and point cases).
#[test]
fn postprocess_of_golden_logits_matches_golden_masks() {
    let Some(shared) = shared_dir() else { return };
    let mut runs: Vec<(&str, &str, &str)> = CASES
        .iter()
        .map(|c| (c.0, "low_res_logits.npy", "mask.npy"))
        .collect();
    runs.push((
        "hc18_fetal_us__276_HC",
        "point_low_res_logits.npy",
        "point_mask.npy",
    ));
    for (folder, logits, mask) in runs {
        let dir = shared.join("golden/litemedsam").join(folder);
        let gmask = read_npy(dir.join(mask)).unwrap();
        let (h, w) = (gmask.shape[0], gmask.shape[1]);
        let (nh, nw) = edgeseg_kernels::prepost::longest_side_size(h, w, INPUT_SIZE);
        let lr = read_npy(dir.join(logits)).unwrap().to_f32();
        let up = upsample_logits(&lr, INPUT_SIZE, INPUT_SIZE, nh, nw, h, w).unwrap();
        let m = threshold_logits(&up);
        let ndiff = m
            .iter()
            .zip(gmask.as_u8().unwrap())
            .filter(|(a, b)| a != b)
            .count();
        eprintln!(
            "{folder}/{mask}: {ndiff} pixels differ, {} foreground",
            m.iter().filter(|&&v| v == 1).count()
        );
        assert_eq!(ndiff, 0, "{folder}/{mask}");
    }
}
