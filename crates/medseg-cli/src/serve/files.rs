//! Which files the viewer may open: only under the folders (or files) given on the command
//! line, compared after resolving symlinks and `..`.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use medseg::io::{self, InputKind};

/// The given paths, resolved; each must exist (clap asks for at least one, or `--review`).
pub fn roots(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    paths
        .iter()
        .map(|p| {
            p.canonicalize()
                .map_err(|e| anyhow!("{}: {e}", p.display()))
        })
        .collect()
}

/// `requested` resolved, if it lies under one of `roots`.
pub fn allowed(roots: &[PathBuf], requested: &str) -> Option<PathBuf> {
    let p = Path::new(requested).canonicalize().ok()?;
    roots.iter().any(|r| p.starts_with(r)).then_some(p)
}

/// Openable volumes under `roots` (NIfTI files, DICOM series folders, DICOM files, PNG/JPEG
/// pictures), up to three folders deep, sorted; only those that resolve inside `roots`.
pub fn list(roots: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for r in roots {
        walk(r, 0, &mut out);
    }
    // A symlink under a served folder that leads out of them is not listed (nor opened).
    out.retain(|p| p.to_str().and_then(|s| allowed(roots, s)).is_some());
    out.sort();
    out.dedup();
    out
}

fn walk(p: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    if p.is_file() {
        if openable_file(p) {
            out.push(p.to_path_buf());
        }
        return;
    }
    let Ok(entries) = std::fs::read_dir(p) else {
        return;
    };
    let mut dicom_files = 0;
    let mut subdirs = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            subdirs.push(path);
        } else if io::input_kind(&path) == InputKind::Dicom {
            dicom_files += 1;
        } else if openable_file(&path) {
            out.push(path);
        }
    }
    if dicom_files > 1 {
        out.push(p.to_path_buf());
    }
    if depth < 3 {
        subdirs.iter().for_each(|d| walk(d, depth + 1, out));
    }
}

fn openable_file(p: &Path) -> bool {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if name.contains(".medseg.") {
        return false; // the viewer's own saved masks
    }
    let picture = [".png", ".jpg", ".jpeg"].iter().any(|e| name.ends_with(e));
    picture || matches!(io::input_kind(p), InputKind::Nifti | InputKind::Dicom)
}
