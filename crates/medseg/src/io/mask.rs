//! Masks out: one writer for every front-end (CLI, cohorts, Python), the format chosen by the
//! destination's extension, the file written through [`Outputs`] (checked first, staged,
//! renamed with the run's other outputs).

use std::path::Path;

use super::output::{check_extension, Outputs};
pub use super::segment::MaskInfo;
use crate::error::{Error, Result};
use crate::volume::Volume;

/// How a mask is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskFormat {
    /// NIfTI-1 (`.nii`, `.nii.gz`), uint8 0/1 on the volume's grid and affine.
    Nifti,
    /// NumPy `.npy`, uint8 0/1, shape (Z, Y, X).
    Npy,
    /// An 8-bit grey PNG (255 inside) of one slice (the key slice of a volume).
    Png,
    /// A DICOM Segmentation object (`.dcm`) referencing the DICOM images the volume was read
    /// from ([`super::seg`]); refused for any other input.
    Seg,
}

impl MaskFormat {
    /// The extensions a mask may have.
    pub const EXTENSIONS: &'static [&'static str] = &[".png", ".nii", ".nii.gz", ".npy", ".dcm"];

    /// The format a destination's extension names (any case); other extensions are refused.
    pub fn from_path(dest: &Path) -> Result<Self> {
        check_extension(dest, Self::EXTENSIONS)?;
        let name = dest.to_string_lossy().to_ascii_lowercase();
        Ok(if name.ends_with(".png") {
            MaskFormat::Png
        } else if name.ends_with(".npy") {
            MaskFormat::Npy
        } else if name.ends_with(".dcm") {
            MaskFormat::Seg
        } else {
            MaskFormat::Nifti
        })
    }
}

/// Refuse, before anything is computed, a destination whose format cannot hold a mask of `vol`
/// (a DICOM SEG for an input that is not DICOM, or whose slices were resampled).
pub fn check_format(dest: &Path, vol: &Volume) -> Result<()> {
    match MaskFormat::from_path(dest)? {
        #[cfg(feature = "dicom")]
        MaskFormat::Seg => super::seg::referenceable(vol, dest).map(|_| ()),
        #[cfg(not(feature = "dicom"))]
        MaskFormat::Seg => {
            let _ = vol;
            Err(no_dicom())
        }
        _ => Ok(()),
    }
}

#[cfg(not(feature = "dicom"))]
fn no_dicom() -> Error {
    Error::InvalidImage("DICOM SEG output needs medseg built with the dicom feature".into())
}

/// Stage `mask` (Z × Y × X on `vol`'s grid) at `dest` in the format its extension names; a PNG
/// holds slice `key`; a DICOM SEG describes the mask as `info` says. Nothing is in place before
/// `outputs` is committed.
pub fn stage_mask(
    outputs: &mut Outputs,
    dest: &Path,
    mask: &[bool],
    vol: &Volume,
    key: usize,
    info: &MaskInfo,
) -> Result<()> {
    let [nz, ny, nx] = vol.dims;
    if mask.len() != nz * ny * nx || key >= nz.max(1) {
        return Err(Error::InvalidImage(format!(
            "a mask of {} values (slice {key}) for a {nx}x{ny}x{nz} volume",
            mask.len()
        )));
    }
    match MaskFormat::from_path(dest)? {
        #[cfg(feature = "nifti")]
        MaskFormat::Nifti => outputs.stage(dest, |p| super::nifti::write_mask(p, mask, vol)),
        #[cfg(not(feature = "nifti"))]
        MaskFormat::Nifti => Err(Error::InvalidImage(
            "NIfTI output needs medseg built with the nifti feature".into(),
        )),
        MaskFormat::Npy => outputs.stage(dest, |p| write_npy_u8(p, mask, [nz, ny, nx])),
        #[cfg(feature = "dicom")]
        MaskFormat::Seg => {
            super::seg::referenceable(vol, dest)?;
            outputs.stage(dest, |p| super::seg::write_mask_seg(p, mask, vol, info))
        }
        #[cfg(not(feature = "dicom"))]
        MaskFormat::Seg => {
            let _ = info;
            Err(no_dicom())
        }
        MaskFormat::Png => {
            let n = ny * nx;
            let slice = &mask[key * n..(key + 1) * n];
            outputs.stage(dest, |p| super::write_mask_png(p, slice, nx, ny))
        }
    }
}

/// Stage a label volume (`0` background, object `k` of `objects` has value `objects[k]`,
/// 1..=255) at `dest`: NIfTI and `.npy` hold the values, a DICOM SEG one segment per object
/// (`info`'s segment, its label numbered), a PNG the key slice's union.
pub fn stage_labels(
    outputs: &mut Outputs,
    dest: &Path,
    labels: &[u8],
    objects: &[u8],
    vol: &Volume,
    key: usize,
    info: &MaskInfo,
) -> Result<()> {
    let [nz, ny, nx] = vol.dims;
    if labels.len() != nz * ny * nx {
        return Err(Error::InvalidImage(format!(
            "a label volume of {} values for a {nx}x{ny}x{nz} volume",
            labels.len()
        )));
    }
    match MaskFormat::from_path(dest)? {
        #[cfg(feature = "nifti")]
        MaskFormat::Nifti => outputs.stage(dest, |p| super::nifti::write_labels(p, labels, vol)),
        MaskFormat::Npy => outputs.stage(dest, |p| write_npy_labels(p, labels, [nz, ny, nx])),
        #[cfg(feature = "dicom")]
        MaskFormat::Seg => {
            super::seg::referenceable(vol, dest)?;
            let masks: Vec<Vec<bool>> = objects
                .iter()
                .map(|&o| labels.iter().map(|&l| l == o).collect())
                .collect();
            let segments: Vec<crate::io::segment::Segment> = objects
                .iter()
                .map(|o| crate::io::segment::Segment {
                    label: format!("{} {o}", info.segment.label),
                    ..info.segment.clone()
                })
                .collect();
            let pairs: Vec<(&crate::io::segment::Segment, &[bool])> = segments
                .iter()
                .zip(&masks)
                .map(|(s, m)| (s, m.as_slice()))
                .collect();
            outputs.stage(dest, |p| {
                super::seg::write_seg(p, &pairs, vol, info.all_frames)
            })
        }
        _ => {
            let _ = objects;
            let union: Vec<bool> = labels.iter().map(|&l| l > 0).collect();
            stage_mask(outputs, dest, &union, vol, key, info)
        }
    }
}

fn write_npy_labels(path: &Path, labels: &[u8], dims: [usize; 3]) -> Result<()> {
    let arr = ndarray::Array3::from_shape_vec(dims, labels.to_vec())
        .map_err(|e| Error::InvalidImage(e.to_string()))?;
    ndarray_npy::write_npy(path, &arr).map_err(|e| Error::ImageCodec {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Write `mask` at `dest` alone, atomically, never over `vol`'s input files (`inputs`).
pub fn write_mask<P: AsRef<Path>>(
    dest: &Path,
    mask: &[bool],
    vol: &Volume,
    key: usize,
    inputs: &[P],
    info: &MaskInfo,
) -> Result<()> {
    let mut outputs = Outputs::new(inputs);
    outputs.plan(dest)?;
    stage_mask(&mut outputs, dest, mask, vol, key, info)?;
    outputs.commit()
}

fn write_npy_u8(path: &Path, mask: &[bool], dims: [usize; 3]) -> Result<()> {
    let data: Vec<u8> = mask.iter().map(|&m| u8::from(m)).collect();
    write_npy_labels(path, &data, dims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Modality;

    #[test]
    fn the_extension_names_the_format_and_every_format_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let vol = Volume::new(vec![0.0; 24], [2, 3, 4], [1.0; 3], Modality::Mr).unwrap();
        let mask: Vec<bool> = (0..24).map(|i| i % 5 == 0).collect();
        for (name, format) in [
            ("m.PNG", MaskFormat::Png),
            ("m.npy", MaskFormat::Npy),
            ("m.nii.gz", MaskFormat::Nifti),
        ] {
            let dest = dir.path().join(name);
            assert_eq!(MaskFormat::from_path(&dest).unwrap(), format);
            write_mask::<&Path>(&dest, &mask, &vol, 1, &[], &MaskInfo::default()).unwrap();
            assert!(dest.is_file(), "{name}");
        }
        let (back, shape) = {
            let a: ndarray::Array3<u8> = ndarray_npy::read_npy(dir.path().join("m.npy")).unwrap();
            (
                a.iter().map(|&v| v == 1).collect::<Vec<_>>(),
                a.shape().to_vec(),
            )
        };
        assert_eq!((back, shape), (mask.clone(), vec![2, 3, 4]));
        let png = crate::io::read_image_volume(dir.path().join("m.PNG")).unwrap();
        let key: Vec<bool> = png.data.iter().map(|&v| v > 0.0).collect();
        assert_eq!(key, mask[12..24]);
        let e = MaskFormat::from_path(&dir.path().join("m.tif")).unwrap_err();
        assert!(e.to_string().contains("use one of"), "{e}");
        let e = write_mask::<&Path>(
            &dir.path().join("x.npy"),
            &mask[1..],
            &vol,
            0,
            &[],
            &MaskInfo::default(),
        );
        assert!(e.unwrap_err().to_string().contains("23 values"));
        // A SEG references DICOM images: an array volume has none.
        let dcm = dir.path().join("m.dcm");
        assert_eq!(MaskFormat::from_path(&dcm).unwrap(), MaskFormat::Seg);
        let e = write_mask::<&Path>(&dcm, &mask, &vol, 0, &[], &MaskInfo::default()).unwrap_err();
        assert!(e.to_string().contains("the input is not DICOM"), "{e}");
        assert!(!dcm.exists());
    }
}
