//! Cohorts: many volumes, each with a key slice and a box, segmented one after another into one
//! output folder — one mask per case (`<case_id>.nii.gz`, written atomically) and one
//! `results.csv` that keeps every run's cases ([`results`]). A case that fails (an unreadable
//! file, a box outside its image) is recorded as failed with its error and the batch goes on.
//!
//! A batch is planned whole before any case runs ([`Batch::open`]): no mask may land on any
//! case's input or on the cases file, and `results.csv` may be neither. A re-run skips a case
//! only when it finished and its input (path, size, modification time), prompt, model,
//! window, precision and weights (SHA-256) are the ones recorded; otherwise it is redone,
//! with the reason.
//!
//! The cases file is CSV with a header: `case_id,input,key_slice,x0,y0,x1,y1[,model,window]`.
//! `input` is a NIfTI file, a DICOM file or a DICOM series folder (relative paths are taken
//! from the CSV's folder); `key_slice` may be empty (the middle slice); `model` is a model name
//! (empty: the batch's model); `window` a CT window name or `L,W`.
//! Used by `medseg batch` and Python's `medseg.batch` (locally or on Dask workers).

use std::path::{Path, PathBuf};
use std::time::{Instant, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::family::ModelFamily;
use crate::io::output::Outputs;
use crate::precision::Precision;
use crate::propagate::VolumeOptions;
use crate::segmenter::Segmenter;
use crate::volume::Intensity;

mod batch;
pub mod results;

pub use batch::{Batch, Settings, Todo};
pub use results::{
    append_results, merge_results, read_results, write_results, CaseResult, RunKey, RESULTS,
};

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
/// Longest case id: its mask's temporary name must fit in a file name.
const MAX_ID: usize = 200;

/// One case of a cohort.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// Names the mask file: letters, digits, `.`, `_`, `-` (not first), at most 200.
    pub id: String,
    /// NIfTI file, DICOM file or DICOM series folder (absolute).
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

impl Case {
    /// A case from its fields as text (a CSV row, a Python dict); `base` resolves a relative
    /// `input`. Errors name the field.
    pub fn parse(fields: &[(&str, &str)], base: &Path) -> Result<Self> {
        parse_case(fields, base).map_err(bad_case)
    }

    /// The case as text fields, as [`Case::parse`] reads them back (`input` absolute).
    pub fn fields(&self) -> Vec<(&'static str, String)> {
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
            ("window", opt(self.window.map(window_text))),
        ]
    }

    /// What running this case with `model`, `precision` and weights of SHA-256 `weights`
    /// means now (the input stamped as it is at this moment).
    pub fn run_key(&self, model: ModelFamily, precision: Precision, weights: &str) -> RunKey {
        RunKey {
            input: self.input.display().to_string(),
            input_stamp: input_stamp(&self.input).unwrap_or_default(),
            key_slice: self.key_slice.map(|k| k.to_string()).unwrap_or_default(),
            bbox: self.bbox.map(|v| v.to_string()).join(" "),
            model: model.name().to_string(),
            window: self.window.map(window_text).unwrap_or_default(),
            precision: precision.name().to_string(),
            weights_sha256: weights.to_string(),
        }
    }
}

fn window_text(w: Intensity) -> String {
    match w {
        Intensity::Window { level, width } => format!("{level},{width}"),
        Intensity::Percentile => "mr".into(),
        Intensity::MinMax => "minmax".into(),
    }
}

fn parse_case(fields: &[(&str, &str)], base: &Path) -> std::result::Result<Case, String> {
    let get = |k: &str| {
        let v = fields.iter().find(|(n, _)| *n == k).map(|(_, v)| v.trim());
        v.filter(|v| !v.is_empty())
    };
    let need = |k: &str| get(k).ok_or_else(|| format!("no {k}"));
    let id = need("case_id")?.to_string();
    check_id(&id)?;
    let num = |k: &str| -> std::result::Result<f64, String> {
        let v = need(k)?;
        v.parse()
            .map_err(|_| format!("{id}: {k} {v:?} is not a number"))
    };
    let key_slice = get("key_slice")
        .map(|v| v.parse().map_err(|_| format!("{id}: key_slice {v:?}")))
        .transpose()?;
    let model = get("model")
        .map(|m| ModelFamily::parse(m).ok_or_else(|| format!("{id}: model {m:?}")))
        .transpose()?;
    let window = get("window")
        .map(Intensity::parse)
        .transpose()
        .map_err(|e| format!("{id}: {e}"))?;
    let input = base.join(need("input")?);
    Ok(Case {
        input: std::path::absolute(&input).unwrap_or(input),
        key_slice,
        bbox: [num("x0")?, num("y0")?, num("x1")?, num("y1")?],
        model,
        window,
        id,
    })
}

/// A file's size and modification time; a folder's regular files' count, bytes and newest
/// modification time. What tells a re-run that an input changed.
pub fn input_stamp(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let mtime = |m: &std::fs::Metadata| {
        m.modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos())
    };
    if !meta.is_dir() {
        return Ok(format!("{} bytes, mtime {}", meta.len(), mtime(&meta)));
    }
    let (mut n, mut bytes, mut newest) = (0u64, 0u64, 0u128);
    for e in std::fs::read_dir(path).map_err(|e| Error::io(path, e))?.flatten() {
        if let Ok(m) = e.metadata().filter(|m| m.is_file()) {
            n += 1;
            bytes += m.len();
            newest = newest.max(mtime(&m));
        }
    }
    Ok(format!("{n} files, {bytes} bytes, newest mtime {newest}"))
}

fn bad_case(reason: String) -> Error {
    Error::InvalidOption(format!("cohort case: {reason}"))
}

fn check_id(id: &str) -> std::result::Result<(), String> {
    let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let first_ok = id.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
    if !(id.chars().all(safe) && first_ok) {
        return Err(format!(
            "case_id {id:?}: use letters, digits, '.', '_' and '-', starting with a letter, \
             digit or '_' (it names the mask file, and a cell starting with '-' is a formula \
             to spreadsheets)"
        ));
    }
    if id.len() > MAX_ID {
        return Err(format!(
            "case_id of {} characters: at most {MAX_ID} (it names the mask file)",
            id.len()
        ));
    }
    Ok(())
}

/// The cases of a CSV file (see the module docs); duplicate ids (also ids differing only in
/// case, one file on case-insensitive file systems) and values beyond the header are refused.
pub fn read_cases(csv_path: &Path) -> Result<Vec<Case>> {
    crate::io::check_input(csv_path)?;
    let text = std::fs::read_to_string(csv_path).map_err(|e| Error::io(csv_path, e))?;
    let base = csv_path.parent().unwrap_or(Path::new("."));
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(text.as_bytes());
    let header: Vec<String> = rdr
        .headers()
        .map_err(|e| bad_case(format!("{}: {e}", csv_path.display())))?
        .iter()
        .map(|h| h.trim().trim_start_matches('\u{feff}').to_string())
        .collect();
    if let Some(h) = header.iter().find(|h| !HEADER.contains(&h.as_str())) {
        return Err(bad_case(format!(
            "unknown column {h:?}; columns: {}",
            HEADER.join(",")
        )));
    }
    let mut cases: Vec<Case> = Vec::new();
    for (i, row) in rdr.records().enumerate() {
        let line = i + 2;
        let row = row.map_err(|e| bad_case(format!("line {line}: {e}")))?;
        if row.len() > header.len() {
            return Err(bad_case(format!(
                "line {line}: {} values, but the header names {} columns ({}): a value \
                 beyond them would be ignored; add its column to the header",
                row.len(),
                header.len(),
                header.join(",")
            )));
        }
        let fields: Vec<(&str, &str)> = header.iter().map(String::as_str).zip(row.iter()).collect();
        let case = parse_case(&fields, base).map_err(|e| bad_case(format!("line {line}: {e}")))?;
        if let Some(c) = cases.iter().find(|c| c.id.eq_ignore_ascii_case(&case.id)) {
            return Err(bad_case(format!(
                "line {line}: case_id {} twice{}",
                case.id,
                if c.id == case.id {
                    String::new()
                } else {
                    format!(" ({} and {} name one mask file where case is ignored)", c.id, case.id)
                }
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
/// The result records what the case ran with ([`RunKey`], the input stamped before reading).
pub fn run_case(seg: &Segmenter, case: &Case, out_dir: &Path) -> CaseResult {
    let t = Instant::now();
    let run = case.run_key(
        seg.family(),
        seg.precision(),
        seg.weights_sha256().unwrap_or_default(),
    );
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
            run: RunKey::default(),
        },
        Err(e) => CaseResult::failed(&case.id, e.to_string()),
    };
    r.run = run;
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

/// The cases an earlier run in `out_dir` finished: recorded ok and their mask still there.
/// (Whether a case is done for a new run also depends on what it ran with: [`Batch`].)
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
        let long = "a".repeat(MAX_ID + 1);
        let h = "case_id,input,key_slice,x0,y0,x1,y1";
        for (body, needle) in [
            (format!("{h}\n../x,a,1,1,2,3,4\n"), "case_id"),
            (format!("{h}\na,a,1,1,2,3\n"), "no y1"),
            (format!("{h}\na,a,z,1,2,3,4\n"), "key_slice"),
            (format!("{h}\na,a,1,1,2,3,4\na,b,1,1,2,3,4\n"), "twice"),
            (format!("{h}\nAb,a,1,1,2,3,4\naB,b,1,1,2,3,4\n"), "where case is ignored"),
            (format!("{h}\n-A1-B1,a,1,1,2,3,4\n"), "formula"),
            (format!("{h}\n{long},a,1,1,2,3,4\n"), "at most 200"),
            (format!("{h}\na,a,1,1,2,3,4,brain\n"), "8 values, but the header names 7"),
            ("case_id,input,slice,x0,y0,x1,y1\n".into(), "unknown column"),
        ] {
            std::fs::write(&csv, &body).unwrap();
            let e = read_cases(&csv).unwrap_err().to_string();
            assert!(e.contains(needle), "{body:?}: {e}");
            assert_eq!(e.matches("cohort case").count(), 1, "said once: {e}");
        }
    }

    fn settings() -> Settings {
        Settings {
            model: ModelFamily::LiteMedSam,
            weights: None,
            precision: Precision::F32,
        }
    }

    fn case(id: &str, input: &Path) -> Case {
        Case {
            id: id.into(),
            input: input.to_path_buf(),
            key_slice: None,
            bbox: [1.0, 2.0, 30.0, 40.0],
            model: None,
            window: None,
        }
    }

    #[test]
    fn no_mask_lands_on_any_input_or_the_cases_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for f in ["mca.nii.gz", "lac.nii.gz", "cases.csv"] {
            std::fs::write(d.join(f), "scan").unwrap();
        }
        // Case lac's mask would be lac.nii.gz: case x2's input.
        let cases = vec![case("lac", &d.join("mca.nii.gz")), case("x2", &d.join("lac.nii.gz"))];
        let b = Batch::open(cases, d, Some(&d.join("cases.csv")), &settings()).unwrap();
        let todo: Vec<_> = b.plan().map(|(_, t)| t.clone()).collect();
        match &todo[0] {
            Todo::Refused(r) => {
                let e = r.error.as_deref().unwrap();
                assert!(e.contains("would overwrite the input of case x2"), "{e}");
            }
            other => panic!("case lac must be refused: {other:?}"),
        }
        assert_eq!(todo[1], Todo::Run(None));
        // The cases file as results.csv in the output folder: the whole batch is refused.
        let csv = d.join(RESULTS);
        std::fs::write(&csv, "case_id,input\n").unwrap();
        let e = Batch::open(vec![], d, Some(&csv), &settings()).unwrap_err();
        assert!(e.to_string().contains("is the cases file"), "{e}");
        let e = Batch::open(vec![case("a", &csv)], d, None, &settings()).unwrap_err();
        assert!(e.to_string().contains("is the input of case a"), "{e}");
        assert_eq!(std::fs::read_to_string(&csv).unwrap(), "case_id,input\n");
    }

    #[test]
    fn a_case_is_done_only_when_it_ran_with_the_same_input_prompt_and_options() {
        let dir = tempfile::tempdir().unwrap();
        let (d, out) = (dir.path(), dir.path().join("out"));
        let input = d.join("a.nii.gz");
        std::fs::write(&input, "scan").unwrap();
        let c = case("a", &input);
        let s = settings();
        let b = Batch::open(vec![c.clone()], &out, None, &s).unwrap();
        assert_eq!(b.plan().next().unwrap().1, &Todo::Run(None));
        // What run_case records for a finished case.
        let key = c.run_key(ModelFamily::LiteMedSam, Precision::F32, weights_sha());
        std::fs::write(mask_path(&out, "a"), "mask").unwrap();
        let ok = CaseResult {
            ok: true,
            error: None,
            mask: Some(mask_path(&out, "a")),
            run: key,
            ..CaseResult::failed("a", String::new())
        };
        write_results(&out, &[ok.clone()]).unwrap();
        let todo = |c: &Case, s: &Settings| {
            let b = Batch::open(vec![c.clone()], &out, None, s).unwrap();
            b.plan().next().unwrap().1.clone()
        };
        assert_eq!(todo(&c, &s), Todo::Done(ok));
        let mut moved = c.clone();
        moved.bbox[0] = 5.0;
        let why = |t: Todo| match t {
            Todo::Run(Some(w)) => w,
            other => panic!("expected a redo: {other:?}"),
        };
        assert!(why(todo(&moved, &s)).starts_with("box changed (1 2 30 40 -> 5 2 30 40)"));
        let mut windowed = c.clone();
        windowed.window = Some(Intensity::MinMax);
        assert!(why(todo(&windowed, &s)).starts_with("window changed"));
        let weights = d.join("w.pth");
        std::fs::write(&weights, "other weights").unwrap();
        let s2 = Settings {
            weights: Some(weights),
            ..settings()
        };
        assert!(why(todo(&c, &s2)).starts_with("weights_sha256 changed"));
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&input, "a new scan").unwrap();
        assert!(why(todo(&c, &s)).starts_with("input_stamp changed"));
        std::fs::remove_file(mask_path(&out, "a")).unwrap();
        assert_eq!(why(todo(&c, &s)), "its mask is gone");
    }

    fn weights_sha() -> &'static str {
        crate::weights::lite_medsam::SHA256
    }
}
