//! `medseg serve --review DIR`: the cases of a `medseg batch` output folder (its
//! `results.csv`), with outliers flagged, each opened with its mask for correction; the
//! reviewer's accept / reject / corrected go to `review.csv` beside `results.csv` (rewritten
//! whole, atomically); a corrected mask is saved beside the original, which stays.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use medseg::cohort::{read_results, CaseResult};
use medseg::io::output::Outputs;
use serde_json::{json, Value};

/// The review file's name.
pub const REVIEW: &str = "review.csv";
/// Its columns.
const HEADER: [&str; 4] = ["case_id", "decision", "corrected_mask", "reviewed_unix"];

/// A batch folder under review.
pub struct Review {
    pub dir: PathBuf,
    cases: Vec<CaseResult>,
}

/// One decision, as `review.csv` holds it.
#[derive(Clone)]
struct Decision {
    decision: String,
    corrected: String,
    when: String,
}

impl Review {
    /// The batch output folder `dir` and its results.
    pub fn open(dir: &Path) -> Result<Self> {
        let dir = dir
            .canonicalize()
            .with_context(|| format!("--review {}", dir.display()))?;
        let cases = read_results(&dir).with_context(|| format!("--review {}", dir.display()))?;
        if cases.is_empty() {
            anyhow::bail!(
                "--review {}: no results.csv with cases (run medseg batch first)",
                dir.display()
            );
        }
        Ok(Self { dir, cases })
    }

    /// The folder and every case's input: what the viewer may open.
    pub fn roots(&self) -> Vec<PathBuf> {
        let inputs = self
            .cases
            .iter()
            .filter_map(|c| Path::new(&c.run.input).canonicalize().ok());
        std::iter::once(self.dir.clone()).chain(inputs).collect()
    }

    fn decisions(&self) -> BTreeMap<String, Decision> {
        let Ok(mut r) = csv::Reader::from_path(self.dir.join(REVIEW)) else {
            return BTreeMap::new();
        };
        r.records()
            .flatten()
            .filter(|rec| rec.len() >= 4)
            .map(|rec| {
                let d = Decision {
                    decision: rec[1].to_string(),
                    corrected: rec[2].to_string(),
                    when: rec[3].to_string(),
                };
                (rec[0].to_string(), d)
            })
            .collect()
    }

    /// Every case with its numbers, flags and decision.
    pub fn cases(&self) -> Value {
        let decisions = self.decisions();
        let fence = outlier_fence(&self.cases);
        let list: Vec<Value> = self
            .cases
            .iter()
            .map(|c| case_json(c, fence, decisions.get(&c.id)))
            .collect();
        json!({ "dir": self.dir, "cases": list })
    }

    /// Record `decision` for `case_id` (`corrected`: with the corrected mask's path).
    pub fn decide(
        &self,
        case_id: &str,
        decision: &str,
        corrected: Option<&Path>,
    ) -> medseg::Result<()> {
        let mut all = self.decisions();
        let when = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let corrected = corrected
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        all.insert(
            case_id.to_string(),
            Decision {
                decision: decision.to_string(),
                corrected,
                when: when.to_string(),
            },
        );
        let dest = self.dir.join(REVIEW);
        let mut outputs = Outputs::new::<&Path>(&[]);
        outputs.stage(&dest, |p| write_decisions(p, &all))?;
        outputs.commit()
    }

    /// The case `id`.
    pub fn case(&self, id: &str) -> Option<&CaseResult> {
        self.cases.iter().find(|c| c.id == id)
    }

    /// Where a corrected mask of `id` goes: beside the original, never over it.
    pub fn corrected_path(&self, id: &str) -> PathBuf {
        let safe: String = id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir.join(format!("{safe}.corrected.nii.gz"))
    }
}

fn write_decisions(p: &Path, all: &BTreeMap<String, Decision>) -> medseg::Result<()> {
    let bad = |e: csv::Error| medseg::Error::Output {
        path: p.to_path_buf(),
        reason: e.to_string(),
    };
    let mut w = csv::Writer::from_path(p).map_err(bad)?;
    w.write_record(HEADER).map_err(bad)?;
    for (id, d) in all {
        w.write_record([id, &d.decision, &d.corrected, &d.when])
            .map_err(bad)?;
    }
    w.flush().map_err(|e| medseg::Error::Output {
        path: p.to_path_buf(),
        reason: e.to_string(),
    })
}

/// The mL outside which a case is an outlier: Tukey's fences (1.5 × IQR beyond the quartiles)
/// over the cases with a volume; none with fewer than 4.
fn outlier_fence(cases: &[CaseResult]) -> Option<(f64, f64)> {
    let mut ml: Vec<f64> = cases
        .iter()
        .filter(|c| c.ok)
        .filter_map(|c| c.volume_ml)
        .collect();
    if ml.len() < 4 {
        return None;
    }
    ml.sort_by(f64::total_cmp);
    let q = |f: f64| ml[((ml.len() - 1) as f64 * f).round() as usize];
    let (q1, q3) = (q(0.25), q(0.75));
    Some((q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)))
}

fn case_json(c: &CaseResult, fence: Option<(f64, f64)>, d: Option<&Decision>) -> Value {
    let mut flags = Vec::new();
    if let (Some((lo, hi)), Some(ml)) = (fence, c.volume_ml) {
        if ml < lo || ml > hi {
            flags.push(format!("mL outside the cohort's spread ({lo:.2}–{hi:.2})"));
        }
    }
    if c.slice_range.is_some_and(|(a, _)| a == 0) {
        flags.push("mask reaches the first slice".to_string());
    }
    if c.ok && c.voxels == 0 {
        flags.push("empty mask".to_string());
    }
    let bbox: Vec<f64> = c
        .run
        .bbox
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    // The case's propagation options as results.csv recorded them (`modality=ct max_drift=20`),
    // as request fields: the page opens the case with them.
    let options: serde_json::Map<String, Value> = (c.run.options.split_whitespace())
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    json!({
        "id": c.id, "status": if c.ok { "ok" } else { "failed" }, "ml": c.volume_ml, "options": options,
        "voxels": c.voxels, "slices": c.slice_range, "error": c.error, "mask": c.mask,
        "input": c.run.input, "key_slice": c.run.key_slice.parse::<usize>().ok(),
        "box": (bbox.len() == 4).then_some(bbox), "window": c.run.window, "model": c.run.model,
        "flags": flags, "decision": d.map(|d| d.decision.clone()),
        "corrected_mask": d.map(|d| d.corrected.clone()).filter(|c| !c.is_empty()),
        "reviewed_unix": d.map(|d| d.when.clone()),
    })
}
