//! What the CLI's test files share: the fixtures and the MedSAM2 parity test's template
//! slices as a NIfTI volume.

use std::path::{Path, PathBuf};

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

pub fn golden(name: &str) -> ndarray_npy::NpzReader<std::fs::File> {
    let f = std::fs::File::open(fixtures().join("golden").join(name)).unwrap();
    ndarray_npy::NpzReader::new(f).unwrap()
}

/// The 14 template slices of `medsam2_volume.npz` written as `dir/template.nii.gz` (values
/// `v + 0.5`, so the window 127.5,255 gives back the bytes); its path and the volume.
pub fn template(dir: &Path) -> (PathBuf, medseg::Volume) {
    let slices: ndarray::ArrayD<u8> = golden("medsam2_volume.npz").by_name("slices_u8").unwrap();
    let dims = [slices.shape()[0], slices.shape()[1], slices.shape()[2]];
    let data = slices.iter().map(|&v| f32::from(v) + 0.5).collect();
    let vol = medseg::Volume::new(data, dims, [2.0, 1.0, 1.0], medseg::Modality::Mr).unwrap();
    let path = dir.join("template.nii.gz");
    medseg::io::nifti::write_volume(&path, &vol).unwrap();
    (path, vol)
}
