//! Cohorts: many volumes, each with a key slice and a box, segmented one after another into one
//! output folder — one mask per case (`<case_id>.nii.gz`, or `<case_id>.dcm` a DICOM SEG with
//! `mask_format` `dcm`; written atomically) and one
//! `results.csv` that keeps every run's cases ([`results`]). A case that fails (an unreadable
//! file, a box outside its image) is recorded as failed with its error and the batch goes on.
//!
//! A batch is planned whole before any case runs ([`Batch::open`]): no mask may land on any
//! case's input or on the cases file, and `results.csv` may be neither. A re-run skips a case
//! only when it finished and its input (path, size, modification time), prompt, model,
//! window, precision and weights (SHA-256) are the ones recorded; otherwise it is redone,
//! with the reason.
//!
//! The cases file is CSV with a header: `case_id,input,key_slice,x0,y0,x1,y1[,model,window,adc,mask_format]` and the propagation options
//! `modality,max_drift,official_fallback,largest_component,stop_after_empty`
//! ([`crate::propagate::RequestOptions`]), all through [`crate::SegmentRequest::parse`].
//! `input` is a NIfTI file, a DICOM file or a DICOM series folder (relative paths are taken
//! from the CSV's folder); `key_slice` may be empty (the middle slice); `model` is a model name
//! (empty: the batch's model); `window` a CT window name or `L,W`.
//! Used by `medseg batch` and Python's `medseg.batch` (locally or on Dask workers).

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::io::output::Outputs;
use crate::prompt::BoxPolicy;
use crate::request::SegmentRequest;
use crate::segmenter::Segmenter;

mod batch;
mod case;
pub mod results;

pub use batch::{Batch, Settings, Todo};
pub use case::{input_stamp, mask_path, parse_mask_format, read_cases, Case};
pub use results::{
    append_results, merge_results, read_results, write_results, CaseResult, RunKey, RESULTS,
};

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
        Ok((stats, mask, adc)) => CaseResult {
            id: case.id.clone(),
            ok: true,
            volume_ml: stats.volume_ml,
            voxels: stats.voxels,
            slice_range: stats.slice_range,
            seconds: 0.0,
            mask: Some(mask),
            error: None,
            adc_mean: adc.as_ref().and_then(|a| a.mean),
            core_ml: adc.as_ref().and_then(|a| a.core_ml),
            run: RunKey::default(),
        },
        Err(e) => CaseResult::failed(&case.id, e.to_string()),
    };
    r.run = run;
    r.seconds = t.elapsed().as_secs_f64();
    r
}

/// A case's lesion statistics, mask file and stroke readout (with an ADC map).
type Segmented = (
    crate::volume::LesionStats,
    PathBuf,
    Option<crate::stroke::AdcReadout>,
);

fn segment_case(seg: &Segmenter, case: &Case, out_dir: &Path) -> Result<Segmented> {
    if let Some(m) = case.request.model.filter(|m| *m != seg.family()) {
        return Err(Error::InvalidOption(format!(
            "case {} asks for {m}, this segmenter is {}",
            case.id,
            seg.family()
        )));
    }
    let dest = mask_path(out_dir, &case.id, case.mask_format);
    let mut outputs = Outputs::new(&[&case.input]);
    outputs.plan(&dest)?;
    let vol = crate::io::read_volume(&case.input)?;
    // A SEG needs DICOM source slices; the ADC map its grid: both checked before the model runs.
    crate::io::mask::check_format(&dest, &vol)?;
    let adc = match &case.adc {
        Some(p) => {
            let map = crate::io::read_volume(p)?;
            crate::stroke::check_same_grid(&map, &vol)?;
            Some(map)
        }
        None => None,
    };
    // A case's box was reviewed into a file: one past the edge is refused, not clipped.
    let request = SegmentRequest {
        box_policy: Some(BoxPolicy::Refuse),
        ..case.request.clone()
    };
    let (opts, _) = request.volume()?.options(&vol)?;
    let res = seg.segment_volume(&vol, &opts, &mut |_, _| {})?;
    let opts_adc = crate::stroke::AdcOptions::default();
    let readout = adc
        .map(|map| crate::stroke::adc_readout(&res.mask, &vol, &map, &opts_adc))
        .transpose()?;
    crate::io::mask::stage_mask(
        &mut outputs,
        &dest,
        &res.mask,
        &vol,
        opts.key_slice,
        &crate::io::mask::MaskInfo {
            segment: crate::io::segment::Segment::by_model(
                seg.family().name(),
                seg.weights_sha256().unwrap_or_default(),
            ),
            all_frames: false,
        },
    )?;
    outputs.commit()?;
    Ok((res.stats, dest, readout))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::family::ModelFamily;
    use crate::precision::Precision;
    use crate::volume::Intensity;

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
            request: SegmentRequest {
                bbox: Some([1.0, 2.0, 30.0, 40.0]),
                ..SegmentRequest::default()
            },
            adc: None,
            mask_format: None,
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
        let cases = vec![
            case("lac", &d.join("mca.nii.gz")),
            case("x2", &d.join("lac.nii.gz")),
        ];
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
        std::fs::write(mask_path(&out, "a", None), "mask").unwrap();
        let ok = CaseResult {
            ok: true,
            error: None,
            mask: Some(mask_path(&out, "a", None)),
            run: key,
            ..CaseResult::failed("a", String::new())
        };
        write_results(&out, std::slice::from_ref(&ok)).unwrap();
        let todo = |c: &Case, s: &Settings| {
            let b = Batch::open(vec![c.clone()], &out, None, s).unwrap();
            let todo = b.plan().next().unwrap().1.clone();
            todo
        };
        assert_eq!(todo(&c, &s), Todo::Done(ok));
        let mut moved = c.clone();
        moved.request.bbox = Some([5.0, 2.0, 30.0, 40.0]);
        let why = |t: Todo| match t {
            Todo::Run(Some(w)) => w,
            other => panic!("expected a redo: {other:?}"),
        };
        assert!(why(todo(&moved, &s)).starts_with("box changed (1 2 30 40 -> 5 2 30 40)"));
        let mut windowed = c.clone();
        windowed.request.window = Some(Intensity::MinMax);
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
        std::fs::remove_file(mask_path(&out, "a", None)).unwrap();
        assert_eq!(why(todo(&c, &s)), "its mask is gone");
    }

    #[test]
    fn a_series_folder_is_stamped_by_its_dicom_files_only_and_ids_are_unique() {
        let dir = tempfile::tempdir().unwrap();
        let series = dir.path().join("series");
        std::fs::create_dir(&series).unwrap();
        std::fs::write(series.join("1.dcm"), "slice").unwrap();
        let before = input_stamp(&series).unwrap();
        assert!(before.starts_with("1 DICOM files, 5 bytes"), "{before}");
        // A mask written into the series folder (output folder = input folder) changes nothing.
        std::fs::write(series.join("a.nii.gz"), "mask").unwrap();
        assert_eq!(input_stamp(&series).unwrap(), before);
        std::fs::write(series.join("2.dcm"), "slice").unwrap();
        assert_ne!(input_stamp(&series).unwrap(), before);
        let cases = vec![case("Sub-1", &series), case("sub-1", &series)];
        let e = Batch::open(cases, &dir.path().join("out"), None, &settings()).unwrap_err();
        assert!(
            e.to_string().contains("Sub-1 and sub-1 name one mask file"),
            "{e}"
        );
    }

    fn weights_sha() -> &'static str {
        crate::weights::lite_medsam::SHA256
    }
}
