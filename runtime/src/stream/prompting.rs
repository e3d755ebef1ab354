//! Where each frame's prompt comes from: a fixed box or points, `track` mode
//! (a box on the first frame, then the previous mask's bounding box with a
//! margin, with re-acquisition when the mask is lost or jumps), or a JSON-lines
//! file of prompts keyed by frame id (replay of clinician clicks).

use std::path::Path;

use serde::Deserialize;

use crate::prompt::{BoxPrompt, PointLabel, PointPrompt, Prompt};
use crate::Segmentation;

/// Errors in a `--prompt` argument or a prompt file.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// The argument is malformed.
    #[error("prompt `{arg}`: {message}")]
    Arg {
        /// The argument.
        arg: String,
        /// What is wrong.
        message: String,
    },
    /// A line of a prompt file is malformed.
    #[error("{path}:{line}: {message}")]
    File {
        /// The file.
        path: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// How prompts are chosen for a stream.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptSpec {
    /// The same prompt on every frame.
    Fixed(Prompt),
    /// Track from this box on the first frame.
    Track(BoxPrompt),
    /// Prompts by frame id, sorted; a prompt holds until the next entry (an
    /// entry with `None` stops prompting).
    File(Vec<(u64, Option<Prompt>)>),
    /// No prompt on any frame (prototype mode: the prompts come from the
    /// few-shot head, see `stream::fewshot`).
    None,
}

fn parse_box(s: &str) -> Option<BoxPrompt> {
    let v: Vec<f32> = s
        .split(',')
        .map(|t| t.trim().parse::<f32>())
        .collect::<Result<_, _>>()
        .ok()?;
    match v[..] {
        [x0, y0, x1, y1] => check_box(BoxPrompt { x0, y0, x1, y1 }),
        _ => None,
    }
}

fn check_box(b: BoxPrompt) -> Option<BoxPrompt> {
    let ok = [b.x0, b.y0, b.x1, b.y1]
        .iter()
        .all(|v| v.is_finite() && *v >= 0.0);
    (ok && b.x1 >= b.x0 && b.y1 >= b.y0).then_some(b)
}

impl PromptSpec {
    /// Parses `box:x0,y0,x1,y1`, `points:x,y[,fg|bg];x,y…`, `track:x0,y0,x1,y1`
    /// or `file:PATH` (JSON lines, see [`PromptSpec::from_jsonl`]).
    pub fn parse(arg: &str) -> Result<Self, PromptError> {
        let bad = |message: &str| PromptError::Arg {
            arg: arg.to_string(),
            message: message.to_string(),
        };
        let (kind, rest) = arg
            .split_once(':')
            .ok_or_else(|| bad("expected box:, points:, track: or file:"))?;
        match kind {
            "box" => parse_box(rest)
                .map(|b| Self::Fixed(Prompt::from_box(b)))
                .ok_or_else(|| bad("expected box:x0,y0,x1,y1 with x0<=x1, y0<=y1, all >= 0")),
            "track" => parse_box(rest)
                .map(Self::Track)
                .ok_or_else(|| bad("expected track:x0,y0,x1,y1 with x0<=x1, y0<=y1, all >= 0")),
            "points" | "point" => {
                let mut points = Vec::new();
                for p in rest.split(';').filter(|p| !p.trim().is_empty()) {
                    let parts: Vec<&str> = p.split(',').map(str::trim).collect();
                    let num =
                        |s: &str| s.parse::<f32>().ok().filter(|v| v.is_finite() && *v >= 0.0);
                    let (x, y) = match (
                        parts.first().and_then(|s| num(s)),
                        parts.get(1).and_then(|s| num(s)),
                    ) {
                        (Some(x), Some(y)) => (x, y),
                        _ => return Err(bad("a point is x,y[,fg|bg] with x, y >= 0")),
                    };
                    let label = match parts.get(2).copied() {
                        None | Some("fg") | Some("1") => PointLabel::Foreground,
                        Some("bg") | Some("0") => PointLabel::Background,
                        Some(_) => return Err(bad("point label is fg or bg")),
                    };
                    points.push(PointPrompt { x, y, label });
                }
                if points.is_empty() {
                    return Err(bad("no points"));
                }
                Ok(Self::Fixed(Prompt {
                    boxes: None,
                    points,
                }))
            }
            "file" => {
                let text = std::fs::read_to_string(rest).map_err(|e| bad(&e.to_string()))?;
                Self::from_jsonl(Path::new(rest), &text)
            }
            _ => Err(bad("expected box:, points:, track: or file:")),
        }
    }

    /// Parses a prompt file: one JSON object per line,
    /// `{"frame": 12, "box": [x0, y0, x1, y1]}`,
    /// `{"frame": 12, "points": [[x, y, 1], [x, y, 0]]}` (1 = foreground), both
    /// together, or `{"frame": 40, "clear": true}` to stop prompting. Blank
    /// lines and lines starting with `#` are skipped.
    pub fn from_jsonl(path: &Path, text: &str) -> Result<Self, PromptError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Line {
            frame: u64,
            #[serde(rename = "box")]
            bbox: Option<[f32; 4]>,
            points: Option<Vec<[f32; 3]>>,
            #[serde(default)]
            clear: bool,
        }
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let bad = |message: String| PromptError::File {
                path: path.display().to_string(),
                line: i + 1,
                message,
            };
            let l: Line = serde_json::from_str(t).map_err(|e| bad(e.to_string()))?;
            let prompt = if l.clear {
                None
            } else {
                let boxes = match l.bbox {
                    Some([x0, y0, x1, y1]) => {
                        Some(check_box(BoxPrompt { x0, y0, x1, y1 }).ok_or_else(|| {
                            bad("box needs x0<=x1, y0<=y1, all finite >= 0".into())
                        })?)
                    }
                    None => None,
                };
                let mut points = Vec::new();
                for [x, y, l] in l.points.unwrap_or_default() {
                    if !(x.is_finite() && y.is_finite() && x >= 0.0 && y >= 0.0) {
                        return Err(bad("point coordinates must be finite >= 0".into()));
                    }
                    let label = if l == 1.0 {
                        PointLabel::Foreground
                    } else if l == 0.0 {
                        PointLabel::Background
                    } else {
                        return Err(bad("point label must be 1 or 0".into()));
                    };
                    points.push(PointPrompt { x, y, label });
                }
                if boxes.is_none() && points.is_empty() {
                    return Err(bad("no box, points or clear".into()));
                }
                Some(Prompt { boxes, points })
            };
            if out.last().is_some_and(|(f, _)| *f >= l.frame) {
                return Err(bad(format!(
                    "frame {} is not after the previous line's frame",
                    l.frame
                )));
            }
            out.push((l.frame, prompt));
        }
        if out.is_empty() {
            return Err(PromptError::File {
                path: path.display().to_string(),
                line: 1,
                message: "no prompts".into(),
            });
        }
        Ok(Self::File(out))
    }
}

/// A mask's bounding box (inclusive), area and centroid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaskStats {
    /// Bounding box `x0, y0, x1, y1` (inclusive).
    pub bbox: [usize; 4],
    /// Foreground pixels.
    pub area: usize,
    /// Centroid `x, y`.
    pub centroid: [f64; 2],
}

impl MaskStats {
    /// Statistics of a mask, `None` when it is empty or inconsistent.
    pub fn of(seg: &Segmentation) -> Option<Self> {
        if seg.width == 0 || seg.mask.len() != seg.width.checked_mul(seg.height)? {
            return None;
        }
        let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
        // coordinate sums as exact integers, run by run
        let (mut area, mut sx, mut sy) = (0usize, 0u128, 0u128);
        let w = seg.width;
        for (y, row) in seg.mask.chunks_exact(w).enumerate() {
            for (start, end) in super::overlay::mask_runs(row) {
                let len = end + 1 - start;
                x0 = x0.min(start);
                x1 = x1.max(end);
                y0 = y0.min(y);
                y1 = y1.max(y);
                area += len;
                // start + (start + 1) + … + end
                sx += (start as u128 + end as u128) * len as u128 / 2;
                sy += y as u128 * len as u128;
            }
        }
        (area > 0).then(|| Self {
            bbox: [x0, y0, x1, y1],
            area,
            centroid: [sx as f64 / area as f64, sy as f64 / area as f64],
        })
    }
}

/// Tuning of `track` mode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackParams {
    /// Margin added on each side of the previous mask's box, as a fraction of
    /// the box's side (at least [`TrackParams::min_margin_px`]).
    pub margin: f32,
    /// Minimum margin in pixels.
    pub min_margin_px: f32,
    /// A mask smaller than this many pixels counts as lost.
    pub min_area: usize,
    /// A centroid move larger than this fraction of the frame diagonal, or an
    /// area change by more than [`TrackParams::max_area_ratio`], is a jump.
    pub max_jump: f64,
    /// See [`TrackParams::max_jump`].
    pub max_area_ratio: f64,
    /// After this many lost or jumped frames in a row, re-acquire from the
    /// initial box instead of the last good one.
    pub reacquire_after: u32,
}

impl Default for TrackParams {
    fn default() -> Self {
        Self {
            margin: 0.1,
            min_margin_px: 4.0,
            min_area: 16,
            max_jump: 0.25,
            max_area_ratio: 4.0,
            reacquire_after: 3,
        }
    }
}

/// What tracking made of a mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackEvent {
    /// Not in track mode.
    NotTracking,
    /// The mask continues the track; the next box derives from it.
    Tracked,
    /// The mask is empty or tiny.
    Lost,
    /// The mask moved or changed size too much.
    Jumped,
    /// Lost for too long: the next prompt is the initial box again.
    Reacquiring,
}

impl TrackEvent {
    /// Lower-case name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::NotTracking => "none",
            Self::Tracked => "tracked",
            Self::Lost => "lost",
            Self::Jumped => "jumped",
            Self::Reacquiring => "reacquiring",
        }
    }
}

#[derive(Debug, Clone)]
struct TrackState {
    initial: BoxPrompt,
    current: BoxPrompt,
    last_good: Option<(BoxPrompt, MaskStats)>,
    misses: u32,
}

/// Chooses each frame's prompt and, in track mode, learns from each mask.
#[derive(Debug, Clone)]
pub struct Prompter {
    spec: PromptSpec,
    params: TrackParams,
    track: Option<TrackState>,
}

fn clamp_box(b: BoxPrompt, width: usize, height: usize) -> BoxPrompt {
    let (mx, my) = ((width.max(1) - 1) as f32, (height.max(1) - 1) as f32);
    BoxPrompt {
        x0: b.x0.clamp(0.0, mx),
        y0: b.y0.clamp(0.0, my),
        x1: b.x1.clamp(0.0, mx),
        y1: b.y1.clamp(0.0, my),
    }
}

impl Prompter {
    /// A prompter for `spec`.
    pub fn new(spec: PromptSpec, params: TrackParams) -> Self {
        let track = match &spec {
            PromptSpec::Track(b) => Some(TrackState {
                initial: *b,
                current: *b,
                last_good: None,
                misses: 0,
            }),
            _ => None,
        };
        Self {
            spec,
            params,
            track,
        }
    }

    /// The prompt for frame `id` of a `width × height` stream, clamped to the
    /// frame, or `None` when nothing is to be segmented.
    pub fn prompt_for(&self, id: u64, width: usize, height: usize) -> Option<Prompt> {
        let mut p = match (&self.spec, &self.track) {
            (_, Some(t)) => Prompt::from_box(t.current),
            (PromptSpec::Fixed(p), _) => p.clone(),
            (PromptSpec::File(list), _) => {
                let i = list.partition_point(|(f, _)| *f <= id);
                list.get(i.checked_sub(1)?)?.1.clone()?
            }
            (PromptSpec::Track(b), None) => Prompt::from_box(*b),
            (PromptSpec::None, None) => return None,
        };
        p.boxes = p.boxes.map(|b| clamp_box(b, width, height));
        let (mx, my) = ((width.max(1) - 1) as f32, (height.max(1) - 1) as f32);
        for pt in &mut p.points {
            pt.x = pt.x.clamp(0.0, mx);
            pt.y = pt.y.clamp(0.0, my);
        }
        Some(p)
    }

    /// Feeds the mask obtained for the current prompt (track mode only).
    pub fn observe(&mut self, seg: &Segmentation) -> TrackEvent {
        let params = self.params;
        let Some(t) = self.track.as_mut() else {
            return TrackEvent::NotTracking;
        };
        let stats = MaskStats::of(seg).filter(|s| s.area >= params.min_area);
        let event = match (stats, &t.last_good) {
            (None, _) => TrackEvent::Lost,
            (Some(s), Some((_, prev))) => {
                let diag = ((seg.width * seg.width + seg.height * seg.height) as f64).sqrt();
                let d = ((s.centroid[0] - prev.centroid[0]).powi(2)
                    + (s.centroid[1] - prev.centroid[1]).powi(2))
                .sqrt();
                let ratio = s.area as f64 / prev.area as f64;
                if d > params.max_jump * diag
                    || ratio > params.max_area_ratio
                    || ratio < 1.0 / params.max_area_ratio
                {
                    TrackEvent::Jumped
                } else {
                    TrackEvent::Tracked
                }
            }
            (Some(_), None) => TrackEvent::Tracked,
        };
        match (event, stats) {
            (TrackEvent::Tracked, Some(s)) => {
                let [x0, y0, x1, y1] = s.bbox.map(|v| v as f32);
                let mx = ((x1 - x0 + 1.0) * params.margin).max(params.min_margin_px);
                let my = ((y1 - y0 + 1.0) * params.margin).max(params.min_margin_px);
                let next = clamp_box(
                    BoxPrompt {
                        x0: x0 - mx,
                        y0: y0 - my,
                        x1: x1 + mx,
                        y1: y1 + my,
                    },
                    seg.width,
                    seg.height,
                );
                t.last_good = Some((next, s));
                t.current = next;
                t.misses = 0;
                TrackEvent::Tracked
            }
            _ => {
                t.misses += 1;
                if t.misses >= params.reacquire_after || t.last_good.is_none() {
                    t.current = t.initial;
                    t.last_good = None;
                    TrackEvent::Reacquiring
                } else {
                    t.current = t.last_good.map_or(t.initial, |(b, _)| b);
                    event
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg_box(w: usize, h: usize, b: [usize; 4]) -> Segmentation {
        let mut mask = vec![0; w * h];
        for y in b[1]..=b[3] {
            for x in b[0]..=b[2] {
                mask[y * w + x] = 1;
            }
        }
        Segmentation {
            width: w,
            height: h,
            mask,
            iou_prediction: None,
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

        /// The run-wise statistics equal the pixel-by-pixel sums.
        #[test]
        fn mask_stats_match_per_pixel_sums(
            w in 1usize..100, h in 1usize..30, density in 0u8..=255, seed in 0u64..10_000,
        ) {
            let mut r = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mask: Vec<u8> = (0..w * h)
                .map(|_| {
                    r ^= r << 13;
                    r ^= r >> 7;
                    r ^= r << 17;
                    u8::from(((r >> 32) as u8) < density)
                })
                .collect();
            let (mut b, mut area, mut sx, mut sy) = ([usize::MAX, usize::MAX, 0, 0], 0usize, 0f64, 0f64);
            for (i, _) in mask.iter().enumerate().filter(|(_, v)| **v != 0) {
                let (x, y) = (i % w, i / w);
                b = [b[0].min(x), b[1].min(y), b[2].max(x), b[3].max(y)];
                area += 1;
                sx += x as f64;
                sy += y as f64;
            }
            let seg = Segmentation { width: w, height: h, mask, iou_prediction: None };
            let got = MaskStats::of(&seg);
            match got {
                None => proptest::prop_assert_eq!(area, 0),
                Some(s) => {
                    proptest::prop_assert_eq!(s.bbox, b);
                    proptest::prop_assert_eq!(s.area, area);
                    proptest::prop_assert_eq!(s.centroid, [sx / area as f64, sy / area as f64]);
                }
            }
        }
    }

    #[test]
    fn parse_args() {
        assert!(matches!(
            PromptSpec::parse("box:1,2,30,40"),
            Ok(PromptSpec::Fixed(_))
        ));
        assert!(matches!(
            PromptSpec::parse("track:1,2,30,40"),
            Ok(PromptSpec::Track(_))
        ));
        let p = PromptSpec::parse("points:5,6;7,8,bg").unwrap();
        let PromptSpec::Fixed(p) = p else { panic!() };
        assert_eq!(p.points.len(), 2);
        assert_eq!(p.points[1].label, PointLabel::Background);
        for bad in [
            "box:1,2,3",
            "box:5,5,1,1",
            "box:-1,0,3,3",
            "box:nan,0,3,3",
            "lasso:1",
            "points:",
            "file:/nonexistent",
        ] {
            assert!(PromptSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn jsonl_file() {
        let text = "# clicks\n{\"frame\": 2, \"box\": [1, 1, 5, 5]}\n\n{\"frame\": 5, \"points\": [[3, 3, 1]]}\n{\"frame\": 9, \"clear\": true}\n";
        let spec = PromptSpec::from_jsonl(Path::new("p.jsonl"), text).unwrap();
        let p = Prompter::new(spec, TrackParams::default());
        assert!(p.prompt_for(1, 10, 10).is_none());
        assert!(p.prompt_for(2, 10, 10).unwrap().boxes.is_some());
        assert!(p.prompt_for(4, 10, 10).unwrap().boxes.is_some());
        assert_eq!(p.prompt_for(7, 10, 10).unwrap().points.len(), 1);
        assert!(p.prompt_for(9, 10, 10).is_none());
        for (bad, what) in [
            ("{\"frame\": 1}", ":1: no box"),
            (
                "{\"frame\": 2, \"box\": [1,1,5,5]}\n{\"frame\": 2, \"box\": [1,1,5,5]}",
                ":2: frame 2 is not after",
            ),
            ("{\"frame\": 1, \"box\": [5,1,1,5]}", "box needs"),
            ("{\"frame\": 1, \"points\": [[1,1,2]]}", "label"),
            ("{\"frame\": 1, \"lasso\": 1}", "unknown field"),
            ("not json", ":1:"),
            ("", "no prompts"),
        ] {
            let e = PromptSpec::from_jsonl(Path::new("p.jsonl"), bad)
                .unwrap_err()
                .to_string();
            assert!(e.contains(what), "{e} lacks {what}");
        }
    }

    #[test]
    fn prompts_are_clamped_to_the_frame() {
        let p = Prompter::new(
            PromptSpec::parse("box:10,10,500,500").unwrap(),
            TrackParams::default(),
        );
        let b = p.prompt_for(0, 100, 50).unwrap().boxes.unwrap();
        assert_eq!((b.x1, b.y1), (99.0, 49.0));
    }

    #[test]
    fn track_follows_then_reacquires() {
        let mut p = Prompter::new(
            PromptSpec::parse("track:10,10,30,30").unwrap(),
            TrackParams::default(),
        );
        let first = p.prompt_for(0, 200, 200).unwrap().boxes.unwrap();
        assert_eq!(first.x0, 10.0);
        assert_eq!(
            p.observe(&seg_box(200, 200, [20, 20, 40, 40])),
            TrackEvent::Tracked
        );
        let b = p.prompt_for(1, 200, 200).unwrap().boxes.unwrap();
        assert!(b.x0 < 20.0 && b.x0 >= 15.0 && b.x1 > 40.0, "{b:?}");
        assert_eq!(
            p.observe(&seg_box(200, 200, [24, 22, 44, 42])),
            TrackEvent::Tracked
        );
        let good = p.prompt_for(2, 200, 200).unwrap().boxes.unwrap();
        // A jump to the far corner is rejected: the box stays.
        assert_eq!(
            p.observe(&seg_box(200, 200, [170, 170, 190, 190])),
            TrackEvent::Jumped
        );
        assert_eq!(p.prompt_for(3, 200, 200).unwrap().boxes.unwrap(), good);
        // Lost twice more: back to the initial box.
        assert_eq!(
            p.observe(&seg_box(200, 200, [0, 0, 0, 0])),
            TrackEvent::Lost
        );
        assert_eq!(
            p.observe(&seg_box(200, 200, [0, 0, 0, 0])),
            TrackEvent::Reacquiring
        );
        assert_eq!(p.prompt_for(4, 200, 200).unwrap().boxes.unwrap(), first);
        // Fixed prompts ignore masks.
        let mut f = Prompter::new(
            PromptSpec::parse("box:1,1,5,5").unwrap(),
            TrackParams::default(),
        );
        assert_eq!(
            f.observe(&seg_box(10, 10, [1, 1, 5, 5])),
            TrackEvent::NotTracking
        );
    }
}
