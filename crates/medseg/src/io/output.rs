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
fn identity(path: &Path) -> Option<PathBuf> {
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
            ".medseg-{}-{}.tmp.{name}",
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
