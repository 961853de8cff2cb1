//! `medseg batch cases.csv --output-dir DIR`: a cohort, case after case (see
//! `medseg::cohort`: the plan, what counts as done, results.csv). Finished cases of an earlier
//! run with the same input, prompt and options are skipped, changed ones redone (with the
//! reason on stderr); a failed case is recorded and the batch goes on; the exit status says
//! whether every case succeeded.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use medseg::cohort::{self, Case, CaseResult, Todo};
use medseg::{ModelFamily, Precision, Segmenter};

/// The models a batch uses, each loaded on first need (a load error is kept and given to
/// every case of that model).
struct Models {
    default: ModelFamily,
    weights: Option<PathBuf>,
    precision: Precision,
    loaded: HashMap<ModelFamily, std::result::Result<Segmenter, String>>,
}

impl Models {
    fn get(&mut self, family: ModelFamily) -> std::result::Result<&Segmenter, String> {
        let weights = (family == self.default)
            .then_some(self.weights.as_deref())
            .flatten();
        self.loaded
            .entry(family)
            .or_insert_with(|| {
                crate::load_segmenter(family, weights, self.precision).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

pub fn run(
    cases_file: &Path,
    out_dir: &Path,
    model: ModelFamily,
    weights: Option<&Path>,
    precision: Precision,
    mask_format: Option<medseg::io::mask::MaskFormat>,
) -> Result<()> {
    let mut cases =
        cohort::read_cases(cases_file).with_context(|| cases_file.display().to_string())?;
    for c in cases.iter_mut().filter(|c| c.mask_format.is_none()) {
        c.mask_format = mask_format;
    }
    let settings = cohort::Settings {
        model,
        weights: weights.map(Path::to_path_buf),
        precision,
    };
    let mut batch = cohort::Batch::open(cases, out_dir, Some(cases_file), &settings)?;
    let mut models = Models {
        default: model,
        weights: settings.weights.clone(),
        precision,
        loaded: HashMap::new(),
    };
    let plan: Vec<(Case, Todo)> = batch.plan().map(|(c, t)| (c.clone(), t.clone())).collect();
    let bar = indicatif::ProgressBar::new(plan.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("cases {pos}/{len} [{elapsed_precise}] {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut results = Vec::with_capacity(plan.len());
    let mut skipped = 0;
    for (case, todo) in &plan {
        bar.set_message(case.id.clone());
        let r = match todo {
            Todo::Done(r) => {
                skipped += 1;
                r.clone()
            }
            Todo::Refused(r) => r.clone(),
            Todo::Run(why) => {
                if let Some(why) = why {
                    bar.suspend(|| eprintln!("medseg: case {} is redone: {why}", case.id));
                }
                run_one(&mut models, case, out_dir)
            }
        };
        if let Some(e) = &r.error {
            bar.suspend(|| eprintln!("medseg: case {} failed: {e}", r.id));
        }
        if !matches!(todo, Todo::Done(_)) {
            batch.record(&r)?;
        }
        results.push(r);
        bar.inc(1);
    }
    bar.finish_and_clear();
    batch.finish()?;
    summarise(&results, skipped, out_dir)
}

fn run_one(models: &mut Models, case: &Case, out_dir: &Path) -> CaseResult {
    match models.get(case.request.model.unwrap_or(models.default)) {
        Ok(seg) => cohort::run_case(seg, case, out_dir),
        Err(e) => CaseResult::failed(&case.id, e),
    }
}

fn summarise(results: &[CaseResult], skipped: usize, out_dir: &Path) -> Result<()> {
    let failed = results.iter().filter(|r| !r.ok).count();
    println!(
        "{} cases: {} ok ({skipped} done before), {failed} failed -> {}",
        results.len(),
        results.len() - failed,
        out_dir.join(cohort::RESULTS).display()
    );
    if failed > 0 {
        bail!(
            "{failed} of {} cases failed (see results.csv)",
            results.len()
        );
    }
    Ok(())
}
