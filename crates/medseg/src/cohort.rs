//! Cohorts: many volumes, each with a key slice and a box, segmented one after another into one
//! output folder — one mask per case (`<case_id>.nii.gz`, written atomically) and one
//! `results.csv` (rewritten atomically after every case, so an interrupted batch keeps what it
//! finished). A case that fails (an unreadable file, a box outside its image) is recorded as
//! failed with its error and the batch goes on; a re-run skips the cases already done.
//!
//! The cases file is CSV with a header: `case_id,input,key_slice,x0,y0,x1,y1[,model,window]`.
//! `input` is a NIfTI file, a DICOM file or a DICOM series folder (relative paths are taken
//! from the CSV's folder); `key_slice` may be empty (the middle slice); `model` is
//! `lite-medsam` or `medsam` (empty: the batch's model); `window` a CT window name or `L,W`.
//! Used by `medseg batch` and Python's `medseg.batch` (locally or on Dask workers).

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::family::ModelFamily;
use crate::io::output::Outputs;
use crate::propagate::VolumeOptions;
use crate::segmenter::Segmenter;
use crate::volume::Intensity;

/// The results file in the output folder.
pub const RESULTS: &str = "results.csv";
const HEADER: [&str; 9] = [
    "case_id",
    "input",
    "key_slice",
    "x0",
    "y0",
    "x1",
    "y1",
    "model",
    "window",
];
const RESULT_HEADER: [&str; 9] = [
    "case_id",
    "status",
    "volume_ml",
    "voxels",
    "first_slice",
    "last_slice",
    "seconds",
    "mask",
    "error",
];

/// One case of a cohort.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// Names the mask file: letters, digits, `.`, `_`, `-`.
    pub id: String,
    /// NIfTI file, DICOM file or DICOM series folder.
    pub input: PathBuf,
    /// `None`: the middle slice.
    pub key_slice: Option<usize>,
    /// Box `[x0, y0, x1, y1]` in pixels of the key slice.
    pub bbox: [f64; 4],
    /// `None`: the batch's model.
    pub model: Option<ModelFamily>,
    /// `None`: by modality.
    pub window: Option<Intensity>,
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
    /// Where the mask was written.
    pub mask: Option<PathBuf>,
    /// Why the case failed.
    pub error: Option<String>,
}

impl Case {
    /// A case from its fields as text (a CSV row, a Python dict); `base` resolves a relative
    /// `input`. Errors name the field.
    pub fn parse(fields: &[(&str, &str)], base: &Path) -> Result<Self> {
        let get = |k: &str| {
            let v = fields.iter().find(|(n, _)| *n == k).map(|(_, v)| v.trim());
            v.filter(|v| !v.is_empty())
        };
        let need = |k: &str| get(k).ok_or_else(|| bad_case(format!("no {k}")));
        let id = need("case_id")?.to_string();
        check_id(&id)?;
        let num = |k: &str| -> Result<f64> {
            let v = need(k)?;
            v.parse()
                .map_err(|_| bad_case(format!("{id}: {k} {v:?} is not a number")))
        };
        let key_slice = get("key_slice")
            .map(|v| {
                v.parse()
                    .map_err(|_| bad_case(format!("{id}: key_slice {v:?}")))
            })
            .transpose()?;
        let model = get("model")
            .map(|m| ModelFamily::parse(m).ok_or_else(|| bad_case(format!("{id}: model {m:?}"))))
            .transpose()?;
        Ok(Self {
            input: base.join(need("input")?),
            key_slice,
            bbox: [num("x0")?, num("y0")?, num("x1")?, num("y1")?],
            model,
            window: get("window").map(Intensity::parse).transpose()?,
            id,
        })
    }
}

impl Case {
    /// The case as text fields, as [`Case::parse`] reads them back (`input` absolute as read).
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let window = self.window.map(|w| match w {
            Intensity::Window { level, width } => format!("{level},{width}"),
            Intensity::Percentile => "mr".into(),
            Intensity::MinMax => "minmax".into(),
        });
        let [x0, y0, x1, y1] = self.bbox.map(|v| v.to_string());
        let opt = |v: Option<String>| v.unwrap_or_default();
        vec![
            ("case_id", self.id.clone()),
            ("input", self.input.display().to_string()),
            ("key_slice", opt(self.key_slice.map(|k| k.to_string()))),
            ("x0", x0),
            ("y0", y0),
            ("x1", x1),
            ("y1", y1),
            ("model", opt(self.model.map(|m| m.name().to_string()))),
            ("window", opt(window)),
        ]
    }
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
        }
    }

    /// The result as the fields of `results.csv` (empty text for what is absent).
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        RESULT_HEADER.into_iter().zip(result_row(self)).collect()
    }

    /// A result from the fields of `results.csv` (as [`CaseResult::fields`] gives them).
    pub fn from_fields(fields: &[(&str, &str)]) -> Option<Self> {
        let row: Vec<&str> = RESULT_HEADER
            .iter()
            .map(|h| fields.iter().find(|(k, _)| k == h).map_or("", |(_, v)| v))
            .collect();
        result_from_row(&csv::StringRecord::from(row))
    }
}

fn bad_case(reason: String) -> Error {
    Error::InvalidOption(format!("cohort case: {reason}"))
}

fn check_id(id: &str) -> Result<()> {
    let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if id.chars().all(safe) && !id.starts_with('.') {
        Ok(())
    } else {
        Err(bad_case(format!(
            "case_id {id:?}: use letters, digits, '.', '_' and '-' (it names the mask file)"
        )))
    }
}

/// The cases of a CSV file (see the module docs); duplicate ids are refused.
pub fn read_cases(csv_path: &Path) -> Result<Vec<Case>> {
    let text = std::fs::read_to_string(csv_path).map_err(|e| Error::io(csv_path, e))?;
    let base = csv_path.parent().unwrap_or(Path::new("."));
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(text.as_bytes());
    let header: Vec<String> = rdr
        .headers()
        .map_err(|e| bad_case(format!("{}: {e}", csv_path.display())))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    if let Some(h) = header.iter().find(|h| !HEADER.contains(&h.as_str())) {
        return Err(bad_case(format!(
            "unknown column {h:?}; columns: {}",
            HEADER.join(",")
        )));
    }
    let mut cases: Vec<Case> = Vec::new();
    for (i, row) in rdr.records().enumerate() {
        let row = row.map_err(|e| bad_case(format!("line {}: {e}", i + 2)))?;
        let fields: Vec<(&str, &str)> = header.iter().map(String::as_str).zip(row.iter()).collect();
        let case =
            Case::parse(&fields, base).map_err(|e| bad_case(format!("line {}: {e}", i + 2)))?;
        if cases.iter().any(|c| c.id == case.id) {
            return Err(bad_case(format!(
                "line {}: case_id {} twice",
                i + 2,
                case.id
            )));
        }
        cases.push(case);
    }
    Ok(cases)
}

/// Where a case's mask goes.
pub fn mask_path(out_dir: &Path, id: &str) -> PathBuf {
    out_dir.join(format!("{id}.nii.gz"))
}

/// Segment one case with `seg` and write its mask; a failure is the result, not an error.
pub fn run_case(seg: &Segmenter, case: &Case, out_dir: &Path) -> CaseResult {
    let t = Instant::now();
    let mut r = match segment_case(seg, case, out_dir) {
        Ok((stats, mask)) => CaseResult {
            id: case.id.clone(),
            ok: true,
            volume_ml: stats.volume_ml,
            voxels: stats.voxels,
            slice_range: stats.slice_range,
            seconds: 0.0,
            mask: Some(mask),
            error: None,
        },
        Err(e) => CaseResult::failed(&case.id, e.to_string()),
    };
    r.seconds = t.elapsed().as_secs_f64();
    r
}

fn segment_case(
    seg: &Segmenter,
    case: &Case,
    out_dir: &Path,
) -> Result<(crate::volume::LesionStats, PathBuf)> {
    if let Some(m) = case.model.filter(|m| *m != seg.family()) {
        return Err(Error::InvalidOption(format!(
            "case {} asks for {m}, this segmenter is {}",
            case.id,
            seg.family()
        )));
    }
    let dest = mask_path(out_dir, &case.id);
    let mut outputs = Outputs::new(&[&case.input]);
    outputs.plan(&dest)?;
    let vol = crate::io::read_volume(&case.input)?;
    let mut opts = VolumeOptions::new(case.key_slice.unwrap_or(vol.dims[0] / 2), case.bbox);
    opts.intensity = case.window;
    let res = seg.segment_volume(&vol, &opts, &mut |_, _| {})?;
    outputs.stage(&dest, |p| crate::io::nifti::write_mask(p, &res.mask, &vol))?;
    outputs.commit()?;
    Ok((res.stats, dest))
}

/// The results recorded in `out_dir` by an earlier run (none when there is no results file).
pub fn read_results(out_dir: &Path) -> Result<Vec<CaseResult>> {
    let path = out_dir.join(RESULTS);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let mut rdr = csv::Reader::from_reader(text.as_bytes());
    let bad = |e: String| Error::Output {
        path: path.clone(),
        reason: e,
    };
    let mut out = Vec::new();
    for row in rdr.records() {
        let row = row.map_err(|e| bad(e.to_string()))?;
        out.push(result_from_row(&row).ok_or_else(|| bad("a malformed row".into()))?);
    }
    Ok(out)
}

fn result_from_row(row: &csv::StringRecord) -> Option<CaseResult> {
    let opt = |i: usize| row.get(i).filter(|v| !v.is_empty());
    let range = match (opt(4), opt(5)) {
        (Some(a), Some(b)) => Some((a.parse().ok()?, b.parse().ok()?)),
        _ => None,
    };
    Some(CaseResult {
        id: row.get(0)?.to_string(),
        ok: row.get(1)? == "ok",
        volume_ml: opt(2).and_then(|v| v.parse().ok()),
        voxels: row.get(3)?.parse().unwrap_or(0),
        slice_range: range,
        seconds: row.get(6)?.parse().unwrap_or(0.0),
        mask: opt(7).map(PathBuf::from),
        error: opt(8).map(str::to_string),
    })
}

/// Write `results` as `out_dir/results.csv`, atomically.
pub fn write_results(out_dir: &Path, results: &[CaseResult]) -> Result<()> {
    let dest = out_dir.join(RESULTS);
    let mut outputs = Outputs::new::<&Path>(&[]);
    outputs.plan(&dest)?;
    outputs.stage(&dest, |p| {
        let mut w = csv::Writer::from_path(p).map_err(|e| csv_error(p, e))?;
        w.write_record(RESULT_HEADER).map_err(|e| csv_error(p, e))?;
        for r in results {
            w.write_record(result_row(r)).map_err(|e| csv_error(p, e))?;
        }
        w.flush().map_err(|e| Error::io(p, e))
    })?;
    outputs.commit()
}

fn result_row(r: &CaseResult) -> [String; 9] {
    let s = |v: Option<String>| v.unwrap_or_default();
    [
        r.id.clone(),
        if r.ok { "ok" } else { "failed" }.into(),
        s(r.volume_ml.map(|v| format!("{v:.4}"))),
        r.voxels.to_string(),
        s(r.slice_range.map(|(a, _)| a.to_string())),
        s(r.slice_range.map(|(_, b)| b.to_string())),
        format!("{:.2}", r.seconds),
        s(r.mask.as_ref().map(|p| p.display().to_string())),
        s(r.error.clone()),
    ]
}

fn csv_error(path: &Path, e: csv::Error) -> Error {
    Error::Output {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// The cases an earlier run in `out_dir` finished: recorded ok and their mask still there
/// (what a re-run skips).
pub fn finished(out_dir: &Path) -> Result<Vec<CaseResult>> {
    let mut done = read_results(out_dir)?;
    done.retain(|r| r.ok && r.mask.as_ref().is_some_and(|m| m.exists()));
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_parse_with_optional_columns_and_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("cases.csv");
        std::fs::write(
            &csv,
            "case_id,input,key_slice,x0,y0,x1,y1,model,window\n\
             a1,scans/a.nii.gz,12,1,2,30,40,,\n\
             b-2,/abs/b,,1.5,2,30,40,medsam,\"40,80\"\n",
        )
        .unwrap();
        let cases = read_cases(&csv).unwrap();
        assert_eq!(cases[0].input, dir.path().join("scans/a.nii.gz"));
        assert_eq!((cases[0].key_slice, cases[0].model), (Some(12), None));
        assert_eq!(cases[1].input, PathBuf::from("/abs/b"));
        assert_eq!(cases[1].bbox, [1.5, 2.0, 30.0, 40.0]);
        assert_eq!(cases[1].model, Some(ModelFamily::MedSam));
        assert!(cases[1].window.is_some());
        for (body, needle) in [
            (
                "case_id,input,key_slice,x0,y0,x1,y1\n../x,a,1,1,2,3,4\n",
                "case_id",
            ),
            (
                "case_id,input,key_slice,x0,y0,x1,y1\na,a,1,1,2,3\n",
                "no y1",
            ),
            (
                "case_id,input,key_slice,x0,y0,x1,y1\na,a,z,1,2,3,4\n",
                "key_slice",
            ),
            (
                "case_id,input,key_slice,x0,y0,x1,y1\na,a,1,1,2,3,4\na,b,1,1,2,3,4\n",
                "twice",
            ),
            ("case_id,input,slice,x0,y0,x1,y1\n", "unknown column"),
        ] {
            std::fs::write(&csv, body).unwrap();
            let e = read_cases(&csv).unwrap_err().to_string();
            assert!(e.contains(needle), "{body:?}: {e}");
        }
    }

    #[test]
    fn results_round_trip_through_the_csv() {
        let dir = tempfile::tempdir().unwrap();
        let ok = CaseResult {
            id: "a".into(),
            ok: true,
            volume_ml: Some(4.2049),
            voxels: 12,
            slice_range: Some((3, 9)),
            seconds: 1.5,
            mask: Some(dir.path().join("a.nii.gz")),
            error: None,
        };
        let failed = CaseResult {
            id: "b".into(),
            ok: false,
            volume_ml: None,
            voxels: 0,
            slice_range: None,
            seconds: 0.25,
            mask: None,
            error: Some("DICOM x: truncated, \"quoted\"".into()),
        };
        write_results(dir.path(), &[ok.clone(), failed.clone()]).unwrap();
        let back = read_results(dir.path()).unwrap();
        assert_eq!(back[1], failed);
        assert_eq!(back[0].volume_ml, Some(4.2049));
        assert_eq!(
            (back[0].slice_range, &back[0].mask),
            (ok.slice_range, &ok.mask)
        );
        // finished: ok, and only while its mask exists
        assert!(finished(dir.path()).unwrap().is_empty());
        std::fs::write(dir.path().join("a.nii.gz"), b"x").unwrap();
        assert_eq!(finished(dir.path()).unwrap(), vec![back[0].clone()]);
    }
}
