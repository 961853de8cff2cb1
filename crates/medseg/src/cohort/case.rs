//! A case of a cohort: its fields, as a CSV row or a Python dict gives them, checked.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use super::results::RunKey;
use crate::error::{Error, Result};
use crate::family::ModelFamily;
use crate::io::mask::MaskFormat;
use crate::precision::Precision;
use crate::propagate::RequestOptions;
use crate::request::SegmentRequest;
use crate::volume::Intensity;

const HEADER: [&str; 11] = [
    "case_id",
    "input",
    "key_slice",
    "x0",
    "y0",
    "x1",
    "y1",
    "model",
    "window",
    "adc",
    "mask_format",
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
    /// Key slice, box (always given), model (`None`: the batch's), window and propagation
    /// options of its optional columns (`modality`, `max_drift`, `official_fallback`,
    /// `largest_component`, `stop_after_empty`), as [`SegmentRequest::parse`] reads them;
    /// `input` is the field above.
    pub request: SegmentRequest,
    /// An ADC map on the input's grid (absolute): the stroke readout ([`crate::stroke`]).
    pub adc: Option<PathBuf>,
    /// How the mask is written: [`MaskFormat::Nifti`] (`<case_id>.nii.gz`, also when `None`:
    /// not given) or [`MaskFormat::Seg`] (`<case_id>.dcm`, a DICOM SEG; DICOM inputs only).
    pub mask_format: Option<MaskFormat>,
}

impl Case {
    /// A case from its fields as text (a CSV row, a Python dict); `base` resolves a relative
    /// `input`. Errors name the field.
    pub fn parse(fields: &[(&str, &str)], base: &Path) -> Result<Self> {
        parse_case(fields, base).map_err(bad_case)
    }

    /// The case as text fields, as [`Case::parse`] reads them back (`input` absolute).
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let [x0, y0, x1, y1] = self.bbox().map(|v| v.to_string());
        let opt = |v: Option<String>| v.unwrap_or_default();
        let r = &self.request;
        vec![
            ("case_id", self.id.clone()),
            ("input", self.input.display().to_string()),
            ("key_slice", opt(r.key_slice.map(|k| k.to_string()))),
            ("x0", x0),
            ("y0", y0),
            ("x1", x1),
            ("y1", y1),
            ("model", opt(r.model.map(|m| m.name().to_string()))),
            ("window", opt(r.window.map(Intensity::as_text))),
            (
                "adc",
                opt(self.adc.as_ref().map(|p| p.display().to_string())),
            ),
            (
                "mask_format",
                opt(self.mask_format.map(|f| mask_ext(Some(f)).to_string())),
            ),
        ]
        .into_iter()
        .chain(r.options.fields())
        .collect()
    }

    /// The box `[x0, y0, x1, y1]` in pixels of the key slice.
    pub fn bbox(&self) -> [f64; 4] {
        self.request.bbox.unwrap_or_default()
    }

    /// What running this case with `model`, `precision` and weights of SHA-256 `weights`
    /// means now (the input stamped as it is at this moment).
    pub fn run_key(&self, model: ModelFamily, precision: Precision, weights: &str) -> RunKey {
        RunKey {
            input: self.input.display().to_string(),
            input_stamp: input_stamp(&self.input).unwrap_or_default(),
            key_slice: (self.request.key_slice.map(|k| k.to_string())).unwrap_or_default(),
            bbox: self.bbox().map(|v| v.to_string()).join(" "),
            model: model.name().to_string(),
            window: (self.request.window.map(Intensity::as_text)).unwrap_or_default(),
            precision: precision.name().to_string(),
            weights_sha256: weights.to_string(),
            adc: self.adc.as_ref().map_or(String::new(), |p| {
                format!("{} ({})", p.display(), input_stamp(p).unwrap_or_default())
            }),
            mask_format: match self.mask_format {
                Some(MaskFormat::Seg) => "dcm".into(),
                _ => String::new(),
            },
            options: self.request.options.summary(),
        }
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
    let corners = ["x0", "y0", "x1", "y1"].map(need);
    let bbox = corners
        .into_iter()
        .collect::<std::result::Result<Vec<_>, _>>()?;
    // The request's own fields; `box` from the four columns (the CSV's `input` is resolved
    // against `base` below).
    let shared = ["key_slice", "model", "window"].map(|k| (k, get(k).unwrap_or_default()));
    let box_text = bbox.join(",");
    let mut own: Vec<(&str, &str)> = shared
        .into_iter()
        .chain([("box", box_text.as_str())])
        .collect();
    own.extend(RequestOptions::FIELDS.map(|k| (k, get(k).unwrap_or_default())));
    let request = SegmentRequest::parse(&own).map_err(|e| format!("{id}: {e}"))?;
    let absolute = |p: &str| {
        let p = base.join(p);
        std::path::absolute(&p).unwrap_or(p)
    };
    Ok(Case {
        input: absolute(need("input")?),
        adc: get("adc").map(absolute),
        mask_format: get("mask_format")
            .map(|f| parse_mask_format(f).map_err(|e| format!("{id}: {e}")))
            .transpose()?,
        request,
        id,
    })
}

/// A file's size and modification time; a DICOM series folder's DICOM files' count, bytes and
/// newest modification time (other files — a mask written into the folder, notes — are not
/// part of the series and do not count). What tells a re-run that an input changed.
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
    for e in std::fs::read_dir(path)
        .map_err(|e| Error::io(path, e))?
        .flatten()
    {
        let dicom = crate::io::input_kind(&e.path()) == crate::io::InputKind::Dicom;
        if let Some(m) = e.metadata().ok().filter(|m| m.is_file() && dicom) {
            n += 1;
            bytes += m.len();
            newest = newest.max(mtime(&m));
        }
    }
    Ok(format!(
        "{n} DICOM files, {bytes} bytes, newest mtime {newest}"
    ))
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
    let known = |h: &str| HEADER.contains(&h) || RequestOptions::FIELDS.contains(&h);
    if let Some(h) = header.iter().find(|h| !known(h)) {
        return Err(bad_case(format!(
            "unknown column {h:?}; columns: {},{}",
            HEADER.join(","),
            RequestOptions::FIELDS.join(",")
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
        if let Some(why) = cases.iter().find_map(|c| same_mask_file(&c.id, &case.id)) {
            return Err(bad_case(format!("line {line}: {why}")));
        }
        cases.push(case);
    }
    Ok(cases)
}

/// Why cases `a` and `b` (`a` first) cannot both be in one cohort: the same id, or ids that
/// differ only in case (one mask file on case-insensitive file systems).
pub(crate) fn same_mask_file(a: &str, b: &str) -> Option<String> {
    if a == b {
        Some(format!("case_id {b} twice"))
    } else if a.eq_ignore_ascii_case(b) {
        Some(format!(
            "case_id {b} twice ({a} and {b} name one mask file where case is ignored)"
        ))
    } else {
        None
    }
}

/// A cohort's mask format by name: `nii.gz` (or `nifti`) or `dcm` (or `seg`).
pub fn parse_mask_format(s: &str) -> std::result::Result<MaskFormat, String> {
    match s
        .trim()
        .trim_start_matches('.')
        .to_ascii_lowercase()
        .as_str()
    {
        "nii.gz" | "nifti" => Ok(MaskFormat::Nifti),
        "dcm" | "seg" => Ok(MaskFormat::Seg),
        other => Err(format!(
            "mask_format {other:?}: use nii.gz (NIfTI) or dcm (DICOM SEG)"
        )),
    }
}

/// The extension of a cohort's masks (`None`: the default, NIfTI).
fn mask_ext(f: Option<MaskFormat>) -> &'static str {
    match f {
        Some(MaskFormat::Seg) => "dcm",
        _ => "nii.gz",
    }
}

/// Where a case's mask goes: `<id>.nii.gz`, or `<id>.dcm` for a DICOM SEG.
pub fn mask_path(out_dir: &Path, id: &str, format: Option<MaskFormat>) -> PathBuf {
    out_dir.join(format!("{id}.{}", mask_ext(format)))
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
            "case_id,input,key_slice,x0,y0,x1,y1,model,window,adc,mask_format,modality,max_drift\n\
             a1,scans/a.nii.gz,12,1,2,30,40,,,,,,\n\
             b-2,/abs/b,,1.5,2,30,40,medsam,\"40,80\",adc/b,dcm,ct,0\n",
        )
        .unwrap();
        let cases = read_cases(&csv).unwrap();
        assert_eq!((cases[0].adc.as_ref(), cases[0].mask_format), (None, None));
        assert_eq!(cases[1].adc, Some(dir.path().join("adc/b")));
        assert_eq!(cases[1].mask_format, Some(MaskFormat::Seg));
        assert_eq!(cases[0].request.options, RequestOptions::default());
        assert_eq!(
            cases[1].request.options.summary(),
            "modality=ct max_drift=0"
        );
        let key = cases[1].run_key(ModelFamily::MedSam, Precision::F32, "abc");
        assert_eq!(
            (key.mask_format.as_str(), key.options.as_str()),
            ("dcm", "modality=ct max_drift=0")
        );
        let out = Path::new("/out");
        assert_eq!(
            mask_path(out, "b-2", cases[1].mask_format),
            out.join("b-2.dcm")
        );
        assert_eq!(mask_path(out, "a1", None), out.join("a1.nii.gz"));
        let back: Vec<(&str, String)> = cases[1].fields();
        let back: Vec<(&str, &str)> = back.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(Case::parse(&back, dir.path()).unwrap(), cases[1]);
        assert_eq!(cases[0].input, dir.path().join("scans/a.nii.gz"));
        assert_eq!(
            (cases[0].request.key_slice, cases[0].request.model),
            (Some(12), None)
        );
        assert_eq!(cases[1].input, PathBuf::from("/abs/b"));
        assert_eq!(cases[1].bbox(), [1.5, 2.0, 30.0, 40.0]);
        assert_eq!(cases[1].request.model, Some(ModelFamily::MedSam));
        assert!(cases[1].request.window.is_some());
        let long = "a".repeat(MAX_ID + 1);
        let h = "case_id,input,key_slice,x0,y0,x1,y1";
        for (body, needle) in [
            (format!("{h}\n../x,a,1,1,2,3,4\n"), "case_id"),
            (format!("{h}\na,a,1,1,2,3\n"), "no y1"),
            (format!("{h}\na,a,z,1,2,3,4\n"), "key_slice"),
            (format!("{h}\na,a,1,1,2,3,4\na,b,1,1,2,3,4\n"), "twice"),
            (
                format!("{h}\nAb,a,1,1,2,3,4\naB,b,1,1,2,3,4\n"),
                "where case is ignored",
            ),
            (format!("{h}\n-A1-B1,a,1,1,2,3,4\n"), "formula"),
            (format!("{h}\n{long},a,1,1,2,3,4\n"), "at most 200"),
            (
                format!("{h}\na,a,1,1,2,3,4,brain\n"),
                "8 values, but the header names 7",
            ),
            ("case_id,input,slice,x0,y0,x1,y1\n".into(), "unknown column"),
            (
                format!("{h},mask_format\na,a,1,1,2,3,4,png\n"),
                "use nii.gz (NIfTI) or dcm",
            ),
            (
                format!("{h},official_fallback\na,a,1,1,2,3,4,sometimes\n"),
                "yes or no",
            ),
        ] {
            std::fs::write(&csv, &body).unwrap();
            let e = read_cases(&csv).unwrap_err().to_string();
            assert!(e.contains(needle), "{body:?}: {e}");
            assert_eq!(e.matches("cohort case").count(), 1, "said once: {e}");
        }
    }
}
