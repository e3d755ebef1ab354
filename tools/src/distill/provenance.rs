//! How a student was made, written beside its weights (`stageN/provenance.json`) when
//! training starts and read by `export`, so that a student bundle's manifest names its
//! teacher, its training data and every command that made it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::cache::TeacherCache;
use super::DistillError;

/// File name of the provenance record, beside `weights.safetensors`.
pub const PROVENANCE_FILE: &str = "provenance.json";

/// The provenance of a distilled student.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TrainingProvenance {
    /// The teacher: name and bundle SHA-256.
    pub teacher: String,
    /// Training images per dataset and split, e.g. `cvc_clinicdb train: 416 images`.
    pub training_data: Vec<String>,
    /// The commands of every stage, oldest first.
    pub commands: Vec<String>,
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> DistillError {
    DistillError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// `weights`' provenance path.
pub fn provenance_path(weights: &Path) -> PathBuf {
    weights.with_file_name(PROVENANCE_FILE)
}

impl TrainingProvenance {
    /// The provenance of a stage trained on `cache`, continuing `init`'s (the weights a
    /// run starts from, whose own provenance is read if it has one) with `command`.
    /// Weights distilled from another teacher bundle are refused unless
    /// `accept_teacher_change`, which records the change.
    pub fn for_run(
        cache: &TeacherCache,
        init: Option<&Path>,
        command: &str,
        accept_teacher_change: bool,
    ) -> Result<Self, DistillError> {
        let mut p = match init {
            Some(w) => Self::read_beside(w)?.unwrap_or_else(|| Self {
                commands: vec![format!(
                    "(started from {}, of unknown provenance)",
                    w.display()
                )],
                ..Self::default()
            }),
            None => Self::default(),
        };
        let h = &cache.header;
        let teacher = format!("{} (bundle sha256 {})", h.teacher_name, h.teacher_sha256);
        if !p.teacher.is_empty() && p.teacher != teacher {
            if !accept_teacher_change {
                return Err(DistillError::Config(format!(
                    "the initial weights were distilled from {}, this cache holds {}; if both \
                     bundles hold the same teacher weights, pass --accept-teacher-change",
                    p.teacher, teacher
                )));
            }
            p.commands.push(format!(
                "(teacher changed from {} to {}, accepted with --accept-teacher-change)",
                p.teacher, teacher
            ));
        }
        p.teacher = teacher;
        let mut counts: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for m in &cache.metas {
            *counts.entry((&m.dataset, &m.split)).or_default() += 1;
        }
        for ((dataset, split), n) in counts {
            let line = format!("{dataset} {split}: {n} images");
            if !p.training_data.contains(&line) {
                p.training_data.push(line);
            }
        }
        p.commands.push(command.to_string());
        Ok(p)
    }

    /// Reads the provenance beside `weights`; `None` when there is none.
    pub fn read_beside(weights: &Path) -> Result<Option<Self>, DistillError> {
        let path = provenance_path(weights);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| file_err(&path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(file_err(&path, e)),
        }
    }

    /// Writes the provenance beside `weights`.
    pub fn write_beside(&self, weights: &Path) -> Result<(), DistillError> {
        let path = provenance_path(weights);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
        }
        let text = serde_json::to_string_pretty(self).map_err(|e| file_err(&path, e))?;
        std::fs::write(&path, text).map_err(|e| file_err(&path, e))
    }
}
