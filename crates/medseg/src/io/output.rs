//! Writing outputs without losing data: every destination is checked before anything is
//! computed or written (its folder exists, it is not an input, no two outputs share a path),
//! each file is written to a temporary name beside it, and all of a run's files are renamed into
//! place together at the end — or none, if any write failed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::{Error, Result};

fn refuse(path: &Path, reason: impl Into<String>) -> Error {
    Error::Output {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// What a path names once written: the file itself when it exists (links resolved), else its
/// canonical folder joined with its name.
pub(crate) fn identity(path: &Path) -> Option<PathBuf> {
    if let Ok(p) = path.canonicalize() {
        return Some(p);
    }
    let dir = folder(path).canonicalize().ok()?;
    Some(dir.join(path.file_name()?))
}

fn folder(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// A set of outputs written together. Destinations are [`plan`](Outputs::plan)ned first (all
/// checks, nothing written), then [`stage`](Outputs::stage)d to temporary files, then
/// [`commit`](Outputs::commit)ted. Dropped before the commit, it removes what it staged.
#[derive(Debug, Default)]
pub struct Outputs {
    inputs: Vec<PathBuf>,
    planned: Vec<(PathBuf, PathBuf)>,
    staged: Vec<(PathBuf, PathBuf)>,
}

impl Outputs {
    /// Outputs of a run that reads `inputs` (never written over).
    pub fn new<P: AsRef<Path>>(inputs: &[P]) -> Self {
        Self {
            inputs: inputs.iter().filter_map(|p| identity(p.as_ref())).collect(),
            planned: Vec::new(),
            staged: Vec::new(),
        }
    }

    /// Check a destination: its folder exists, it is not a folder, not an input, and no other
    /// output of this set has the same path.
    pub fn plan(&mut self, dest: &Path) -> Result<()> {
        let dir = folder(dest);
        if !dir.is_dir() {
            return Err(refuse(
                dest,
                format!("the output directory {} does not exist", dir.display()),
            ));
        }
        if dest.is_dir() || dest.file_name().is_none() {
            return Err(refuse(dest, "is a directory, not a file path"));
        }
        check_name_length(dest)?;
        let id = identity(dest).ok_or_else(|| refuse(dest, "cannot resolve the path"))?;
        if self.inputs.contains(&id) {
            return Err(refuse(dest, "refusing to overwrite an input"));
        }
        if let Some((other, _)) = self.planned.iter().find(|(_, i)| *i == id) {
            return Err(refuse(
                dest,
                format!("the same file as another output ({})", other.display()),
            ));
        }
        self.planned.push((dest.to_path_buf(), id));
        Ok(())
    }

    /// Write a planned destination's content to a temporary file beside it. The writer gets
    /// the temporary path, whose name ends with the destination's whole file name (writers
    /// that choose a format by extension see the same one).
    pub fn stage(&mut self, dest: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
        if !self.planned.iter().any(|(d, _)| d == dest) {
            self.plan(dest)?;
        }
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let name = dest.file_name().unwrap_or_default().to_string_lossy();
        let tmp = folder(dest).join(format!(
            "{TEMP_PREFIX}{}-{}.tmp.{name}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        if let Err(e) = write(&tmp) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        self.staged.push((tmp, dest.to_path_buf()));
        Ok(())
    }

    /// Move every staged file into place.
    pub fn commit(mut self) -> Result<()> {
        let staged = std::mem::take(&mut self.staged);
        let mut left = staged.iter();
        for (tmp, dest) in left.by_ref() {
            if let Err(e) = std::fs::rename(tmp, dest) {
                let _ = std::fs::remove_file(tmp);
                for (t, _) in left {
                    let _ = std::fs::remove_file(t);
                }
                return Err(Error::io(dest, e));
            }
        }
        Ok(())
    }
}

impl Drop for Outputs {
    fn drop(&mut self) {
        for (tmp, _) in &self.staged {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// How every staged file's name starts: `.medseg-<pid>-<n>.tmp.<destination name>`.
const TEMP_PREFIX: &str = ".medseg-";
/// The longest temporary prefix: `.medseg-` + a pid + `-` + a counter + `.tmp.`.
const TEMP_OVERHEAD: usize = TEMP_PREFIX.len() + 10 + 1 + 20 + 5;
/// File names longer than this (bytes) are refused by common file systems.
const NAME_MAX: usize = 255;

/// A destination whose temporary name would not fit in a file name is refused before any work
/// (else the write fails after the computation, with the OS's "file name too long").
fn check_name_length(dest: &Path) -> Result<()> {
    let n = dest.file_name().map_or(0, |n| n.len());
    if n + TEMP_OVERHEAD > NAME_MAX {
        return Err(refuse(
            dest,
            format!(
                "the file name is {n} bytes; with medseg's temporary prefix it would exceed the \
                 {NAME_MAX}-byte limit of file names (use at most {} bytes)",
                NAME_MAX - TEMP_OVERHEAD
            ),
        ));
    }
    Ok(())
}

/// Remove the temporary files that processes which no longer run left in `dir` (a `kill -9`
/// between staging and commit); returns how many. Files of running processes are kept. Only
/// where `/proc` tells which processes run (Linux); elsewhere nothing is removed.
pub fn clean_stale_temps(dir: &Path) -> usize {
    let proc = Path::new("/proc/self");
    if !proc.exists() {
        return 0;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = temp_owner(&name) else {
            continue;
        };
        let alive = pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists();
        let is_file = e.file_type().is_ok_and(|t| t.is_file());
        if !alive && is_file && std::fs::remove_file(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// The pid in a temporary file's name (`.medseg-<pid>-<n>.tmp.<name>`).
fn temp_owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(TEMP_PREFIX)?;
    let (pid, rest) = rest.split_once('-')?;
    let (n, _) = rest.split_once(".tmp.")?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

/// Refuse a path whose extension is not one of `exts` (lower case, with the dot).
pub fn check_extension(dest: &Path, exts: &[&str]) -> Result<()> {
    let name = dest.to_string_lossy().to_ascii_lowercase();
    if exts.iter().any(|e| name.ends_with(e)) {
        Ok(())
    } else {
        Err(refuse(dest, format!("use one of {}", exts.join(", "))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_or_nothing() {
        let dir = std::env::temp_dir().join(format!("medseg-out-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a.txt"), dir.join("b.txt"));
        std::fs::write(&a, "old").unwrap();
        let mut out = Outputs::new(&[dir.join("in.txt")]);
        out.plan(&a).unwrap();
        out.plan(&b).unwrap();
        out.stage(&a, |p| {
            std::fs::write(p, "new").map_err(|e| Error::io(p, e))
        })
        .unwrap();
        let failed = out.stage(&b, |_| Err(Error::InvalidImage("boom".into())));
        assert!(failed.is_err());
        drop(out);
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "old");
        assert!(!b.exists());
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 1, "temporary files left: {left:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn long_names_are_refused_and_stale_temps_of_dead_processes_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut out = Outputs::new::<&Path>(&[]);
        let long = dir.path().join(format!("{}.nii.gz", "a".repeat(240)));
        let e = out.plan(&long).unwrap_err().to_string();
        assert!(e.contains("limit of file names"), "{e}");
        out.plan(&dir.path().join(format!("{}.nii.gz", "a".repeat(200))))
            .unwrap();
        // pid 0 never names a user process; our own pid is running.
        let dead = dir.path().join(".medseg-0-3.tmp.case.nii.gz");
        let ours = dir
            .path()
            .join(format!(".medseg-{}-0.tmp.x.nii.gz", std::process::id()));
        let other = dir.path().join(".medseg-notes.txt");
        for p in [&dead, &ours, &other] {
            std::fs::write(p, "x").unwrap();
        }
        if Path::new("/proc/self").exists() {
            assert_eq!(clean_stale_temps(dir.path()), 1);
            assert!(!dead.exists());
        } else {
            eprintln!("no /proc here: stale temporary files are left (nothing to tell the dead)");
        }
        assert!(ours.exists() && other.exists());
    }

    #[test]
    fn destinations_are_checked_before_writing() {
        let dir = std::env::temp_dir().join(format!("medseg-plan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let input = dir.join("in.nii");
        std::fs::write(&input, "scan").unwrap();
        let mut out = Outputs::new(&[&input]);
        let e = out.plan(&dir.join("./in.nii")).unwrap_err().to_string();
        assert!(e.contains("refusing to overwrite an input"), "{e}");
        out.plan(&dir.join("o.npy")).unwrap();
        let e = out.plan(&dir.join("sub/../o.npy")).unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
        let e = out.plan(&dir.join("o.npy")).unwrap_err().to_string();
        assert!(e.contains("the same file as another output"), "{e}");
        let e = out
            .plan(&dir.join("missing/x.png"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("output directory"), "{e}");
        assert_eq!(std::fs::read_to_string(&input).unwrap(), "scan");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
