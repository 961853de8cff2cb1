//! A batch: the whole cohort planned before any case runs, then each case's result recorded
//! as it comes (the CLI runs the cases here; Python runs them here or on Dask workers).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::case::{mask_path, same_mask_file, Case};
use super::results::{self, CaseResult, RunKey, RESULTS};
use crate::error::{Error, Result};
use crate::family::{DefaultWeights, ModelFamily};
use crate::io::output::{self, Outputs};
use crate::precision::Precision;

/// How merged results are kept fresh while a batch runs (and always at its end).
const MERGE_EVERY: Duration = Duration::from_secs(2);

/// What a batch runs its cases with.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The model of cases whose `model` is empty.
    pub model: ModelFamily,
    /// That model's checkpoint (`None`: its default weights).
    pub weights: Option<PathBuf>,
    /// The precision asked for (what runs: [`crate::segmenter::precision_on`]).
    pub precision: Precision,
}

/// What a batch does with a case.
#[derive(Debug, Clone, PartialEq)]
pub enum Todo {
    /// Segment it; `Some(why)` when an earlier run's result is redone.
    Run(Option<String>),
    /// Finished before with the same input, prompt, model and options: this is its result.
    Done(CaseResult),
    /// Not run: its mask would overwrite an input or the cases file (the failed result).
    Refused(CaseResult),
}

/// A cohort run into one output folder.
#[derive(Debug)]
pub struct Batch {
    out_dir: PathBuf,
    cases: Vec<Case>,
    todo: Vec<Todo>,
    last_merge: Instant,
}

impl Batch {
    /// Plan `cases` into `out_dir` (created if missing): stale temporary files of dead runs are
    /// removed; `results.csv` must not be the cases file (`cases_file`) or an input (an
    /// error); each case whose mask would overwrite an input or the cases file is refused;
    /// each case finished before with the same [`RunKey`] is done.
    pub fn open(
        cases: Vec<Case>,
        out_dir: &Path,
        cases_file: Option<&Path>,
        settings: &Settings,
    ) -> Result<Self> {
        std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
        output::clean_stale_temps(out_dir);
        let refused = plan_outputs(&cases, out_dir, cases_file)?;
        let previous = results::read_results(out_dir)?;
        let mut hashes = WeightsHashes::new(settings);
        let precision = settings.effective_precision();
        let todo = cases
            .iter()
            .zip(refused)
            .map(|(case, refusal)| {
                let family = case.request.model.unwrap_or(settings.model);
                let key = case.run_key(family, precision, &hashes.get(family));
                match refusal {
                    Some(why) => Todo::Refused(CaseResult {
                        run: key,
                        ..CaseResult::failed(&case.id, why)
                    }),
                    None => decide(previous.iter().find(|r| r.id == case.id), key),
                }
            })
            .collect();
        Ok(Self {
            out_dir: out_dir.to_path_buf(),
            cases,
            todo,
            last_merge: Instant::now(),
        })
    }

    /// The cases with what this batch does with each, in the cases' order.
    pub fn plan(&self) -> impl Iterator<Item = (&Case, &Todo)> {
        self.cases.iter().zip(&self.todo)
    }

    /// Record a case's result: appended to the journal at once, merged into `results.csv`
    /// every few seconds (and by [`Batch::finish`]).
    pub fn record(&mut self, r: &CaseResult) -> Result<()> {
        results::append_results(&self.out_dir, std::slice::from_ref(r))?;
        if self.last_merge.elapsed() >= MERGE_EVERY {
            results::merge_results(&self.out_dir)?;
            self.last_merge = Instant::now();
        }
        Ok(())
    }

    /// Merge what was recorded into `results.csv`.
    pub fn finish(self) -> Result<()> {
        results::merge_results(&self.out_dir)
    }
}

impl Settings {
    /// The precision that runs on this machine's CPU for the one asked for.
    pub fn effective_precision(&self) -> Precision {
        crate::segmenter::precision_on(self.precision, &crate::segmenter::cpu())
    }
}

/// The SHA-256 of each model's weights, hashed once per batch (empty where the model has no
/// weights to load: such cases fail when they run, with the loader's error).
struct WeightsHashes<'a> {
    settings: &'a Settings,
    known: HashMap<ModelFamily, String>,
}

impl<'a> WeightsHashes<'a> {
    fn new(settings: &'a Settings) -> Self {
        Self {
            settings,
            known: HashMap::new(),
        }
    }

    fn get(&mut self, family: ModelFamily) -> String {
        let s = self.settings;
        let explicit = (family == s.model)
            .then_some(s.weights.as_deref())
            .flatten();
        self.known
            .entry(family)
            .or_insert_with(|| match explicit {
                Some(p) => crate::weights::sha256_file(p).unwrap_or_default(),
                None => match family.spec().default_weights {
                    DefaultWeights::LiteMedSamCache => {
                        crate::weights::lite_medsam::SHA256.to_string()
                    }
                    DefaultWeights::None(_) => String::new(),
                },
            })
            .clone()
    }
}

/// Done when the earlier result is ok, its mask is there and it ran with `key`; else run, and
/// say why an earlier success is redone.
fn decide(previous: Option<&CaseResult>, key: RunKey) -> Todo {
    let Some(prev) = previous.filter(|p| p.ok) else {
        return Todo::Run(None);
    };
    if !prev.mask.as_ref().is_some_and(|m| m.is_file()) {
        return Todo::Run(Some("its mask is gone".into()));
    }
    if key.input_stamp.is_empty() {
        return Todo::Run(Some("its input cannot be read now".into()));
    }
    match prev.run.differs(&key) {
        Some(why) => Todo::Run(Some(why)),
        None => Todo::Done(prev.clone()),
    }
}

/// Each case's refusal (its mask would land on an input or on the cases file), checked against
/// every input of the cohort; an error when `results.csv` itself would, or when two cases share
/// an id (also one differing only in case).
fn plan_outputs(
    cases: &[Case],
    out_dir: &Path,
    cases_file: Option<&Path>,
) -> Result<Vec<Option<String>>> {
    for (i, c) in cases.iter().enumerate() {
        if let Some(why) = cases[..i].iter().find_map(|d| same_mask_file(&d.id, &c.id)) {
            return Err(Error::InvalidOption(format!("cohort case: {why}")));
        }
    }
    let mut protected: Vec<(PathBuf, String)> = Vec::new();
    if let Some(f) = cases_file {
        protected.extend(output::identity(f).map(|p| (p, "the cases file".to_string())));
    }
    for c in cases {
        let what = format!("the input of case {}", c.id);
        protected.extend(output::identity(&c.input).map(|p| (p, what)));
        if let Some(adc) = &c.adc {
            let what = format!("the ADC map of case {}", c.id);
            protected.extend(output::identity(adc).map(|p| (p, what)));
        }
    }
    let clash = |dest: &Path| {
        let id = output::identity(dest)?;
        protected
            .iter()
            .find(|(p, _)| *p == id)
            .map(|(_, w)| w.clone())
    };
    let results = out_dir.join(RESULTS);
    if let Some(what) = clash(&results) {
        return Err(Error::Output {
            path: results,
            reason: format!(
                "is {what}: the batch writes its results there; choose another output folder \
                 or move the file"
            ),
        });
    }
    let mut planned = Outputs::new::<&Path>(&[]);
    Ok(cases
        .iter()
        .map(|c| {
            let mask = mask_path(out_dir, &c.id, c.mask_format);
            if let Some(what) = clash(&mask) {
                return Some(format!(
                    "output {}: would overwrite {what}; the case is not run (rename the case \
                     or the file, or choose another output folder)",
                    mask.display()
                ));
            }
            planned.plan(&mask).err().map(|e| e.to_string())
        })
        .collect())
}
