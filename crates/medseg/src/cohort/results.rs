//! `results.csv`: one row per case of every run into an output folder. Runs never replace each
//! other's rows: each finished case is appended to a journal (`.results.csv.journal`) under a
//! lock (`.results.csv.lock`, an OS file lock that ends with its process), and the journal is
//! merged into `results.csv` (atomically, by case id: the latest row of a case wins, every
//! other case's row is kept) every few seconds and at the end of a run. A run that was killed
//! leaves its journal, which the next run (or reader) merges.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::io::output::Outputs;

/// The results file in the output folder.
pub const RESULTS: &str = "results.csv";
const JOURNAL: &str = ".results.csv.journal";
const LOCK: &str = ".results.csv.lock";

/// The columns of `results.csv`: the outcome, then what the case was run with ([`RunKey`]).
pub const RESULT_HEADER: [&str; 22] = [
    "case_id",
    "status",
    "volume_ml",
    "voxels",
    "first_slice",
    "last_slice",
    "seconds",
    "mask",
    "error",
    "adc_mean",
    "core_ml",
    "input",
    "input_stamp",
    "key_slice",
    "box",
    "model",
    "window",
    "precision",
    "weights_sha256",
    "adc",
    "mask_format",
    "options",
];
const KEY_START: usize = 11;

/// What a case was run with. A re-run takes a case as done only when all of it is the same
/// (else it redoes the case and says which field changed).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunKey {
    /// The input's absolute path.
    pub input: String,
    /// The input's size and modification time (a series folder: its DICOM files' count, bytes
    /// and newest modification time), taken before it was read.
    pub input_stamp: String,
    /// As given (empty: the middle slice).
    pub key_slice: String,
    /// `x0 y0 x1 y1`.
    pub bbox: String,
    /// The model family that ran.
    pub model: String,
    /// As given (empty: by modality).
    pub window: String,
    /// The precision that ran (`f32`, `bf16`).
    pub precision: String,
    /// SHA-256 of the checkpoint file.
    pub weights_sha256: String,
    /// The ADC map's path and stamp (empty: none).
    pub adc: String,
    /// `dcm` for a DICOM SEG (empty: NIfTI).
    pub mask_format: String,
    /// The propagation options given (`modality=ct max_drift=20 ...`; empty: the defaults).
    pub options: String,
}

impl RunKey {
    fn values(&self) -> [&str; 11] {
        [
            &self.input,
            &self.input_stamp,
            &self.key_slice,
            &self.bbox,
            &self.model,
            &self.window,
            &self.precision,
            &self.weights_sha256,
            &self.adc,
            &self.mask_format,
            &self.options,
        ]
    }

    fn from_values(v: [String; 11]) -> Self {
        let [input, input_stamp, key_slice, bbox, model, window, precision, weights_sha256, adc, mask_format, options] =
            v;
        Self {
            input,
            input_stamp,
            key_slice,
            bbox,
            model,
            window,
            precision,
            weights_sha256,
            adc,
            mask_format,
            options,
        }
    }

    /// Why `self` (recorded) is not `now`: the first field that differs, old and new value.
    pub fn differs(&self, now: &RunKey) -> Option<String> {
        let names = &RESULT_HEADER[KEY_START..];
        let (name, (old, new)) = names
            .iter()
            .zip(self.values().into_iter().zip(now.values()))
            .find(|(_, (a, b))| a != b)?;
        let show = |v: &str| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.to_string()
            }
        };
        Some(format!("{name} changed ({} -> {})", show(old), show(new)))
    }
}

/// What became of a case.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseResult {
    /// The case's id.
    pub id: String,
    /// `true` when its mask was written.
    pub ok: bool,
    /// Lesion volume (`None` when the input gives no voxel size, or on failure).
    pub volume_ml: Option<f64>,
    /// Voxels in the mask.
    pub voxels: usize,
    /// First and last slice of the mask.
    pub slice_range: Option<(usize, usize)>,
    /// Wall time of the case (read, segment, write).
    pub seconds: f64,
    /// Where the mask was written (`results.csv` stores it relative to the output folder).
    pub mask: Option<PathBuf>,
    /// Why the case failed.
    pub error: Option<String>,
    /// Mean ADC inside the mask, 10⁻⁶ mm²/s (a case with an ADC map).
    pub adc_mean: Option<f64>,
    /// Ischaemic-core volume, mL (a case with an ADC map).
    pub core_ml: Option<f64>,
    /// What it was run with (empty fields where it never ran).
    pub run: RunKey,
}

impl CaseResult {
    /// A case that did not produce a mask, and why.
    pub fn failed(id: &str, error: String) -> Self {
        Self {
            id: id.to_string(),
            ok: false,
            volume_ml: None,
            voxels: 0,
            slice_range: None,
            seconds: 0.0,
            mask: None,
            error: Some(error),
            adc_mean: None,
            core_ml: None,
            run: RunKey::default(),
        }
    }

    /// The result as the fields of `results.csv` (empty text for what is absent; the mask
    /// path as given).
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        RESULT_HEADER.into_iter().zip(self.row(None)).collect()
    }

    /// A result from fields named as in `results.csv` (missing ones empty); `None` without
    /// a case id or with a malformed number. A relative mask path is taken from `out_dir`.
    pub fn from_fields(fields: &[(&str, &str)], out_dir: Option<&Path>) -> Option<Self> {
        let get = |h: &str| fields.iter().find(|(k, _)| *k == h).map_or("", |(_, v)| *v);
        let opt = |h: &str| Some(get(h)).filter(|v| !v.is_empty());
        let range = match (opt("first_slice"), opt("last_slice")) {
            (Some(a), Some(b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            _ => None,
        };
        let key: [String; 11] =
            std::array::from_fn(|i| get(RESULT_HEADER[KEY_START + i]).to_string());
        let mask = opt("mask").map(|m| match out_dir {
            Some(d) if Path::new(m).is_relative() => d.join(m),
            _ => PathBuf::from(m),
        });
        Some(Self {
            id: opt("case_id")?.to_string(),
            ok: get("status") == "ok",
            volume_ml: opt("volume_ml").map(str::parse).transpose().ok()?,
            voxels: opt("voxels").map_or(Ok(0), str::parse).ok()?,
            slice_range: range,
            seconds: opt("seconds").map_or(Ok(0.0), str::parse).ok()?,
            mask,
            error: opt("error").map(str::to_string),
            adc_mean: opt("adc_mean").map(str::parse).transpose().ok()?,
            core_ml: opt("core_ml").map(str::parse).transpose().ok()?,
            run: RunKey::from_values(key),
        })
    }

    /// The CSV row; with `out_dir`, a mask inside it is written relative to it.
    fn row(&self, out_dir: Option<&Path>) -> Vec<String> {
        let s = |v: Option<String>| v.unwrap_or_default();
        let mask = self.mask.as_ref().map(|p| {
            let rel = out_dir.and_then(|d| p.strip_prefix(d).ok());
            rel.unwrap_or(p).display().to_string()
        });
        let mut row = vec![
            self.id.clone(),
            if self.ok { "ok" } else { "failed" }.into(),
            s(self.volume_ml.map(|v| format!("{v:.4}"))),
            self.voxels.to_string(),
            s(self.slice_range.map(|(a, _)| a.to_string())),
            s(self.slice_range.map(|(_, b)| b.to_string())),
            format!("{:.2}", self.seconds),
            s(mask),
            s(self.error.clone()),
            s(self.adc_mean.map(|v| format!("{v:.1}"))),
            s(self.core_ml.map(|v| format!("{v:.4}"))),
        ];
        row.extend(self.run.values().map(str::to_string));
        row
    }
}

fn output_error(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Output {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// The results lock of `out_dir`, held until the returned file is dropped.
fn lock(out_dir: &Path) -> Result<File> {
    let path = out_dir.join(LOCK);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    f.lock().map_err(|e| Error::io(&path, e))?;
    Ok(f)
}

/// Rows of a CSV text with a header, as name/value pairs.
fn parse_rows(
    path: &Path,
    text: &str,
    header: Option<&[&str]>,
) -> Result<Vec<Vec<(String, String)>>> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(header.is_none())
        .flexible(true)
        .from_reader(text.as_bytes());
    let names: Vec<String> = match header {
        Some(h) => h.iter().map(|s| s.to_string()).collect(),
        None => rdr
            .headers()
            .map_err(|e| output_error(path, e))?
            .iter()
            .map(str::to_string)
            .collect(),
    };
    let mut out = Vec::new();
    for row in rdr.records() {
        let row = row.map_err(|e| output_error(path, e))?;
        out.push(
            names
                .iter()
                .cloned()
                .zip(row.iter().map(str::to_string))
                .collect(),
        );
    }
    Ok(out)
}

fn read_text(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// `results.csv` and then the journal, as results (unlocked).
fn read_unlocked(out_dir: &Path) -> Result<Vec<CaseResult>> {
    let mut rows = Vec::new();
    let csv_path = out_dir.join(RESULTS);
    if let Some(t) = read_text(&csv_path)? {
        rows.extend(
            parse_rows(&csv_path, &t, None)?
                .into_iter()
                .map(|r| (csv_path.clone(), r)),
        );
    }
    let journal = out_dir.join(JOURNAL);
    if let Some(t) = read_text(&journal)? {
        let parsed = parse_rows(&journal, &t, Some(&RESULT_HEADER))?;
        rows.extend(parsed.into_iter().map(|r| (journal.clone(), r)));
    }
    let mut out: Vec<CaseResult> = Vec::new();
    for (path, row) in rows {
        let f: Vec<(&str, &str)> = row.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let r = CaseResult::from_fields(&f, Some(out_dir))
            .ok_or_else(|| output_error(&path, "a malformed row"))?;
        match out.iter_mut().find(|o| o.id == r.id) {
            Some(o) => *o = r, // the later row of a case wins, in the earlier's place
            None => out.push(r),
        }
    }
    Ok(out)
}

/// Every result recorded in `out_dir` (results.csv and a journal not merged yet), one per
/// case id; none when there is no results file.
pub fn read_results(out_dir: &Path) -> Result<Vec<CaseResult>> {
    if !out_dir.join(RESULTS).exists() && !out_dir.join(JOURNAL).exists() {
        return Ok(Vec::new());
    }
    let _lock = lock(out_dir)?;
    read_unlocked(out_dir)
}

/// Append `results` to the journal of `out_dir` (under the lock; cheap: one write).
pub fn append_results(out_dir: &Path, results: &[CaseResult]) -> Result<()> {
    let path = out_dir.join(JOURNAL);
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in results {
        w.write_record(r.row(Some(out_dir)))
            .map_err(|e| output_error(&path, e))?;
    }
    let bytes = w.into_inner().map_err(|e| output_error(&path, e))?;
    let _lock = lock(out_dir)?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    f.write_all(&bytes).map_err(|e| Error::io(&path, e))?;
    f.sync_data().map_err(|e| Error::io(&path, e))
}

/// Merge the journal into `results.csv` (atomically, under the lock) and empty it.
pub fn merge_results(out_dir: &Path) -> Result<()> {
    let _lock = lock(out_dir)?;
    let all = read_unlocked(out_dir)?;
    let dest = out_dir.join(RESULTS);
    let mut outputs = Outputs::new::<&Path>(&[]);
    outputs.stage(&dest, |p| {
        let mut w = csv::Writer::from_path(p).map_err(|e| output_error(p, e))?;
        w.write_record(RESULT_HEADER)
            .map_err(|e| output_error(p, e))?;
        for r in &all {
            w.write_record(r.row(Some(out_dir)))
                .map_err(|e| output_error(p, e))?;
        }
        w.flush().map_err(|e| Error::io(p, e))
    })?;
    outputs.commit()?;
    let journal = out_dir.join(JOURNAL);
    match std::fs::remove_file(&journal) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(&journal, e)),
        _ => Ok(()),
    }
}

/// Record `results` in `out_dir/results.csv`: rows of the same case ids are replaced, every
/// other row is kept (a journal append, then a merge).
pub fn write_results(out_dir: &Path, results: &[CaseResult]) -> Result<()> {
    append_results(out_dir, results)?;
    merge_results(out_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(id: &str, ok: bool, dir: &Path) -> CaseResult {
        CaseResult {
            id: id.into(),
            ok,
            volume_ml: ok.then_some(4.2049),
            voxels: if ok { 12 } else { 0 },
            slice_range: ok.then_some((3, 9)),
            seconds: 1.5,
            mask: ok.then(|| dir.join(format!("{id}.nii.gz"))),
            error: (!ok).then(|| "DICOM x: truncated, \"quoted\"".into()),
            adc_mean: ok.then_some(512.5),
            core_ml: ok.then_some(1.25),
            run: RunKey {
                input: "/data/a b.nii.gz".into(),
                bbox: "1 2 30 40".into(),
                model: "lite-medsam".into(),
                ..RunKey::default()
            },
        }
    }

    #[test]
    fn rows_of_other_runs_are_kept_and_a_case_is_replaced_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_results(d, &[result("a", true, d), result("b", false, d)]).unwrap();
        write_results(d, &[result("c", true, d)]).unwrap();
        append_results(d, &[result("b", true, d)]).unwrap(); // not merged yet
        let back = read_results(d).unwrap();
        let ids: Vec<_> = back.iter().map(|r| (r.id.as_str(), r.ok)).collect();
        assert_eq!(ids, [("a", true), ("b", true), ("c", true)]);
        assert_eq!(back[0], result("a", true, d));
        merge_results(d).unwrap();
        assert!(!d.join(JOURNAL).exists());
        assert_eq!(read_results(d).unwrap(), back);
        // The mask is stored relative to the output folder.
        let text = std::fs::read_to_string(d.join(RESULTS)).unwrap();
        assert!(
            text.lines().nth(1).unwrap().contains(",a.nii.gz,"),
            "{text}"
        );
        let failed = result("b", false, d);
        let f = failed.fields();
        let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(CaseResult::from_fields(&f, None), Some(failed));
    }

    #[test]
    fn old_results_files_read_and_their_cases_differ_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(RESULTS),
            "case_id,status,volume_ml,voxels,first_slice,last_slice,seconds,mask,error\n\
             a,ok,1.0000,3,1,2,0.50,a.nii.gz,\n",
        )
        .unwrap();
        let r = read_results(dir.path()).unwrap().remove(0);
        assert_eq!(r.mask, Some(dir.path().join("a.nii.gz")));
        let now = RunKey {
            input: "/x".into(),
            ..RunKey::default()
        };
        assert_eq!(r.run.differs(&now).unwrap(), "input changed (none -> /x)");
        assert_eq!(now.differs(&now.clone()), None);
    }
}
